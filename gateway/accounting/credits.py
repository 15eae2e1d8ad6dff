"""Credits in exact micro-credits: prices, grants, reserve -> settle, expiry and sweeping.

Amounts are integers of micro-credits (1 credit = 1,000,000). A price of P credits per
million tokens is P micro-credits per token; a request's cost is the sum over its input,
cached-input and output tokens, rounded UP once to a whole micro-credit. Every mutation runs
in one transaction that first locks the account (PostgreSQL: SELECT ... FOR UPDATE; SQLite:
BEGIN IMMEDIATE), so concurrent workers and hosts can neither overspend nor lose an update.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from peewee import fn

from gateway.config import ModelSettings
from gateway.db import database, is_sqlite, write_transaction
from gateway.errors import InsufficientBalance, InvalidRequest
from gateway.loop.events import Usage
from gateway.tables import Account, ApiKey, CreditGrant, LedgerEntry, Reservation, utcnow

MICRO = 1_000_000
EXPIRING_WINDOW = datetime.timedelta(days=7)


def to_micro(credits: Decimal | float | str) -> int:
    """Credits (as given by a person) to micro-credits, rounded half up."""
    value = Decimal(str(credits)) * MICRO
    if not value.is_finite():
        raise InvalidRequest("Credit amounts must be finite numbers.", param="amount")
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_credits(micro: int) -> float:
    """Micro-credits as the JSON number the API shows."""
    return micro / MICRO


@dataclass(frozen=True)
class Price:
    """Micro-credits per token (== credits per million tokens)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal

    @classmethod
    def of(cls, model: ModelSettings) -> Price:
        cached = model.input_price_per_mtok if model.cached_input_price_per_mtok is None else (
            model.cached_input_price_per_mtok
        )
        return cls(Decimal(str(model.input_price_per_mtok)), Decimal(str(model.output_price_per_mtok)),
                   Decimal(str(cached)))

    def cost(self, usage: Usage) -> int:
        """Micro-credits for this usage, rounded up once."""
        cached = min(usage.cached_tokens, usage.input_tokens)
        exact = (
            (usage.input_tokens - cached) * self.input
            + cached * self.cached_input
            + usage.output_tokens * self.output
        )
        return math.ceil(exact)


def draw_plan(grants: list[tuple[int, int, datetime.datetime | None]], amount: int) -> list[tuple[int, int]]:
    """Take `amount` from (id, remaining, expires_at) grants, soonest-expiring first."""
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


def lock_account(account_id: int) -> None:
    """Serialise writers of one account (SQLite's BEGIN IMMEDIATE already holds the lock)."""
    if not is_sqlite():
        database.execute_sql("SELECT id FROM account WHERE id = %s FOR UPDATE", (account_id,))


def expire_grants(account_id: int, now: datetime.datetime) -> None:
    """Move what expired grants still hold into `expiry` ledger rows (inside a locked transaction)."""
    expired = CreditGrant.select().where(
        CreditGrant.account == account_id, CreditGrant.remaining > 0, CreditGrant.expires_at <= now
    )
    for grant in expired:
        LedgerEntry.create(account=account_id, kind="expiry", amount=grant.remaining, created_at=now,
                           note=f"grant {grant.id} expired")
        CreditGrant.update(remaining=0).where(CreditGrant.id == grant.id).execute()


def sweep_reservations(account_id: int | None, now: datetime.datetime) -> int:
    """Release reservations whose holder never settled (a killed worker); returns how many.

    Called when an account looks short of credits, so stale holds never cause a 402.
    """
    query = Reservation.update(status="swept").where(
        Reservation.status == "open", Reservation.expires_at <= now
    )
    if account_id is not None:
        query = query.where(Reservation.account == account_id)
    return query.execute()


def balance_of(account_id: int) -> int:
    """Micro-credits left in unexpired grants (call after expire_grants)."""
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


def available_to(account_id: int) -> int:
    """Unexpired balance minus open reservations, in one query (call after expire_grants)."""
    held = Reservation.select(fn.COALESCE(fn.SUM(Reservation.amount), 0)).where(
        Reservation.account == account_id, Reservation.status == "open"
    )
    return CreditGrant.select(fn.COALESCE(fn.SUM(CreditGrant.remaining), 0) - held).where(
        CreditGrant.account == account_id
    ).scalar()


def spent_by_key(key_id: int) -> int:
    """Micro-credits ever charged to one key."""
    return LedgerEntry.select(fn.COALESCE(fn.SUM(LedgerEntry.amount), 0)).where(
        LedgerEntry.api_key == key_id, LedgerEntry.kind == "charge"
    ).scalar()


def grant_credits(
    account_id: int, amount: int, expires_at: datetime.datetime | None = None, source: str = "grant"
) -> CreditGrant:
    """Add micro-credits to an account, with an optional expiry."""
    if amount <= 0:
        raise InvalidRequest("A grant must be a positive amount.", param="amount")
    with write_transaction():
        lock_account(account_id)
        grant = CreditGrant.create(account=account_id, amount=amount, remaining=amount,
                                   expires_at=expires_at, source=source)
        LedgerEntry.create(account=account_id, kind="grant", amount=amount, note=f"grant {grant.id} ({source})")
    return grant


def reserve(key: ApiKey, amount: int, request_id: str, ttl_s: int, now: datetime.datetime | None = None) -> int | None:
    """Hold `amount` for a request or raise 402; returns the reservation id (None when free)."""
    if amount <= 0:
        return None
    now = now or utcnow()
    with write_transaction():
        lock_account(key.account_id)
        require_available(key, amount, now, "Insufficient balance: this request")
        reservation = Reservation.create(account=key.account_id, api_key=key.id, amount=amount,
                                         request_id=request_id, created_at=now,
                                         expires_at=now + datetime.timedelta(seconds=ttl_s))
    return reservation.id


def extend(key: ApiKey, reservation_id: int, amount: int, now: datetime.datetime | None = None) -> None:
    """Grow an open reservation by `amount` (a further loop turn) or raise 402."""
    if amount <= 0:
        return
    with write_transaction():
        lock_account(key.account_id)
        require_available(key, amount, now or utcnow(), "Insufficient balance to continue: the next model turn")
        Reservation.update(amount=Reservation.amount + amount).where(
            Reservation.id == reservation_id, Reservation.status == "open"
        ).execute()


def require_available(key: ApiKey, amount: int, now: datetime.datetime, what: str) -> None:
    """Raise 402 unless the account (and the key's spend limit) can hold `amount` more."""
    expire_grants(key.account_id, now)
    available = available_to(key.account_id)
    if available < amount and sweep_reservations(key.account_id, now):
        available = available_to(key.account_id)
    if available < amount:
        raise InsufficientBalance(
            f"{what} may cost up to {to_credits(amount)} credits and {to_credits(max(available, 0))} are available."
        )
    _check_key_limit(key, amount)


def _check_key_limit(key: ApiKey, amount: int) -> None:
    if key.spend_limit is None:
        return
    committed = spent_by_key(key.id) + reserved_by(key.account_id, key.id)
    if committed + amount > key.spend_limit:
        raise InsufficientBalance(
            f"This key's spend limit of {to_credits(key.spend_limit)} credits would be exceeded "
            f"(committed {to_credits(committed)}, this request may cost up to {to_credits(amount)})."
        )


def settle(account_id: int, key_id: int | None, reservation_id: int | None, cost: int, request_id: str,
           now: datetime.datetime | None = None) -> int:
    """Charge the actual cost and close the reservation; call inside write_transaction().

    Returns what was charged: never more than the balance, so it can never go below zero.
    A reservation already settled is not charged twice.
    """
    if reservation_id is None and cost <= 0:
        return 0
    now = now or utcnow()
    lock_account(account_id)
    if reservation_id is not None:
        closed = Reservation.update(status="settled").where(
            Reservation.id == reservation_id, Reservation.status.in_(["open", "swept"])
        ).execute()
        if not closed:
            return 0
    if cost <= 0:
        return 0
    expire_grants(account_id, now)
    grants = CreditGrant.select(CreditGrant.id, CreditGrant.remaining, CreditGrant.expires_at).where(
        CreditGrant.account == account_id, CreditGrant.remaining > 0
    )
    plan = draw_plan([(g.id, g.remaining, g.expires_at) for g in grants], cost)
    for grant_id, take in plan:
        CreditGrant.update(remaining=CreditGrant.remaining - take).where(CreditGrant.id == grant_id).execute()
    charged = sum(take for _, take in plan)
    if charged:
        LedgerEntry.create(account=account_id, api_key=key_id, kind="charge", amount=charged,
                           request_id=request_id, created_at=now)
    return charged


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
    with write_transaction():
        lock_account(account.id)
        expire_grants(account.id, now)
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
