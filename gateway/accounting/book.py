"""One batch's working copy of the accounts, holds and rate windows it touches, and its pending writes.

Everything is read at most once per batch, under the batch's locks (SQLite: the database write
lock; PostgreSQL: the account rows, locked in id order before anything is read), changed in
memory as the batch's operations are decided in order, and written back by `flush()` in a few
statements. So one batch of N requests costs a handful of statements, not N times as many.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting import statements as sql
from gateway.accounting.budgets import Budget, Scope
from gateway.accounting.operations import UsageRow
from gateway.accounting.statements import Statements


def draw_plan(grants: list[tuple[int, int, Any]], amount: int) -> list[tuple[int, int]]:
    """Take `amount` from (id, remaining, expires_at) grants, soonest-expiring first, as far as they go."""
    ordered = sorted(grants, key=lambda grant: (grant[2] is None, grant[2] or datetime.datetime.max, grant[0]))
    plan = []
    for grant_id, remaining, _ in ordered:
        if amount <= 0:
            break
        take = min(remaining, amount)
        if take > 0:
            plan.append((grant_id, take))
            amount -= take
    return plan


@dataclass(slots=True)
class Grant:
    """A grant with something left (or a debt: negative remaining)."""

    id: int | None  # None: a debt row this batch creates
    remaining: int
    expires_at: Any
    dirty: bool = False

    def order(self) -> tuple:
        """Draw order: soonest-expiring first, grants without expiry last, then oldest."""
        return (self.expires_at is None, self.expires_at or 0, self.id or 0)


@dataclass(slots=True)
class AccountBook:
    """An account's live grants and the sum of its open holds."""

    id: int
    grants: list[Grant]
    held: int
    swept: bool = False

    @property
    def balance(self) -> int:
        """Micro-credits left in live grants (negative while in debt)."""
        return sum(grant.remaining for grant in self.grants)

    @property
    def available(self) -> int:
        """What a new hold may take."""
        return self.balance - self.held

    def charge(self, cost: int) -> None:
        """Draw the full cost soonest-expiring first; what the grants lack becomes debt."""
        plan = draw_plan([(index, grant.remaining, grant.expires_at) for index, grant in enumerate(self.grants)], cost)
        for index, take in plan:
            grant = self.grants[index]
            grant.remaining, grant.dirty = grant.remaining - take, True
        left = cost - sum(take for _, take in plan)
        if left > 0:
            debt = self._debt_grant()
            debt.remaining, debt.dirty = debt.remaining - left, True

    def _debt_grant(self) -> Grant:
        """Where a shortfall is recorded: a grant already in debt, else the last one drawn, else a new row."""
        for grant in self.grants:
            if grant.remaining < 0:
                return grant
        if not self.grants:
            self.grants.append(Grant(None, 0, None))
        return self.grants[-1]


@dataclass(slots=True)
class Hold:
    """A reservation the batch settles or grows."""

    amount: int
    status: str
    key_id: int | None
    model: str | None = None
    tags: tuple[str, ...] = ()


@dataclass
class Book:
    """The batch's reads (lazy, once each) and writes (flushed at the end)."""

    statements: Statements
    now: datetime.datetime
    accounts: dict[int, AccountBook] = field(default_factory=dict)
    holds: dict[int, Hold] = field(default_factory=dict)
    windows: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    window_deltas: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    budget_rows: dict[int, list[Budget]] = field(default_factory=dict)  # each account's `budget` rows
    committed: dict[Scope, int] = field(default_factory=dict)  # budget scopes' spend and holds, as read and changed
    new_holds: list[tuple] = field(default_factory=list)
    settled: list[int] = field(default_factory=list)
    grown: list[tuple[int, int]] = field(default_factory=list)
    ledger: list[tuple] = field(default_factory=list)
    usage: list[tuple] = field(default_factory=list)
    stamp: Any = None  # `now` as the database stores it
    expiries: dict[int, Any] = field(default_factory=dict)  # now + ttl, as stored, by ttl

    def __post_init__(self) -> None:
        self.stamp = self.statements.time(self.now)

    def load_holds(self, reservation_ids: list[int]) -> None:
        """Read the reservations this batch settles or grows, in one query."""
        wanted = [rid for rid in set(reservation_ids) if rid not in self.holds]
        if not wanted:
            return
        for rid, amount, status, key_id, model, tags in self.statements.in_list(sql.RESERVATIONS, wanted):
            self.holds[rid] = Hold(amount, status, key_id, model, split_tags(tags))

    def account(self, account_id: int) -> AccountBook:
        """The account's grants (expiring what is due) and open holds, read on first use."""
        book = self.accounts.get(account_id)
        if book is None:
            book = self.accounts[account_id] = self._read_account(account_id)
        return book

    def _read_account(self, account_id: int) -> AccountBook:
        st, now = self.statements, self.stamp
        live, held = [], 0
        for grant_id, remaining, expires_at, expired in st.rows(sql.ACCOUNT, (now, account_id, account_id)):
            if grant_id is None:
                held = int(remaining)
            elif expired and remaining > 0:
                self.ledger.append((account_id, None, "expiry", remaining, None, f"grant {grant_id} expired", now,
                                    None, None))
                live.append(Grant(grant_id, 0, expires_at, dirty=True))
            else:
                live.append(Grant(grant_id, remaining, expires_at))
        live.sort(key=Grant.order)
        return AccountBook(account_id, live, held)

    def sweep(self, book: AccountBook) -> None:
        """Release the account's holds older than their TTL (a killed worker's), once per batch."""
        book.swept = True
        swept = self.statements.rows(sql.SWEEP_ACCOUNT, (book.id, self.stamp))
        for rid, amount, key_id, model, tags in swept:
            hold = self.holds.get(rid)
            if hold is not None and hold.status != "open":
                continue  # settled earlier in this batch: flush() marks it settled
            book.held -= amount
            self.commit(book.id, key_id, model, split_tags(tags), -amount)
            if hold is not None:
                hold.status = "swept"

    def load_budgets(self, rows: list[tuple]) -> None:
        """Keep the `budget` rows read with the accounts' locks (statements.BUDGETS)."""
        for account_id, budget_id, key_id, model, tag, period, amount in rows:
            self.budget_rows.setdefault(account_id, []).append(
                Budget(account_id, int(amount), period, key_id, model, tag, id=budget_id))

    def budgets(self, account_id: int) -> list[Budget]:
        """The account's `budget` rows (read with the batch's locks)."""
        return self.budget_rows.get(account_id, [])

    def spent(self, scope: Scope) -> int:
        """A budget scope's charges in its period plus its open holds, read on first use."""
        if scope not in self.committed:
            filters = [value for value in (scope.key_id, scope.model) if value is not None]
            if scope.tag is not None:
                filters.append(sql.tag_needle(scope.tag))
            since = [self.statements.time(scope.since)] if scope.since is not None else []
            text = sql.scope_spend(scope.key_id is not None, scope.model is not None, scope.tag is not None,
                                   scope.since is not None)
            rows = self.statements.rows(text, (scope.account_id, *filters, *since, scope.account_id, *filters))
            self.committed[scope] = sum(int(row[0]) for row in rows)
        return self.committed[scope]

    def commit(self, account_id: int, key_id: int | None, model: str | None, tags: tuple[str, ...],
               amount: int) -> None:
        """Track a hold or charge (negative: a release) in every budget scope read so far that counts it."""
        for scope in self.committed:
            if scope.covers(account_id, key_id, model, tags):
                self.committed[scope] += amount

    def window(self, key_id: int, window: int) -> list[int]:
        """[requests, tokens] of a key's window, read on first use."""
        slot = (key_id, window)
        counts = self.windows.get(slot)
        if counts is None:
            rows = self.statements.rows(sql.WINDOW, slot)
            pending = self.window_deltas.get(slot, (0, 0))  # counted before it was read
            counts = [int(value) + added for value, added in zip(rows[0] if rows else (0, 0), pending, strict=True)]
            self.windows[slot] = counts
        return counts

    def count(self, key_id: int, window: int, requests: int, tokens: int) -> None:
        """Add to a window, in memory now and in the database at flush."""
        counts = self.window(key_id, window) if requests else self.windows.get((key_id, window))
        delta = self.window_deltas.setdefault((key_id, window), [0, 0])
        delta[0] += requests
        delta[1] += tokens
        if counts is not None:
            counts[0] += requests
            counts[1] += tokens

    def hold(self, account_id: int, key_id: int, amount: int, request_id: str, ttl_s: int, model: str | None = None,
             tags: tuple[str, ...] = ()) -> int:
        """Queue a new reservation row (tracked in the budget scopes that count it); returns its position."""
        expires = self.expiries.get(ttl_s)
        if expires is None:
            expires = self.expiries[ttl_s] = self.statements.time(self.now + datetime.timedelta(seconds=ttl_s))
        self.new_holds.append((account_id, key_id, amount, "open", request_id, self.stamp, expires, model,
                               join_tags(tags)))
        self.commit(account_id, key_id, model, tags, amount)
        return len(self.new_holds) - 1

    def charge_row(self, account_id: int, key_id: int | None, amount: int, request_id: str, model: str | None = None,
                   tags: tuple[str, ...] = ()) -> None:
        """Queue a `charge` ledger row (tracked in the budget scopes that count it)."""
        self.ledger.append((account_id, key_id, "charge", amount, request_id, None, self.stamp, model, join_tags(tags)))
        self.commit(account_id, key_id, model, tags, amount)

    def usage_row(self, account_id: int, key_id: int | None, row: UsageRow, cost: int) -> None:
        """Queue a usage row."""
        self.usage.append((row.request_id, key_id, account_id, row.endpoint, row.model, row.prompt_tokens,
                           row.completion_tokens, row.estimated, row.status, row.latency_ms, cost,
                           self.stamp, row.generation_id, row.provider, row.ttft_ms, row.finish_reason,
                           row.streamed, row.cancelled, row.cached_tokens, row.cache_write_tokens,
                           row.reasoning_tokens, row.deployment, row.attempts, row.cache_hit, row.end_user,
                           join_tags(row.tags), row.guardrails, row.unit, row.units,
                           row.batch))

    def flush(self) -> list[int]:
        """Write everything back (on PostgreSQL in one round trip); returns the new reservations' ids, in order."""
        st = self.statements
        st.write_many(sql.GROW, self.grown)
        st.write_in_list(sql.SETTLE, self.settled)
        for book in self.accounts.values():
            self._write_grants(book)
        st.insert("ledger_entry", sql.LEDGER_COLUMNS, self.ledger)
        st.insert("usage_entry", sql.USAGE_COLUMNS, self.usage)
        st.write_many(sql.WINDOW_ADD, [(key, window, *delta) for (key, window), delta in self.window_deltas.items()])
        return st.insert_reservations(self.new_holds)

    def _write_grants(self, book: AccountBook) -> None:
        st, now = self.statements, self.stamp
        for grant in book.grants:
            if grant.id is None:
                st.insert("credit_grant", sql.GRANT_COLUMNS, [(book.id, 0, grant.remaining, "overdraft", None, now)])
            elif grant.dirty:
                st.write(sql.SET_REMAINING, (grant.remaining, grant.id))


def join_tags(tags: tuple[str, ...]) -> str | None:
    """Tags as a row stores them: comma-joined, None for none."""
    return ",".join(tags) or None


def split_tags(stored: str | None) -> tuple[str, ...]:
    """A row's tags back as a tuple."""
    return tuple(stored.split(",")) if stored else ()
