"""Balance views for a key's own account: MCPHub's /quota and credit-balance, OpenRouter's key and credits."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from gateway import services
from gateway.accounting import budgets, credits
from gateway.accounting.budget_spend import BudgetState, budget_rows, state_of
from gateway.accounting.keys import Caller, current_caller
from gateway.accounting.spending import spent_by_key_since
from gateway.accounting.streams import caps_of
from gateway.api.http import authenticated_blueprint
from gateway.api.openrouter_objects import key_object, period_starts
from gateway.config import Settings

bp = authenticated_blueprint("account", __name__)


@bp.get("/quota")
def quota() -> Response:
    """Quick balance overview (MCPHub's /quota)."""
    caller = current_caller()
    summary = credits.summarize(caller.account)
    settings = services.settings()
    reasoning_models = [model_id for model_id, model in settings.models.items() if model.reasoning]
    return jsonify({
        "username": caller.account.name,
        "balance": credits.to_credits(summary.balance),
        "remaining_quota": credits.to_credits(summary.balance - summary.reserved),
        "used_quota": credits.to_credits(summary.total_spent),
        "thinking": {
            "enabled": bool(reasoning_models),
            "default_budget": settings.billing.thinking_default_budget,
            "models": reasoning_models,
        },
    })


@bp.get("/api/v3/auth/credit-balance")
def credit_balance() -> Response:
    """Detailed balance with earning/spending totals and expiring credits (MCPHub)."""
    return jsonify(credits.credit_balance(current_caller().account))


@bp.get("/api/v1/key")
@bp.get("/api/v1/auth/key")
def current_key() -> Response:
    """OpenRouter's key object for the calling key: its limit in its period (`limit_reset`), usage overall, today,
    this week, this month, and every budget its requests answer to (`budgets`, `effective_budget`)."""
    caller = current_caller()
    key, settings, now = caller.key, services.settings(), budgets.now()
    by_period = {name: credits.to_credits(spent_by_key_since(key.id, start))
                 for name, start in period_starts(now).items()}
    states = key_budget_states(caller)
    limit = next((state for state in states if state.budget.key_limit), None)
    return jsonify({"data": key_object(
        label=f"{key.prefix}...",
        limit=credits.to_credits(key.spend_limit) if key.spend_limit is not None else None,
        usage=credits.to_credits(spent_by_key_since(key.id)),
        usage_by_period=by_period,
        is_free_tier=caller.account.tier == "free",
        rpm=key.rpm or settings.limits.rpm,
    ) | {
        "name": key.name,
        "stream_limit": stream_limit(caller, settings),
        "limit_reset": key.limit_reset,
        "limit_remaining": None if limit is None else credits.to_credits(budgets.remaining(limit.budget, limit.spent)),
        "budgets": [budget_object(state) for state in states],
        "effective_budget": effective_budget(states),
    }})


def key_budget_states(caller: Caller) -> list[BudgetState]:
    """The key's limit and the account's budgets its requests may answer to, each with its spend this period."""
    key, now = caller.key, budgets.now()
    limit = budgets.key_limit(key.account_id, key.id, key.spend_limit, key.limit_reset)
    mine = [budget for budget in budget_rows([key.account_id]) if budget.key_id in (None, key.id)]
    return [state_of(budget, now) for budget in ([limit] if limit else []) + mine]


def budget_object(state: BudgetState) -> dict[str, Any]:
    """One entry of the key object's `budgets`, as OpenRouter's KeyBudget (amounts in credits; scope `key_limit`
    for the key's own limit, else the gateway's `account`, `model` or `tag`, with its `model` and `tag`)."""
    budget = state.budget
    return {
        "scope": "key_limit" if budget.key_limit else budget.kind,
        "budget_id": None if budget.id is None else str(budget.id),
        "guardrail_id": None,
        "include_byok": False,
        "limit_usd": credits.to_credits(budget.amount),
        "spend_usd": credits.to_credits(state.spent),
        "remaining_usd": credits.to_credits(budget.amount - state.spent),
        "reset_interval": budget.period,
        "resets_at": budgets.iso_utc(state.resets_at) if state.resets_at else None,
        "model": budget.model,
        "tag": budget.tag,
    }


def effective_budget(states: list[BudgetState]) -> dict[str, Any] | None:
    """The budget that blocks the key's requests first: of those every request answers to (the key's limit, the
    account's own), an exhausted one, else the one with the least left; None when none applies to every request."""
    general = [state for state in states if state.budget.model is None and state.budget.tag is None]
    if not general:
        return None
    return budget_object(min(general, key=lambda state: state.budget.amount - state.spent))


def stream_limit(caller: Caller, settings: Settings) -> dict:
    """The key's open-stream limits (a gateway extension of the key object): caps and the tenant share."""
    caps = caps_of(caller, settings)
    return {"streams": caps.key, "account_streams": caps.account, "tenant_share": settings.limits.stream_share,
            "threads_per_worker": settings.server.threads,
            "note": "open streams per worker process; null: bounded only by the tenant share of the threads"}


@bp.get("/api/v1/credits")
def openrouter_credits() -> Response:
    """OpenRouter's account credits: everything granted and everything used."""
    summary = credits.summarize(current_caller().account)
    return jsonify({"data": {
        "total_credits": credits.to_credits(summary.total_earned),
        "total_usage": credits.to_credits(summary.total_spent),
    }})
