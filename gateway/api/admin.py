"""Admin API behind the admin token: keys, accounts, credits, ledgers, budgets, the deployments' routing states."""

from __future__ import annotations

import dataclasses
import datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from gateway import services
from gateway.accounting import admin_service, credits, keys
from gateway.accounting.admin_limits import MAX_CREDITS, MAX_DAYS, MAX_ID, MAX_RATE, MAX_STREAMS, Tier
from gateway.accounting.admin_service import BudgetSpec, KeySpec, Period, micro_or_none
from gateway.accounting.descriptions import describe_account, describe_entry
from gateway.accounting.guardrail_names import decode_names, encode_names
from gateway.accounting.mcp_allow_list import encode_allow_list
from gateway.api.http import json_object, parse_model
from gateway.errors import InvalidRequest
from gateway.guardrails import attachments

if TYPE_CHECKING:
    from gateway.upstream.router import DeploymentState

bp = Blueprint("admin", __name__, url_prefix="/admin")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateKey(Strict):
    """Body of POST /admin/keys."""

    name: str = Field(min_length=1, max_length=200)
    account_id: int | None = Field(None, ge=1, le=MAX_ID)
    tier: Tier = "free"
    scope: str | None = None
    rpm: int | None = Field(None, ge=1, le=MAX_RATE)
    tpm: int | None = Field(None, ge=1, le=MAX_RATE)
    spend_limit: float | None = Field(None, ge=0, le=MAX_CREDITS, description="credits this key may spend")
    max_streams: int | None = Field(None, ge=1, le=MAX_STREAMS, description="open streams, per worker process")
    credits: float | None = Field(None, ge=0, le=MAX_CREDITS, description="credits granted to the account")
    mcp_servers: list[str] | None = Field(None, description="built-in MCP servers the key may use (default: all)")
    limit_reset: Period | None = Field(None, description="the spend limit's period (UTC); null: lifetime")
    guardrails: list[str] | None = Field(None, description="names of [guardrails.NAME] tables applied to its requests")


class UpdateKey(Strict):
    """Body of PATCH /admin/keys/{id}; null clears a limit."""

    rpm: int | None = Field(None, ge=1, le=MAX_RATE)
    tpm: int | None = Field(None, ge=1, le=MAX_RATE)
    spend_limit: float | None = Field(None, ge=0, le=MAX_CREDITS)
    max_streams: int | None = Field(None, ge=1, le=MAX_STREAMS)
    mcp_servers: list[str] | None = Field(None, description="the key's MCP allow-list; null: every server")
    limit_reset: Period | None = Field(None, description="the spend limit's period (UTC); null: lifetime")
    guardrails: list[str] | None = Field(None, description="the key's guardrails ([guardrails.NAME]); null or []: none")


class KeyLimits(Strict):
    """Limits for every key of an account: their ceilings (a member may set a key's at or under them)."""

    rpm: int | None = Field(None, ge=1, le=MAX_RATE)
    tpm: int | None = Field(None, ge=1, le=MAX_RATE)
    spend_limit: float | None = Field(None, ge=0, le=MAX_CREDITS)
    max_streams: int | None = Field(None, ge=1, le=MAX_STREAMS)


class UpdateAccount(Strict):
    """Body of PATCH /admin/accounts/{id}; null clears the scope or a limit (not name or tier)."""

    name: str = Field(None, min_length=1, max_length=200)  # type: ignore[assignment]  # absent: unchanged
    tier: Tier = None  # type: ignore[assignment]
    scope: str | None = None
    max_streams: int | None = Field(None, ge=1, le=MAX_STREAMS, description="open streams of all its keys, per worker")
    key_limits: KeyLimits | None = Field(None, description="ceilings for every key of the account")
    guardrails: list[str] | None = Field(None, description="guardrails applied to every key's requests; null or []: none")


class CreateBudget(Strict):
    """Body of POST /admin/budgets: the account's budget, a key's budget for one model, or a tag's."""

    account_id: int = Field(ge=1, le=MAX_ID)
    amount: float = Field(ge=0, le=MAX_CREDITS, description="credits per period")
    period: Period | None = Field(None, description="daily, weekly or monthly (UTC); null: lifetime")
    key_id: int | None = Field(None, ge=1, le=MAX_ID, description="with `model`: that key's spend on the model")
    model: str | None = Field(None, min_length=1, max_length=200, description="a public model id")
    tag: str | None = Field(None, min_length=1, max_length=200,
                            description="every key of the account, on requests that carry the tag")


class UpdateBudget(Strict):
    """Body of PATCH /admin/budgets/{id}."""

    amount: float = Field(None, ge=0, le=MAX_CREDITS)  # type: ignore[assignment]  # absent: unchanged
    period: Period | None = None


class GuardrailsQuery(BaseModel):
    """Query parameters of GET /admin/guardrails: the request to answer for, each part optional."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(None, min_length=1, max_length=200, description="a public model id")
    key_id: int | None = Field(None, ge=1, le=MAX_ID, description="a key: its guardrails and its account's")
    profile: str | None = Field(None, min_length=1, max_length=200, description="a profile, `scope/profile`")


class Grant(Strict):
    """Body of POST /admin/accounts/{id}/credits."""

    amount: float = Field(gt=0, le=MAX_CREDITS)
    expires_in_days: float | None = Field(None, gt=0, le=MAX_DAYS)
    source: str = Field("grant", min_length=1, max_length=32)


@bp.before_request
def _admin_only() -> None:
    keys.require_admin(services.settings().admin.token_env)
    for name, value in (request.view_args or {}).items():
        if isinstance(value, int) and value > MAX_ID:
            raise InvalidRequest(f"`{name}` must be at most {MAX_ID}.", param=name)


@bp.post("/keys")
def create_key() -> tuple[Response, int]:
    """Create a key (and an account unless one is named) with its credits; the secret is in this answer only."""
    spec = parse_model(CreateKey, json_object())
    limits = {"rpm": spec.rpm, "tpm": spec.tpm, "spend_limit": micro_or_none(spec.spend_limit),
              "max_streams": spec.max_streams}
    key, secret = admin_service.create_key(KeySpec(
        spec.name, spec.account_id, spec.tier, spec.scope, limits,
        encode_allow_list(services.settings(), spec.mcp_servers), micro_or_none(spec.credits) or 0, spec.limit_reset,
        encode_names(services.settings(), spec.guardrails),
    ), by_operator=True)
    return jsonify({**admin_service.describe_key(key), "key": secret}), 201


@bp.get("/keys")
def list_keys() -> Response:
    """Every key, newest first."""
    return jsonify({"object": "list", "data": [admin_service.describe_key(key) for key in admin_service.list_keys()]})


@bp.patch("/keys/<int:key_id>")
def update_key(key_id: int) -> Response:
    """Change a key's limits (they become its member's ceilings), its limit's reset period, MCP allow-list or guardrails."""
    body = json_object()
    spec = parse_model(UpdateKey, body)
    key = keys.find_key(key_id)
    if "guardrails" in body:  # first: an unknown name is refused before anything changes
        keys.set_guardrails(key, encode_names(services.settings(), spec.guardrails))
    if "mcp_servers" in body:
        keys.set_mcp_servers(key, encode_allow_list(services.settings(), spec.mcp_servers))
    if "limit_reset" in body:
        admin_service.set_limit_reset(key, spec.limit_reset)
    changes = {name: micro_or_none(spec.spend_limit) if name == "spend_limit" else getattr(spec, name)
               for name in body if name not in ("mcp_servers", "limit_reset", "guardrails")}
    return jsonify(admin_service.describe_key(admin_service.set_key_limits(key, changes, by_operator=True)))


@bp.delete("/keys/<int:key_id>")
def revoke_key(key_id: int) -> Response:
    """Revoke a key; it stops working at once."""
    return jsonify(admin_service.describe_key(keys.revoke_key(key_id)))


@bp.get("/accounts/<int:account_id>")
def show_account(account_id: int) -> Response:
    """An account with its balance summary."""
    account = keys.find_account(account_id)
    return jsonify(describe_account(account))


@bp.patch("/accounts/<int:account_id>")
def update_account(account_id: int) -> Response:
    """Change an account's name, tier, scope, stream limit, its keys' ceilings or its guardrails."""
    body = json_object()
    spec = parse_model(UpdateAccount, body)
    changes = {name: getattr(spec, name) for name in body}
    if "guardrails" in body:
        changes["guardrails"] = encode_names(services.settings(), spec.guardrails)
    if spec.key_limits is not None:
        changes["key_limits"] = {**spec.key_limits.model_dump(), "spend_limit": micro_or_none(spec.key_limits.spend_limit)}
    account = admin_service.update_account(keys.find_account(account_id), changes)
    return jsonify(describe_account(account))


@bp.post("/accounts/<int:account_id>/credits")
def grant(account_id: int) -> tuple[Response, int]:
    """Grant credits, optionally expiring after some days."""
    spec = parse_model(Grant, json_object())
    created = admin_service.grant(account_id, credits.to_micro(spec.amount), spec.expires_in_days, spec.source)
    return jsonify({"grant_id": created.id, **describe_account(keys.find_account(account_id))}), 201


@bp.get("/accounts/<int:account_id>/ledger")
def ledger(account_id: int) -> Response:
    """An account's credit movements, newest first (`?limit=`, at most 1000)."""
    keys.find_account(account_id)
    limit = min(max(request.args.get("limit", 100, type=int) or 100, 1), 1000)
    entries = credits.ledger_of(account_id, limit)
    return jsonify({"object": "list", "data": [describe_entry(entry) for entry in entries]})


@bp.get("/budgets")
def list_budgets() -> Response:
    """Every budget (of one account: `?account_id=`), with its spend in the current period."""
    account_id = request.args.get("account_id", type=int)
    if account_id is not None:
        keys.find_account(min(account_id, MAX_ID))
    rows = admin_service.list_budgets(account_id)
    return jsonify({"object": "list", "data": [admin_service.describe_budget(row) for row in rows]})


@bp.post("/budgets")
def create_budget() -> tuple[Response, int]:
    """Set a budget: an account's, a key's for one model, or a tag's, per period or for its lifetime."""
    spec = parse_model(CreateBudget, json_object())
    row = admin_service.create_budget(BudgetSpec(spec.account_id, credits.to_micro(spec.amount), spec.period,
                                                 spec.key_id, spec.model, spec.tag), services.settings().models)
    return jsonify(admin_service.describe_budget(row)), 201


@bp.get("/budgets/<int:budget_id>")
def show_budget(budget_id: int) -> Response:
    """One budget with its spend in the current period."""
    return jsonify(admin_service.describe_budget(admin_service.find_budget(budget_id)))


@bp.patch("/budgets/<int:budget_id>")
def update_budget(budget_id: int) -> Response:
    """Change a budget's amount or period."""
    body = json_object()
    spec = parse_model(UpdateBudget, body)
    changes = {name: credits.to_micro(spec.amount) if name == "amount" else getattr(spec, name) for name in body}
    return jsonify(admin_service.describe_budget(admin_service.update_budget(budget_id, changes)))


@bp.delete("/budgets/<int:budget_id>")
def delete_budget(budget_id: int) -> Response:
    """Remove a budget; requests stop answering to it at once."""
    row = admin_service.delete_budget(budget_id)
    return jsonify({"id": row.id, "object": "budget", "deleted": True})


@bp.get("/guardrails")
def applied_guardrails() -> Response:
    """The guardrails a request with this model, key and profile would run, in order, with where each comes from."""
    spec = parse_model(GuardrailsQuery, {name: value for name, value in request.args.items() if value != ""})
    key = keys.find_key(spec.key_id) if spec.key_id is not None else None
    listed = attachments.applied(
        services.settings(), model=spec.model, profile=spec.profile,
        key_guardrails=decode_names(key.guardrails) if key else (),
        account_guardrails=decode_names(key.account.guardrails) if key else ())
    return jsonify({"object": "list", "data": [guardrail.as_json() for guardrail in listed]})


@bp.get("/deployments")
def deployments() -> Response:
    """Every deployment of every model: its shared health (status, cooldown, failures) and this worker's load."""
    return jsonify({"object": "list", "data": [describe_deployment(state)
                                               for state in services.router().deployment_states()]})


def describe_deployment(state: DeploymentState) -> dict[str, Any]:
    """A DeploymentState (gateway.upstream.router) as JSON: its fields, `cooling_until` in ISO 8601 UTC or null."""
    until = state.cooling_until
    moment = None if until is None else datetime.datetime.fromtimestamp(until, datetime.UTC)
    return {**dataclasses.asdict(state),
            "cooling_until": None if moment is None else moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
