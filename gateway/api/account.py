"""Balance views for a key's own account: MCPHub's /quota and credit-balance, OpenRouter's key and credits."""

from __future__ import annotations

from flask import Response, jsonify

from gateway import services
from gateway.accounting import credits
from gateway.accounting.keys import Caller, current_caller
from gateway.accounting.spending import spent_by_key_since
from gateway.accounting.streams import caps_of
from gateway.api.http import authenticated_blueprint
from gateway.api.openrouter_objects import key_object, period_starts
from gateway.config import Settings
from gateway.tables import utcnow

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
    """OpenRouter's key object for the calling key: its limit, and usage overall, today, this week, this month."""
    caller = current_caller()
    key, settings = caller.key, services.settings()
    by_period = {name: credits.to_credits(spent_by_key_since(key.id, start))
                 for name, start in period_starts(utcnow()).items()}
    return jsonify({"data": key_object(
        label=f"{key.prefix}...",
        limit=credits.to_credits(key.spend_limit) if key.spend_limit is not None else None,
        usage=credits.to_credits(spent_by_key_since(key.id)),
        usage_by_period=by_period,
        is_free_tier=caller.account.tier == "free",
        rpm=key.rpm or settings.limits.rpm,
    ) | {"name": key.name, "stream_limit": stream_limit(caller, settings)}})


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
