"""A batch decides its operations exactly as one transaction each would, on SQLite and PostgreSQL."""

from __future__ import annotations

import random

import pytest

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.accounting.operations import Admission, Extension, Settlement, UsageRow
from gateway.accounting.ratelimit import WindowAsk, WindowCounts
from gateway.tables import CreditGrant, LedgerEntry, RateWindow, Reservation, UsageEntry

both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
WINDOW = 1_700_000_040


@pytest.fixture
def keys(database_url):
    """Two keys of one account and one key of another, inside an open connection."""
    db.bind(database_url)
    db.upgrade()
    with db.database.connection_context():
        first, _ = create_key("a")
        second, _ = create_key("b", first.account)
        other, _ = create_key("c")
        yield first, second, other


def admission(key, amount: int, ask: WindowAsk | None = None, spend_limit: int | None = None) -> Admission:
    return Admission(key.account_id, key.id, spend_limit, amount, f"r-{random.random()}", 60, ask)


def settlement(key, reservation_id: int | None, cost: int) -> Settlement:
    row = UsageRow("r", "chat/completions", "m", 1, 2, False, 200, 5)
    return Settlement(key.account_id, key.id, reservation_id, cost, "r", row)


def books(account_id: int) -> tuple:
    held = credits.reserved_by(account_id)
    charged = sum(e.amount for e in LedgerEntry.select().where(LedgerEntry.account == account_id,
                                                               LedgerEntry.kind == "charge"))
    return credits.balance_of(account_id), held, charged


@both_databases
def test_holds_and_settlements_in_one_batch_see_each_other(keys):
    first, second, other = keys
    credits.grant_credits(first.account_id, 100)
    credits.grant_credits(other.account_id, 10)
    [a] = credits.apply_now([admission(first, 60)])
    answers = credits.apply_now([
        admission(second, 60),              # 40 available: refused
        settlement(first, a.reservation_id, 50),
        admission(second, 50),              # balance 50, nothing held: fits
        admission(other, 10),               # another account, its own balance
        admission(first, 1),                # all 50 held now
        settlement(first, a.reservation_id, 50),  # settled already: never twice
    ])
    assert "may cost up to 6e-05 credits and 4e-05 are available" in answers[0].refusal
    assert answers[1] == 50 and answers[5] == 0
    assert answers[2].refusal is None and answers[2].reservation_id
    assert answers[3].refusal is None and answers[4].refusal
    assert books(first.account_id) == (50, 50, 50)
    assert books(other.account_id) == (10, 10, 0)
    assert UsageEntry.select().count() == 2 and {row.cost for row in UsageEntry.select()} == {50, 0}


@both_databases
def test_one_batch_decides_like_one_transaction_per_operation(keys):
    first, second, _ = keys
    rng = random.Random(7)
    amounts = [rng.randint(1, 40) for _ in range(40)]
    costs = [rng.randint(0, 60) for _ in range(40)]  # some exceed their hold: debt
    payers = [rng.choice((first, second)) for _ in range(20)]
    results = []
    for batched in (True, False):
        Reservation.delete().execute()
        LedgerEntry.delete().execute()
        CreditGrant.delete().execute()
        credits.grant_credits(first.account_id, 500)
        admissions = [admission(payer, amount) for payer, amount in zip(payers, amounts, strict=False)]
        admitted = apply(admissions, batched)
        mixed = []
        for index, answer in enumerate(admitted):
            mixed.append(settlement(first, answer.reservation_id, costs[index] if answer.reservation_id else 0))
            mixed.append(admission(second, amounts[20 + index]))
        later = apply(mixed, batched)
        refusals = [answer.refusal is None for answer in admitted + later[1::2]]
        results.append((refusals, later[0::2], books(first.account_id)))
    assert results[0] == results[1]


def apply(operations, batched: bool) -> list:
    if batched:
        return credits.apply_now(operations)
    return [credits.apply_now([operation])[0] for operation in operations]


@both_databases
def test_rate_windows_count_exactly_within_a_batch(keys):
    first, second, _ = keys
    ask = WindowAsk(first.id, WINDOW, rpm=3, tpm=100, needed=10, reset_s=20.0)
    answers = credits.apply_now([admission(first, 0, ask) for _ in range(5)])
    assert [a.rate_limited for a in answers] == [False, False, False, True, True]
    assert [a.counts for a in answers[:3]] == [WindowCounts(1, 0), WindowCounts(2, 0), WindowCounts(3, 0)]
    tokens = Settlement(first.account_id, first.id, None, 0, "t", None, tokens=95, token_window=WINDOW)
    wide = WindowAsk(first.id, WINDOW, rpm=10, tpm=100, needed=10, reset_s=20.0)
    answers = credits.apply_now([tokens, admission(first, 0, wide), admission(second, 0, ask)])
    assert answers[1].rate_limited and answers[1].counts == WindowCounts(3, 95)
    assert not answers[2].rate_limited  # the other key's window
    row = RateWindow.get(RateWindow.key_id == first.id)
    assert (row.requests, row.tokens) == (3, 95)


@both_databases
def test_spend_limit_and_extension_within_a_batch(keys):
    first, _, _ = keys
    credits.grant_credits(first.account_id, 1000)
    [held] = credits.apply_now([admission(first, 100, spend_limit=300)])
    answers = credits.apply_now([
        Extension(first.account_id, first.id, 300, held.reservation_id, 150),
        Extension(first.account_id, first.id, 300, held.reservation_id, 51),  # 250 + 51 > 300
        admission(first, 50, spend_limit=300),
        settlement(first, held.reservation_id, 120),
        admission(first, 130, spend_limit=300),  # 120 spent + 50 held + 130 = 300
    ])
    assert answers[0] is None and "spend limit" in answers[1]
    assert answers[2].refusal is None and answers[3] == 120 and answers[4].refusal is None
    assert Reservation.get_by_id(held.reservation_id).amount == 250
    assert books(first.account_id) == (880, 180, 120)


def test_a_debt_lands_on_an_overdraft_row_when_no_grant_is_left(keys):
    first, _, _ = keys
    credits.grant_credits(first.account_id, 10)
    [held] = credits.apply_now([admission(first, 10)])
    credits.apply_now([settlement(first, held.reservation_id, 10)])
    [charged] = credits.apply_now([settlement(first, None, 7)])
    assert charged == 7 and credits.balance_of(first.account_id) == -7
    assert CreditGrant.select().where(CreditGrant.remaining < 0).count() == 1
