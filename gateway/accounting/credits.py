"""Credits in exact micro-credits: grants, balances and summaries; reserve -> settle without the writer.

Amounts are integers of micro-credits (1 credit = 1,000,000). A price of P credits per
million tokens is P micro-credits per token; a request's cost is the sum over its input,
cached-input and output tokens, rounded UP once to a whole micro-credit (money.py).

Requests reach holds and charges through the accounting writer (writer.py, batch.py). The
`reserve` / `extend` / `settle` functions here apply the same rules at once on the calling
thread, for scripts and tests. Every balance change locks the account first (PostgreSQL:
SELECT ... FOR UPDATE; SQLite: the file lock, then BEGIN IMMEDIATE), so concurrent workers and
hosts never lose an update. A balance is negative only when a charge exceeded what was left
(see batch.py): the full cost is always charged, and the next grant repays that debt first.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peewee import fn

from gateway.accounting.batch import apply_batch
from gateway.accounting.book import Book, draw_plan
from gateway.accounting.money import MICRO, Price, to_credits, to_micro
from gateway.accounting.operations import Admission, Extension, Operation, Settlement
from gateway.accounting.statements import Statements
from gateway.accounting.writelock import locked_write
from gateway.db import database
from gateway.errors import InsufficientBalance, InvalidRequest
from gateway.tables import Account, ApiKey, CreditGrant, LedgerEntry, Reservation, utcnow

__all__ = ["MICRO", "Price", "draw_plan", "to_credits", "to_micro"]
EXPIRING_WINDOW = datetime.timedelta(days=7)


def apply_now(operations: Sequence[Operation], now: datetime.datetime | None = None) -> list[Any]:
    """Apply accounting operations at once on this thread, in one locked transaction."""
    db = database.obj
    with locked_write(db):
        return apply_batch(Statements(db), operations, now or utcnow())


def reserve(key: ApiKey, amount: int, request_id: str, ttl_s: int, now: datetime.datetime | None = None) -> int | None:
    """Hold `amount` for a request or raise 402; returns the reservation id (None when free)."""
    if amount <= 0:
        return None
    [admitted] = apply_now([Admission(key.account_id, key.id, key.spend_limit, amount, request_id, ttl_s,
                                      limit_reset=key.limit_reset)], now)
    if admitted.refusal:
        raise InsufficientBalance(admitted.refusal)
    return admitted.reservation_id


def extend(key: ApiKey, reservation_id: int, amount: int, now: datetime.datetime | None = None) -> None:
    """Grow an open reservation by `amount` (a further loop turn) or raise 402."""
    [refusal] = apply_now([Extension(key.account_id, key.id, key.spend_limit, reservation_id, amount,
                                     limit_reset=key.limit_reset)], now)
    if refusal:
        raise InsufficientBalance(refusal)


def settle(account_id: int, key_id: int | None, reservation_id: int | None, cost: int, request_id: str,
           now: datetime.datetime | None = None) -> int:
    """Close the reservation and charge the full cost; returns the charge (0 if it was already settled)."""
    [charged] = apply_now([Settlement(account_id, key_id, reservation_id, cost, request_id)], now)
    return charged


def lock_account(account_id: int) -> None:
    """Serialise writers of one account (SQLite's write lock already does)."""
    Statements(database.obj).lock_accounts([account_id])


def expire_due(account_id: int, now: datetime.datetime) -> None:
    """Move what expired grants still hold into `expiry` ledger rows (inside a locked write)."""
    book = Book(Statements(database.obj), now)
    book.account(account_id)
    book.flush()


def balance_of(account_id: int) -> int:
    """Micro-credits left in grants (negative while in debt; call after expire_due)."""
    return CreditGrant.select(fn.COALESCE(fn.SUM(CreditGrant.remaining), 0)).where(
        CreditGrant.account == account_id
    ).scalar()


def reserved_by(account_id: int, key_id: int | None = None) -> int:
    """Micro-credits held by open reservations of an account (or of one key)."""
    query = Reservation.select(fn.COALESCE(fn.SUM(Reservation.amount), 0)).where(
        Reservation.account == account_id, Reservation.status == "open"
    )
    if key_id is not None:
        query = query.where(Reservation.api_key == key_id)
    return query.scalar()


def grant_credits(
    account_id: int, amount: int, expires_at: datetime.datetime | None = None, source: str = "grant"
) -> CreditGrant:
    """Add micro-credits to an account, with an optional expiry; a debt is repaid from them first."""
    if amount <= 0:
        raise InvalidRequest("A grant must be a positive amount.", param="amount")
    with locked_write():
        lock_account(account_id)
        left = amount
        for debt in CreditGrant.select().where(CreditGrant.account == account_id, CreditGrant.remaining < 0):
            repaid = min(-debt.remaining, left)
            CreditGrant.update(remaining=CreditGrant.remaining + repaid).where(CreditGrant.id == debt.id).execute()
            left -= repaid
        grant = CreditGrant.create(account=account_id, amount=amount, remaining=left,
                                   expires_at=expires_at, source=source)
        LedgerEntry.create(account=account_id, kind="grant", amount=amount, note=f"grant {grant.id} ({source})")
    return grant


@dataclass(frozen=True)
class BalanceSummary:
    """What the balance views show, in micro-credits."""

    balance: int
    reserved: int
    total_earned: int
    total_spent: int
    expiring_soon: int
    next_expiration: datetime.datetime | None


def summarize(account: Account, now: datetime.datetime | None = None) -> BalanceSummary:
    """Balance, totals and expiring credits of an account (expires what is due first)."""
    now = now or utcnow()
    with locked_write():
        lock_account(account.id)
        expire_due(account.id, now)
    live = CreditGrant.select().where(CreditGrant.account == account.id, CreditGrant.remaining > 0)
    expiring = [g for g in live if g.expires_at is not None]
    totals = dict(
        LedgerEntry.select(LedgerEntry.kind, fn.SUM(LedgerEntry.amount))
        .where(LedgerEntry.account == account.id)
        .group_by(LedgerEntry.kind)
        .tuples()
    )
    return BalanceSummary(
        balance=balance_of(account.id),
        reserved=reserved_by(account.id),
        total_earned=int(totals.get("grant", 0)),
        total_spent=int(totals.get("charge", 0)),
        expiring_soon=sum(g.remaining for g in expiring if g.expires_at <= now + EXPIRING_WINDOW),
        next_expiration=min((g.expires_at for g in expiring), default=None),
    )


def credit_balance(account: Account) -> dict[str, Any]:
    """MCPHub's credit-balance figures of an account, in credits (the API's body and the dashboard's page)."""
    summary = summarize(account)
    return {
        "user_id": str(account.id),
        "current_balance": to_credits(summary.balance),
        "total_earned": to_credits(summary.total_earned),
        "total_spent": to_credits(summary.total_spent),
        "tier": account.tier,
        "expiring_credits": to_credits(summary.expiring_soon),
        "next_expiration": summary.next_expiration.isoformat(timespec="seconds") if summary.next_expiration else "",
    }


def ledger_of(account_id: int, limit: int = 100) -> list[LedgerEntry]:
    """An account's latest credit movements, newest first."""
    return list(LedgerEntry.select().where(LedgerEntry.account == account_id)
                .order_by(LedgerEntry.id.desc()).limit(limit))
