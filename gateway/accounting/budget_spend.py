"""Every budget with what it has spent in its current period: read by the admin views and the budget alerts.

Spend is what the ledger charged in the period (holds of requests in flight are not spend yet): the
charges of the budget's account that match its key, model and tag (gateway.accounting.budgets.Scope).
The admission (batch.py) counts the same charges plus the open holds. SpendTally keeps the states of
a worker's repeated looks current by adding only the ledger rows written since its last look.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from peewee import fn

from gateway.accounting.budgets import Budget, Scope, key_limit, next_reset, period_start
from gateway.accounting.usage_groups import has_tag
from gateway.tables import ApiKey, LedgerEntry
from gateway.tables import Budget as BudgetRow


@dataclass(frozen=True)
class BudgetState:
    """One budget in its current period: when the period started and resets, and what it spent (micro-credits)."""

    budget: Budget
    spent: int
    period_start: datetime.datetime | None  # naive UTC; None for a lifetime budget
    resets_at: datetime.datetime | None

    @property
    def identity(self) -> str:
        """The budget's stable name: "key:12" for a key's spend limit, "budget:17" for a `budget` row."""
        return identity_of(self.budget)

    @property
    def target(self) -> str:
        """What it caps, in words: "key 12", "key 12, model gpt-4o", "tag team-a", "account 3"."""
        budget = self.budget
        if budget.tag is not None:
            return f"tag {budget.tag}"
        if budget.key_id is not None:
            return f"key {budget.key_id}" + (f", model {budget.model}" if budget.model is not None else "")
        return f"account {budget.account_id}" + (f", model {budget.model}" if budget.model is not None else "")


def identity_of(budget: Budget) -> str:
    """A budget's stable name across scans, workers and hosts: "key:12" (a key's spend limit) or "budget:17"."""
    return f"key:{budget.key_id}" if budget.key_limit else f"budget:{budget.id}"


def budget_of(row: BudgetRow) -> Budget:
    """A `budget` row as the pure Budget."""
    return Budget(row.account_id, row.amount, row.period, row.api_key_id, row.model, row.tag, id=row.id)


def key_limits(account_ids: Iterable[int] | None) -> list[Budget]:
    """The spend limits of these accounts' live keys (every account's for None), as budgets."""
    keys = ApiKey.select(ApiKey.id, ApiKey.account, ApiKey.spend_limit, ApiKey.limit_reset).where(
        ApiKey.spend_limit.is_null(False), ApiKey.revoked == False)  # noqa: E712 (SQL, not Python)
    if account_ids is not None:
        keys = keys.where(ApiKey.account.in_(list(account_ids)))
    limits = [key_limit(key.account_id, key.id, key.spend_limit, key.limit_reset) for key in keys.order_by(ApiKey.id)]
    return [budget for budget in limits if budget is not None]


def budget_rows(account_ids: Iterable[int] | None) -> list[Budget]:
    """The `budget` rows of these accounts (every account's for None), oldest first."""
    rows = BudgetRow.select().order_by(BudgetRow.id)
    if account_ids is not None:
        rows = rows.where(BudgetRow.account.in_(list(account_ids)))
    return [budget_of(row) for row in rows]


def spent(scope: Scope, after_id: int | None = None, through_id: int | None = None) -> int:
    """Micro-credits charged within a budget's scope (its account, key, model, tag, since its period's start),
    counting only ledger rows with ids in (after_id, through_id] when given."""
    query = LedgerEntry.select(fn.COALESCE(fn.SUM(LedgerEntry.amount), 0)).where(
        LedgerEntry.account == scope.account_id, LedgerEntry.kind == "charge")
    if scope.key_id is not None:
        query = query.where(LedgerEntry.api_key == scope.key_id)
    if scope.model is not None:
        query = query.where(LedgerEntry.model == scope.model)
    if scope.tag is not None:
        query = query.where(has_tag(scope.tag, LedgerEntry.tags))
    if scope.since is not None:
        query = query.where(LedgerEntry.created_at >= scope.since)
    if after_id is not None:
        query = query.where(LedgerEntry.id > after_id)
    if through_id is not None:
        query = query.where(LedgerEntry.id <= through_id)
    return int(query.scalar())


def newest_ledger_id() -> int:
    """The id of the ledger's newest row (0 when empty)."""
    return LedgerEntry.select(LedgerEntry.id).order_by(LedgerEntry.id.desc()).limit(1).scalar() or 0


def state_of(budget: Budget, now: datetime.datetime) -> BudgetState:
    """A budget's spend in the period holding `now`."""
    return BudgetState(budget, spent(budget.scope(now)), period_start(budget.period, now),
                       next_reset(budget.period, now))


def budgets_of(account_ids: list[int] | None) -> list[Budget]:
    """Every budget of these accounts (every account's for None), the keys' limits first."""
    return key_limits(account_ids) + budget_rows(account_ids)


def budget_states(account_ids: Iterable[int] | None, now: datetime.datetime) -> list[BudgetState]:
    """Every budget of these accounts (every account's for None), the keys' limits first, with its current spend."""
    return [state_of(budget, now) for budget in budgets_of(None if account_ids is None else list(account_ids))]


class SpendTally:
    """Budget states for one worker's repeated looks, each adding only the charges written since the last one.

    A look at some accounts sums, per budget, the ledger rows with ids above the last look's newest (a
    month's spend is not summed again every few seconds); a new period, or a changed scope, starts the sum
    over. A look at every account (None) sums everything again, which also counts a row that committed
    after a higher id was read (PostgreSQL hands out ids before commit).
    """

    def __init__(self) -> None:
        self.tallies: dict[str, tuple[Scope, int, int]] = {}  # identity -> (scope, newest ledger id counted, spent)

    def __call__(self, account_ids: Iterable[int] | None, now: datetime.datetime) -> list[BudgetState]:
        """The states of these accounts' budgets (every account's for None) in the periods holding `now`."""
        newest = newest_ledger_id()
        if account_ids is None:
            self.tallies = {}
        states = []
        for budget in budgets_of(None if account_ids is None else list(account_ids)):
            scope, identity = budget.scope(now), identity_of(budget)
            known = self.tallies.get(identity)
            if known is not None and known[0] == scope:
                total = known[2] + spent(scope, after_id=known[1], through_id=newest)
            else:
                total = spent(scope, through_id=newest)
            self.tallies[identity] = (scope, newest, total)
            states.append(BudgetState(budget, total, period_start(budget.period, now), next_reset(budget.period, now)))
        return states
