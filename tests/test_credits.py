"""Billing: exact pricing, grant order, the reservation state machine, debts, expiry and sweeping."""

from __future__ import annotations

import datetime
import multiprocessing
import os
from decimal import Decimal

import pytest

from gateway import db
from gateway.accounting import credits
from gateway.accounting.credits import Price, draw_plan, to_micro
from gateway.accounting.keys import create_key
from gateway.accounting.usage import Usage
from gateway.config import ModelSettings
from gateway.errors import InsufficientBalance
from gateway.tables import CreditGrant, LedgerEntry, Reservation, utcnow

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0)


@pytest.mark.parametrize(
    "credits,micro",
    [(1, 1_000_000), ("0.5", 500_000), (0.1, 100_000), ("0.0000005", 1), ("0.0000004", 0), (150.5, 150_500_000)],
)
def test_to_micro(credits, micro):
    assert to_micro(credits) == micro


@pytest.mark.parametrize(
    "prices,usage,cost",
    [
        ((0, 0, None), Usage(1000, 1000), 0),
        ((1, 2, None), Usage(10, 5), 20),                        # 10*1 + 5*2 micro-credits
        ((0.15, 0.6, None), Usage(1000, 100), 210),              # 150 + 60
        ((0.15, 0.6, None), Usage(1, 1), 1),                     # 0.75 rounds up once
        ((0.1, 0.1, None), Usage(3, 0), 1),                      # 0.3 -> 1, never 0.30000000000000004
        ((2, 8, 0.5), Usage(100, 10, cached_tokens=40), 60 * 2 + 40 * 0.5 + 80),
        ((3, 0, None), Usage(10, 0, cached_tokens=10), 30),      # cached price defaults to input price
    ],
)
def test_price_cost(prices, usage, cost):
    model = ModelSettings(provider="p", input_price_per_mtok=prices[0], output_price_per_mtok=prices[1],
                          cached_input_price_per_mtok=prices[2])
    assert Price.of(model).cost(usage) == cost
    assert isinstance(Price.of(model).input, Decimal)


LATER = NOW + datetime.timedelta(days=3)
SOONER = NOW + datetime.timedelta(days=1)


@pytest.mark.parametrize(
    "grants,amount,plan",
    [
        ([(1, 100, None), (2, 100, SOONER)], 50, [(2, 50)]),
        ([(1, 100, None), (2, 100, SOONER)], 150, [(2, 100), (1, 50)]),
        ([(1, 10, LATER), (2, 10, SOONER), (3, 10, None)], 25, [(2, 10), (1, 10), (3, 5)]),
        ([(1, 10, None), (2, 10, None)], 15, [(1, 10), (2, 5)]),
        ([(1, 0, SOONER), (2, 5, None)], 5, [(2, 5)]),
        ([(1, 5, None)], 9, [(1, 5)]),
        ([], 5, []),
    ],
)
def test_draw_plan_takes_soonest_expiring_first(grants, amount, plan):
    assert draw_plan(grants, amount) == plan


@pytest.fixture
def account_key(database_url):
    db.bind(database_url)
    db.upgrade()
    with db.database.connection_context():
        key, _ = create_key("payer")
    with db.database.connection_context():
        yield key


def ledger_totals(account_id: int) -> dict[str, int]:
    totals: dict[str, int] = {}
    for entry in LedgerEntry.select().where(LedgerEntry.account == account_id):
        totals[entry.kind] = totals.get(entry.kind, 0) + entry.amount
    return totals


def assert_books_balance(account_id: int) -> None:
    """grants - charges - expiries == balance, always (negative only while in debt)."""
    totals = ledger_totals(account_id)
    balance = credits.balance_of(account_id)
    assert totals.get("grant", 0) - totals.get("charge", 0) - totals.get("expiry", 0) == balance


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_reserve_settle_release(account_key):
    key = account_key
    credits.grant_credits(key.account_id, 1000)
    first = credits.reserve(key, 600, "r1", ttl_s=60)
    assert credits.reserved_by(key.account_id) == 600
    with pytest.raises(InsufficientBalance, match="may cost up to"):
        credits.reserve(key, 401, "r2", ttl_s=60)
    assert Reservation.select().count() == 1
    assert credits.settle(key.account_id, key.id, first, 250, "r1") == 250
    assert credits.settle(key.account_id, key.id, first, 250, "r1") == 0  # never twice
    assert credits.balance_of(key.account_id) == 750 and credits.reserved_by(key.account_id) == 0
    second = credits.reserve(key, 750, "r3", ttl_s=60)
    credits.settle(key.account_id, key.id, second, 0, "r3")  # upstream failed: release
    assert credits.balance_of(key.account_id) == 750
    assert_books_balance(key.account_id)


def test_free_requests_need_no_balance(account_key):
    assert credits.reserve(account_key, 0, "free", ttl_s=60) is None
    assert Reservation.select().count() == 0


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_charge_beyond_the_hold_is_charged_in_full_as_debt(account_key):
    key = account_key
    credits.grant_credits(key.account_id, 100)
    reservation = credits.reserve(key, 100, "r", ttl_s=60)
    assert credits.settle(key.account_id, key.id, reservation, 180, "r") == 180  # never cut to the balance
    assert credits.balance_of(key.account_id) == -80
    assert ledger_totals(key.account_id) == {"grant": 100, "charge": 180}
    assert_books_balance(key.account_id)
    with pytest.raises(InsufficientBalance, match=r"0\.0 are available"):
        credits.reserve(key, 1, "in-debt", ttl_s=60)
    credits.grant_credits(key.account_id, 50)  # repays the debt first
    assert credits.balance_of(key.account_id) == -30
    with pytest.raises(InsufficientBalance):
        credits.reserve(key, 1, "still-in-debt", ttl_s=60)
    grant = credits.grant_credits(key.account_id, 100, expires_at=utcnow() + datetime.timedelta(days=1))
    assert CreditGrant.get_by_id(grant.id).remaining == 70
    assert credits.balance_of(key.account_id) == 70 and credits.reserve(key, 70, "after-top-up", ttl_s=60)
    assert_books_balance(key.account_id)


def test_a_debt_survives_the_expiry_of_its_grant(account_key):
    key = account_key
    credits.grant_credits(key.account_id, 100, expires_at=NOW + datetime.timedelta(days=1))
    reservation = credits.reserve(key, 100, "r", ttl_s=60, now=NOW)
    credits.settle(key.account_id, key.id, reservation, 130, "r", now=NOW)
    later = credits.summarize(key.account, now=NOW + datetime.timedelta(days=2))
    assert later.balance == -30 and ledger_totals(key.account_id).get("expiry") is None
    assert_books_balance(key.account_id)


def test_key_spend_limit(account_key):
    key = account_key
    key.spend_limit = 300
    key.save()
    credits.grant_credits(key.account_id, 10_000)
    reservation = credits.reserve(key, 200, "a", ttl_s=60)
    with pytest.raises(InsufficientBalance, match="spend limit"):
        credits.reserve(key, 101, "b", ttl_s=60)
    credits.settle(key.account_id, key.id, reservation, 150, "a")
    credits.reserve(key, 150, "c", ttl_s=60)
    with pytest.raises(InsufficientBalance):
        credits.reserve(key, 1, "d", ttl_s=60)


def test_expired_credits_are_recorded_not_dropped(account_key):
    key = account_key
    credits.grant_credits(key.account_id, 500, expires_at=NOW + datetime.timedelta(days=2), source="promo")
    credits.grant_credits(key.account_id, 300)
    summary = credits.summarize(key.account, now=NOW)
    assert (summary.balance, summary.expiring_soon) == (800, 500)
    assert summary.next_expiration == NOW + datetime.timedelta(days=2)
    reservation = credits.reserve(key, 200, "r", ttl_s=60, now=NOW)
    credits.settle(key.account_id, key.id, reservation, 200, "r", now=NOW)
    assert CreditGrant.get(CreditGrant.source == "promo").remaining == 300  # drawn first
    later = credits.summarize(key.account, now=NOW + datetime.timedelta(days=3))
    assert (later.balance, later.total_earned, later.total_spent) == (300, 800, 200)
    assert ledger_totals(key.account_id)["expiry"] == 300
    assert_books_balance(key.account_id)


def test_stale_reservations_are_swept(account_key):
    key = account_key
    credits.grant_credits(key.account_id, 100)
    credits.reserve(key, 100, "stuck", ttl_s=30, now=NOW)
    with pytest.raises(InsufficientBalance):
        credits.reserve(key, 1, "blocked", ttl_s=30, now=NOW + datetime.timedelta(seconds=29))
    assert credits.reserve(key, 100, "after", ttl_s=30, now=NOW + datetime.timedelta(seconds=31))
    assert Reservation.get(Reservation.request_id == "stuck").status == "swept"


def reserve_then_die(url: str, key_id: int) -> None:
    from gateway.tables import ApiKey

    db.bind(url)
    with db.database.connection_context():
        credits.reserve(ApiKey.get_by_id(key_id), 100, "killed", ttl_s=10)
    os._exit(9)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_killed_worker_reservation_is_swept(account_key, database_url):
    key = account_key
    credits.grant_credits(key.account_id, 100)
    process = multiprocessing.get_context("spawn").Process(target=reserve_then_die, args=(database_url, key.id))
    process.start()
    process.join(60)
    assert process.exitcode == 9
    assert credits.reserved_by(key.account_id) == 100
    with pytest.raises(InsufficientBalance):
        credits.reserve(key, 100, "too-soon", ttl_s=10)
    assert credits.reserve(key, 100, "later", ttl_s=10, now=utcnow() + datetime.timedelta(seconds=11))
    assert_books_balance(key.account_id)
