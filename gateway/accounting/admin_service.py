"""The admin service the admin API, the CLI and the dashboard share: keys and accounts, their limits, grants, budgets.

A key is created with its initial credits in one transaction. Limits an operator sets (the admin
API, the CLI, an admin on the dashboard) are also a ceiling: a member may set their key's limits
at or under them and under their account's, never above, and clearing one returns it to the
operator's value.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.accounting import budgets, credits, keys
from gateway.accounting.attribution import TAG_PATTERN
from gateway.accounting.budget_spend import BudgetState, budget_of, state_of
from gateway.accounting.guardrail_names import decode_names
from gateway.accounting.mcp_allow_list import decode_allow_list
from gateway.accounting.money import to_credits
from gateway.accounting.writelock import locked_write
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.tables import Account, ApiKey, CreditGrant, utcnow
from gateway.tables import Budget as BudgetRow

LIMITS = ("rpm", "tpm", "spend_limit", "max_streams")  # spend_limit in micro-credits
ACCOUNT_FIELDS = ("name", "tier", "scope", "max_streams", "key_limits", "guardrails")  # guardrails: as stored
MAX_BUDGET_TAG = 64  # budget.tag's width
Period = Literal["daily", "weekly", "monthly"]  # gateway.accounting.budgets.PERIODS; None: lifetime


def micro_or_none(amount: Any) -> int | None:
    """Credits (a number or its text) in micro-credits; None stays None (no limit)."""
    return None if amount is None else credits.to_micro(amount)


@dataclass
class KeySpec:
    """What a new key is made of; `account_id` None makes a new account named after the key."""

    name: str
    account_id: int | None = None
    tier: str = "free"
    scope: str | None = None
    limits: dict[str, int | None] = field(default_factory=dict)  # of LIMITS
    mcp_servers: str | None = None  # as gateway.accounting.mcp_allow_list.encode_allow_list stores it
    credits: int = 0  # micro-credits granted to the account; 0: no grant
    limit_reset: str | None = None  # the spend limit's period: daily | weekly | monthly; None: lifetime
    guardrails: str | None = None  # as gateway.accounting.guardrail_names.encode_names stores them


def create_key(spec: KeySpec, *, by_operator: bool) -> tuple[ApiKey, str]:
    """Create a key (and its account unless one is named) and grant its credits, all in one transaction."""
    with locked_write():
        account = keys.find_account(spec.account_id) if spec.account_id is not None else None
        limits = {name: value for name, value in spec.limits.items() if value is not None}
        if not by_operator and account is not None:
            limits = {**limits_of(account), **limits}  # a member's key starts at the account's ceilings
        key, secret = keys.create_key(spec.name, account, tier=spec.tier, scope=spec.scope)
        set_key_limits(key, limits, by_operator=by_operator)
        if spec.mcp_servers is not None:
            keys.set_mcp_servers(key, spec.mcp_servers)
        if spec.limit_reset is not None:
            set_limit_reset(key, spec.limit_reset)
        if spec.guardrails is not None:
            keys.set_guardrails(key, spec.guardrails)
        if spec.credits:
            credits.grant_credits(key.account_id, spec.credits, source="initial")
    return key, secret


def list_keys(account_id: int | None = None, limit: int | None = None, newest_first: bool = True) -> list[ApiKey]:
    """Keys, with `.account` joined (every account's for None), newest first unless asked otherwise."""
    order = ApiKey.id.desc() if newest_first else ApiKey.id
    query = ApiKey.select(ApiKey, Account).join(Account).order_by(order)
    if account_id is not None:
        query = query.where(ApiKey.account == account_id)
    return list(query.limit(limit) if limit is not None else query)


def operator_limits(key: ApiKey) -> dict[str, int]:
    """The limits an operator set on a key: the member's ceilings."""
    return json.loads(key.operator_limits) if key.operator_limits else {}


def limits_of(account: Account) -> dict[str, int]:
    """The limits an operator set for every key of an account (its `max_streams` included): their ceilings."""
    limits = json.loads(account.key_limits) if account.key_limits else {}
    if account.max_streams is not None:
        limits["max_streams"] = min(limits.get("max_streams", account.max_streams), account.max_streams)
    return limits


def check_ceilings(changes: dict[str, int | None], ceilings: dict[str, int], account: Account) -> dict[str, int | None]:
    """A member's limit changes held under the operator's and the account's: refused above, a cleared one capped."""
    ceilings = dict(ceilings)
    for name, ceiling in limits_of(account).items():
        ceilings[name] = min(ceilings.get(name, ceiling), ceiling)
    held = {}
    for name, value in changes.items():
        ceiling = ceilings.get(name)
        if ceiling is not None and value is not None and value > ceiling:
            raise InvalidRequest(f"`{name}` may be at most {shown_limit(name, ceiling)}, the limit an operator set for this key "
                                 "or its account; ask them to raise it.", param=name)
        held[name] = ceiling if value is None else value
    return held


def set_key_limits(key: ApiKey, changes: dict[str, int | None], *, by_operator: bool) -> ApiKey:
    """Set some of a key's LIMITS (None clears one): an operator's become ceilings, a member's stay under them."""
    unknown = set(changes) - set(LIMITS)
    if unknown:
        raise ValueError(f"not a key limit: {sorted(unknown)}")
    ceilings = operator_limits(key)
    if by_operator:
        ceilings.update(changes)
        ceilings = {name: value for name, value in ceilings.items() if value is not None}
        key.operator_limits = json.dumps(ceilings) if ceilings else None
    else:
        changes = check_ceilings(changes, ceilings, key.account)
    return keys.update_limits(key, changes)


def update_account(account: Account, changes: dict[str, Any]) -> Account:
    """Change some of an account's name, tier, scope, `max_streams`, `key_limits`, `guardrails` (None clears one).

    New key limits are ceilings at once: every key of the account above one (or without it) is set to it.
    """
    unknown = set(changes) - set(ACCOUNT_FIELDS)
    if unknown:
        raise ValueError(f"not an account field: {sorted(unknown)}")
    changes = dict(changes)
    if "key_limits" in changes:
        given = {name: value for name, value in (changes["key_limits"] or {}).items() if value is not None}
        changes["key_limits"] = json.dumps(given) if given else None
    with locked_write():
        account = keys.update_account(account, changes)
        ceilings = limits_of(account)
        for key in list_keys(account.id):
            above = {name: ceiling for name, ceiling in ceilings.items()
                     if getattr(key, name) is None or getattr(key, name) > ceiling}
            if above:
                keys.update_limits(key, above)
    return account


def grant(account_id: int, amount: int, expires_in_days: float | None = None, source: str = "grant") -> CreditGrant:
    """Grant micro-credits to an account (404 if it does not exist), expiring after some days if asked."""
    keys.find_account(account_id)
    expires_at = utcnow() + datetime.timedelta(days=float(expires_in_days)) if expires_in_days else None
    return credits.grant_credits(account_id, amount, expires_at, source)


def create_account(name: str, tier: str = "free", scope: str | None = None) -> Account:
    """A new account (a tenant) with no keys and no credits."""
    return keys.create_account(name, tier=tier, scope=scope)


def describe_key(key: ApiKey) -> dict:
    """A key as the admin API, the CLI and the dashboard show it (never the secret or digest)."""
    return {
        "id": key.id, "name": key.name, "prefix": key.prefix, "account_id": key.account_id, "revoked": key.revoked,
        "rpm": key.rpm, "tpm": key.tpm, "spend_limit": shown_limit("spend_limit", key.spend_limit),
        "max_streams": key.max_streams, "limit_reset": key.limit_reset,
        "mcp_servers": decode_allow_list(key.mcp_servers), "guardrails": list(decode_names(key.guardrails)),
        "operator_limits": {name: shown_limit(name, value) for name, value in operator_limits(key).items()},
        "created_at": key.created_at.isoformat() + "Z",
    }


def shown_limit(name: str, value: int | None) -> float | int | None:
    """A limit as shown: a spend limit in credits, the others as stored."""
    return to_credits(value) if name == "spend_limit" and value is not None else value


def set_limit_reset(key: ApiKey, period: str | None) -> ApiKey:
    """Make a key's spend limit reset daily, weekly or monthly (UTC), or count for its lifetime (None)."""
    budgets.period_start(period, utcnow())  # refuses an unknown period
    key.limit_reset = period
    key.save()
    keys.forget_key(key.id)
    return key


@dataclass
class BudgetSpec:
    """A budget an operator sets: the account's (no key, model or tag), a key's for one model, or a tag's."""

    account_id: int
    amount: int  # micro-credits per period
    period: str | None = None  # daily | weekly | monthly; None: lifetime
    key_id: int | None = None
    model: str | None = None
    tag: str | None = None


def check_budget_shape(spec: BudgetSpec) -> None:
    """Refuse the shapes the gateway does not offer, a tag no request could carry, and a key of another account."""
    if spec.tag is not None and not (TAG_PATTERN.fullmatch(spec.tag) and len(spec.tag) <= MAX_BUDGET_TAG):
        raise InvalidRequest(f"A budget's tag has at most {MAX_BUDGET_TAG} of the characters a request's tags may "
                             "use: letters, digits and _ . : / -.", param="tag")
    if spec.key_id is not None and spec.model is None:
        raise InvalidRequest("A key's own budget is its spend limit with `limit_reset`; a budget naming `key_id` "
                             "caps one model, so it needs `model`.", param="model")
    if spec.tag is not None and spec.key_id is not None:
        raise InvalidRequest("A tag's budget counts every key of the account that sends the tag; leave `key_id` out.",
                             param="key_id")
    if spec.key_id is not None and keys.find_key(spec.key_id).account_id != spec.account_id:
        raise InvalidRequest(f"Key {spec.key_id} is not a key of account {spec.account_id}.", param="key_id")


def same_scope(spec: BudgetSpec) -> list:
    """Conditions that find a budget row with the spec's key, model, tag and period (a missing one: NULL)."""
    columns = ((BudgetRow.api_key, spec.key_id), (BudgetRow.model, spec.model), (BudgetRow.tag, spec.tag),
               (BudgetRow.period, spec.period))
    return [column.is_null() if value is None else column == value for column, value in columns]


def create_budget(spec: BudgetSpec, models: Collection[str]) -> BudgetRow:
    """A new budget (404 for an unknown account or key, 409 when one with the same scope and period exists).

    `models`: the config's public model ids; a budget on another model would never apply.
    """
    budgets.period_start(spec.period, utcnow())  # refuses an unknown period
    if spec.model is not None and spec.model not in models:
        raise InvalidRequest(f"No model {spec.model!r} in the config.", param="model")
    with locked_write():
        keys.find_account(spec.account_id)
        check_budget_shape(spec)
        same = BudgetRow.select().where(BudgetRow.account == spec.account_id, *same_scope(spec))
        existing = same.first()
        if existing is not None:
            raise Conflict(f"Budget {existing.id} already caps this with the same period; change its amount instead.",
                           param="period")
        return BudgetRow.create(account=spec.account_id, api_key=spec.key_id, model=spec.model, tag=spec.tag,
                                period=spec.period, amount=spec.amount)


def find_budget(budget_id: int) -> BudgetRow:
    """A budget by id, or 404."""
    row = BudgetRow.get_or_none(BudgetRow.id == budget_id)
    if row is None:
        raise NotFound(f"No budget with id {budget_id}.", param="id")
    return row


def update_budget(budget_id: int, changes: dict[str, Any]) -> BudgetRow:
    """Change a budget's `amount` (micro-credits) or `period` (None: lifetime); spend already made still counts."""
    unknown = set(changes) - {"amount", "period"}
    if unknown:
        raise ValueError(f"not a budget field: {sorted(unknown)}")
    if "period" in changes:
        budgets.period_start(changes["period"], utcnow())
    with locked_write():
        row = find_budget(budget_id)
        for name, value in changes.items():
            setattr(row, name, value)
        row.save()
    return row


def delete_budget(budget_id: int) -> BudgetRow:
    """Remove a budget (404 if it does not exist); returns it as it was."""
    row = find_budget(budget_id)
    row.delete_instance()
    return row


def list_budgets(account_id: int | None = None) -> list[BudgetRow]:
    """The `budget` rows (of one account, or every account's), oldest first."""
    query = BudgetRow.select().order_by(BudgetRow.id)
    return list(query.where(BudgetRow.account == account_id) if account_id is not None else query)


def describe_budget(row: BudgetRow, now: datetime.datetime | None = None) -> dict[str, Any]:
    """A budget as the admin API, the CLI and the dashboard show it: its caps and its current period's spend."""
    state: BudgetState = state_of(budget_of(row), now or budgets.now())
    return {
        "id": row.id, "object": "budget", "account_id": row.account_id, "key_id": row.api_key_id, "model": row.model,
        "tag": row.tag, "period": row.period, "kind": state.budget.kind, "description": state.budget.describe(),
        "amount": to_credits(row.amount), "spent": to_credits(state.spent),
        "remaining": to_credits(budgets.remaining(state.budget, state.spent)),
        "period_start": None if state.period_start is None else budgets.iso_utc(state.period_start),
        "resets_at": None if state.resets_at is None else budgets.iso_utc(state.resets_at),
        "created_at": row.created_at.isoformat() + "Z",
    }
