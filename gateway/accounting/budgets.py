"""Budgets with periods (pure): when a period starts and resets in UTC, which budgets a request answers to, the 402.

A budget caps what an account spends per period: the charges since the period's start plus the open holds
that match every filter it sets (a key, a model, a tag). Its shapes:
- the key's limit: the key's `spend_limit`, over `limit_reset` (daily, weekly, monthly; None: lifetime);
- the account's budget: every key's spend;
- a key's per-model budget: one key's spend on one public model;
- a tag's budget: the spend of every key of the account on requests that carried the tag.

Periods are UTC calendar periods, as OpenRouter's `limit_reset`: a day from midnight, a week from Monday
00:00, a month from its first day. A hold counts against the budgets of the model the request asked for and
of the tags it carried; its charge against those of the model that answered. The admission (batch.py)
refuses a hold when spent + held + this hold would pass any budget's amount.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.accounting.money import to_credits
from gateway.tables import utcnow

PERIODS = ("daily", "weekly", "monthly")
PERIOD_NOUNS = {"daily": "day", "weekly": "week", "monthly": "month"}


def now() -> datetime.datetime:
    """Naive UTC now: the clock budgets read (tests move it past midnight)."""
    return utcnow()


def period_start(period: str | None, moment: datetime.datetime) -> datetime.datetime | None:
    """The start (naive UTC) of the period holding `moment`; None for a lifetime budget."""
    if period is None:
        return None
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - datetime.timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    raise ValueError(f"not a budget period: {period!r} (one of {', '.join(PERIODS)}, or none)")


def next_reset(period: str | None, moment: datetime.datetime) -> datetime.datetime | None:
    """When the period holding `moment` ends and its spend starts from zero again; None for a lifetime budget."""
    start = period_start(period, moment)
    if start is None:
        return None
    if period == "daily":
        return start + datetime.timedelta(days=1)
    if period == "weekly":
        return start + datetime.timedelta(days=7)
    return (start + datetime.timedelta(days=32)).replace(day=1)


def iso_utc(moment: datetime.datetime) -> str:
    """A naive UTC datetime in ISO 8601 with a Z: 2026-12-08T00:00:00Z."""
    return moment.replace(microsecond=0).isoformat() + "Z"


@dataclass(frozen=True, slots=True)
class Scope:
    """What a budget counts in one period: an account's charges since `since` and open holds, filtered."""

    account_id: int
    key_id: int | None = None
    model: str | None = None
    tag: str | None = None
    since: datetime.datetime | None = None  # None: every charge ever

    def covers(self, account_id: int, key_id: int | None, model: str | None, tags: Sequence[str]) -> bool:
        """Whether a hold or charge of this account, key, model and tags counts here."""
        return (account_id == self.account_id and (self.key_id is None or key_id == self.key_id)
                and (self.model is None or model == self.model) and (self.tag is None or self.tag in tags))


@dataclass(frozen=True, slots=True)
class Budget:
    """One cap in micro-credits per period (see the module docstring for its shapes)."""

    account_id: int
    amount: int
    period: str | None = None  # daily | weekly | monthly; None: lifetime
    key_id: int | None = None
    model: str | None = None
    tag: str | None = None
    key_limit: bool = False  # the key's own spend limit (api_key.spend_limit), not a `budget` row
    id: int | None = None  # the `budget` row's

    def applies(self, key_id: int | None, model: str | None, tags: Sequence[str]) -> bool:
        """Whether a request of this key, for this model, with these tags answers to this budget."""
        return self.scope(None).covers(self.account_id, key_id, model, tags)

    def scope(self, moment: datetime.datetime | None) -> Scope:
        """What it counts in the period holding `moment` (a lifetime budget: everything)."""
        since = period_start(self.period, moment) if moment is not None else None
        return Scope(self.account_id, self.key_id, self.model, self.tag, since)

    @property
    def kind(self) -> str:
        """key | model | tag | account."""
        return "key" if self.key_limit else "model" if self.model else "tag" if self.tag else "account"

    def describe(self) -> str:
        """In words, for messages: "the key's daily limit of 5 credits"."""
        period = f"{self.period} " if self.period else ""
        of = f"of {to_credits(self.amount)} credits"
        if self.key_limit:
            return f"the key's {period}limit {of}" if self.period else f"the key's spend limit {of}"
        owner = "the key's" if self.key_id is not None else "the account's"
        if self.tag is not None:
            owner = f"the tag '{self.tag}''s"
        subject = f" for model '{self.model}'" if self.model is not None else ""
        return f"{owner} {period or 'lifetime '}budget{subject} {of}"


def key_limit(account_id: int, key_id: int, spend_limit: int | None, limit_reset: str | None) -> Budget | None:
    """The key's own spend limit as a budget (None when it has none)."""
    if spend_limit is None:
        return None
    return Budget(account_id, spend_limit, limit_reset, key_id=key_id, key_limit=True)


def applicable(budgets: Sequence[Budget], key_id: int | None, model: str | None, tags: Sequence[str]) -> list[Budget]:
    """The budgets a request answers to, the key's limit first."""
    return sorted((budget for budget in budgets if budget.applies(key_id, model, tags)),
                  key=lambda budget: not budget.key_limit)


def refusal(budget: Budget, committed: int, amount: int, moment: datetime.datetime, what: str) -> str:
    """The 402 message: which budget `amount` more would pass, what it has spent and held, and when it resets."""
    reset = next_reset(budget.period, moment)
    when = f"; it resets at {iso_utc(reset)}" if reset is not None else "; it does not reset"
    this = f" this {PERIOD_NOUNS[budget.period]}" if budget.period else ""
    return (f"{what} may cost up to {to_credits(amount)} credits, which would pass {budget.describe()} "
            f"({to_credits(committed)} spent or held{this}){when}.")


def remaining(budget: Budget, spent: int) -> int:
    """What is left of a budget in its period (never below 0)."""
    return max(budget.amount - spent, 0)
