"""Budgets with periods: a key's limit that resets, account, per-model and tag budgets, enforced at admission.

Every request here costs exactly what it holds (no input price; the fake answers 7 completion tokens, the
model's output cap), so a budget worth N requests admits exactly N, however the requests interleave.
"""

from __future__ import annotations

import datetime
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from openrouter.operations.getcurrentkey import GetCurrentKeyData

from gateway import db
from gateway.accounting import budgets, credits
from gateway.accounting.budgets import Budget
from gateway.accounting.keys import create_key
from gateway.accounting.operations import Admission, Extension
from gateway.tables import ApiKey, LedgerEntry, Reservation
from gateway.tables import Budget as BudgetRow
from tests.live_gateway import live_gateway, toml_text

both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
OUTPUT_TOKENS = 7  # what the fake upstream reports, and the models' output cap
PRICE_PER_TOKEN = 1000  # micro-credits per output token
COST = OUTPUT_TOKENS * PRICE_PER_TOKEN  # what one request holds and is charged
PRICED = {"provider": "fake", "output_price_per_mtok": PRICE_PER_TOKEN, "max_output_tokens": OUTPUT_TOKENS}
MODELS = {"paid-model": {**PRICED, "upstream_model": "paid"}, "other-model": {**PRICED, "upstream_model": "other"}}
GRANT = 1000 * COST
LATE_SUNDAY = datetime.datetime(2026, 12, 6, 23, 59, 30)  # a Sunday: the day, the week and nearly the month end


class Clock:
    """The clock budgets and the accounting writer read, moved by the test."""

    def __init__(self, moment: datetime.datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime.datetime:
        return self.moment


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moving = Clock(LATE_SUNDAY)
    monkeypatch.setattr("gateway.accounting.budgets.now", moving)
    monkeypatch.setattr("gateway.accounting.writer.utcnow", moving)
    return moving


@pytest.fixture
def settings(make_settings):
    return make_settings(models=MODELS)


def chat(model: str = "paid-model") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def funded_keys(count: int, **limits: Any) -> list[tuple[ApiKey, str]]:
    """`count` keys of one new account granted GRANT micro-credits; `limits` set on each key."""
    with db.database.connection_context():
        first, secret = create_key("budgeted")
        made = [(first, secret)] + [create_key(f"budgeted-{n}", first.account) for n in range(1, count)]
        if limits:
            ApiKey.update(**limits).where(ApiKey.account == first.account_id).execute()
        credits.grant_credits(first.account_id, GRANT)
    return made


def add_budget(account_id: int, amount: int, period: str | None, **scope: Any) -> None:
    with db.database.connection_context():
        BudgetRow.create(account=account_id, amount=amount, period=period, **scope)


def send(client, secret: str, model: str = "paid-model", tags: str | None = None):
    headers = {"Authorization": f"Bearer {secret}"} | ({"X-Gateway-Tags": tags} if tags else {})
    return client.post("/v1/chat/completions", json=chat(model), headers=headers)


def statuses(client, secret: str, times: int, **options: Any) -> list[int]:
    return [send(client, secret, **options).status_code for _ in range(times)]


def charged(account_id: int) -> int:
    with db.database.connection_context():
        return sum(entry.amount for entry in LedgerEntry.select().where(
            LedgerEntry.account == account_id, LedgerEntry.kind == "charge"))


# -- the pure rules ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("period", "moment", "start", "reset"), [
    ("daily", LATE_SUNDAY, datetime.datetime(2026, 12, 6), datetime.datetime(2026, 12, 7)),
    ("weekly", LATE_SUNDAY, datetime.datetime(2026, 11, 30), datetime.datetime(2026, 12, 7)),  # Monday to Monday
    ("weekly", datetime.datetime(2026, 12, 7), datetime.datetime(2026, 12, 7), datetime.datetime(2026, 12, 14)),
    ("monthly", LATE_SUNDAY, datetime.datetime(2026, 12, 1), datetime.datetime(2027, 1, 1)),
    ("monthly", datetime.datetime(2027, 1, 31, 12), datetime.datetime(2027, 1, 1), datetime.datetime(2027, 2, 1)),
    (None, LATE_SUNDAY, None, None),
])
def test_periods_start_and_reset_in_utc(period, moment, start, reset):
    assert budgets.period_start(period, moment) == start
    assert budgets.next_reset(period, moment) == reset


def test_which_budgets_a_request_answers_to_and_how_a_refusal_names_them():
    key_limit = budgets.key_limit(1, 10, 5_000_000, "daily")
    rows = [Budget(1, 9, "monthly"), Budget(1, 9, "daily", key_id=10, model="m"), Budget(1, 9, "weekly", tag="t"),
            Budget(1, 9, "daily", key_id=11, model="m")]
    assert budgets.applicable([*rows, key_limit], 10, "m", ("t",)) == [key_limit, *rows[:3]]
    assert budgets.applicable(rows, 10, "other", ()) == rows[:1]
    assert key_limit.describe() == "the key's daily limit of 5.0 credits"
    assert budgets.key_limit(1, 10, 5_000_000, None).describe() == "the key's spend limit of 5.0 credits"
    assert rows[1].describe() == "the key's daily budget for model 'm' of 9e-06 credits"
    assert rows[2].describe() == "the tag 't''s weekly budget of 9e-06 credits"
    message = budgets.refusal(key_limit, 4_990_000, 20_000, LATE_SUNDAY, "This request")
    assert message == ("This request may cost up to 0.02 credits, which would pass the key's daily limit of 5.0 "
                       "credits (4.99 spent or held this day); it resets at 2026-12-07T00:00:00Z.")


@both_databases
def test_a_turn_answers_to_its_holds_budgets_and_a_dead_workers_hold_is_swept_when_it_decides(database_url):
    db.bind(database_url)
    db.upgrade()
    [(key, _)] = funded_keys(1)
    add_budget(key.account_id, 100, "daily", api_key=key.id, model="m")
    add_budget(key.account_id, 100, "daily", tag="t")

    def apply(operation, moment=LATE_SUNDAY):
        with db.database.connection_context():
            [answer] = credits.apply_now([operation], moment)
        return answer

    held = apply(Admission(key.account_id, key.id, None, 60, "a", 60, model="m"))
    assert held.refusal is None
    refusal = apply(Extension(key.account_id, key.id, None, held.reservation_id, 50))  # the hold's model: m
    assert refusal.startswith("The next model turn may cost up to 5e-05 credits, which would pass the key's daily "
                              "budget for model 'm' of 0.0001 credits (6e-05 spent or held this day)")
    assert apply(Extension(key.account_id, key.id, None, held.reservation_id, 40)) is None
    assert apply(Admission(key.account_id, key.id, None, 500, "b", 60, model="n")).refusal is None
    dead = apply(Admission(key.account_id, key.id, None, 100, "c", 1, tags=("t",)))  # its worker never settles
    assert "the tag 't''s daily budget" in apply(Admission(key.account_id, key.id, None, 1, "d", 60, tags=("t",))).refusal
    later = LATE_SUNDAY + datetime.timedelta(seconds=2)  # past the dead hold's TTL
    assert apply(Admission(key.account_id, key.id, None, 100, "e", 60, tags=("t",)), later).refusal is None
    with db.database.connection_context():
        assert Reservation.get_by_id(dead.reservation_id).status == "swept"


# -- the race, across gunicorn workers --------------------------------------------------------------------------

@both_databases
def test_a_daily_key_limit_worth_fifty_requests_admits_exactly_fifty_of_two_hundred_concurrent(
        tmp_path, database_url, fake_upstream):
    db.bind(database_url)
    db.upgrade()
    [(key, secret)] = funded_keys(1, spend_limit=50 * COST, limit_reset="daily")
    config = {"database": {"url": database_url}, "providers": {"fake": {"base_url": fake_upstream.base_url}},
              "models": MODELS}
    with live_gateway(tmp_path, toml_text(config), workers=2, threads=32) as served:
        def one(_: int) -> tuple[int, str]:
            answer = requests.post(f"{served.base_url}/v1/chat/completions", json=chat(), timeout=60,
                                   headers={"Authorization": f"Bearer {secret}"})
            return answer.status_code, answer.text

        with ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(one, range(200)))
        key_view = requests.get(f"{served.base_url}/api/v1/key", headers={"Authorization": f"Bearer {secret}"},
                                timeout=10).json()["data"]
    counted = Counter(status for status, _ in answers)
    print(f"\n{database_url.split(':')[0]}: 200 concurrent requests against a daily limit worth 50: {dict(counted)}")
    assert counted == {200: 50, 402: 150}
    tomorrow = budgets.iso_utc(budgets.next_reset("daily", budgets.now()))
    refusal = next(text for status, text in answers if status == 402)
    assert "the key's daily limit of 0.35 credits" in refusal and f"it resets at {tomorrow}" in refusal
    assert charged(key.account_id) == 50 * COST
    with db.database.connection_context():
        assert Reservation.select().where(Reservation.status == "open").count() == 0
    assert (key_view["limit"], key_view["limit_remaining"], key_view["limit_reset"]) == (0.35, 0.0, "daily")


# -- periods that reset, in process with a moving clock ---------------------------------------------------------

@both_databases
def test_moving_the_clock_past_midnight_utc_lets_the_key_spend_again(client, clock):
    [(key, secret)] = funded_keys(1, spend_limit=3 * COST, limit_reset="daily")
    assert statuses(client, secret, 4) == [200, 200, 200, 402]
    refused = send(client, secret).json["error"]
    assert refused["code"] == "insufficient_balance"
    assert "the key's daily limit of 0.021 credits" in refused["message"]
    assert "it resets at 2026-12-07T00:00:00Z" in refused["message"]
    view = client.get("/api/v1/key", headers={"Authorization": f"Bearer {secret}"}).json["data"]
    assert (view["limit"], view["limit_remaining"], view["limit_reset"], view["usage_daily"]) == (0.021, 0, "daily",
                                                                                                   0.021)
    GetCurrentKeyData.model_validate(view)  # typed as OpenRouter's SDK types it
    clock.moment += datetime.timedelta(minutes=1)  # Monday 00:00:30
    assert statuses(client, secret, 4) == [200, 200, 200, 402]
    view = client.get("/api/v1/key", headers={"Authorization": f"Bearer {secret}"}).json["data"]
    assert (view["limit_remaining"], view["usage_daily"], view["usage"]) == (0, 0.021, 0.042)
    assert view["effective_budget"]["scope"] == "key_limit"
    assert view["effective_budget"]["resets_at"] == "2026-12-08T00:00:00Z"
    assert charged(key.account_id) == 6 * COST


@both_databases
def test_a_per_model_budget_caps_one_model_per_period(client, clock):
    [(key, secret)] = funded_keys(1)
    add_budget(key.account_id, 2 * COST, "daily", api_key=key.id, model="paid-model")
    assert statuses(client, secret, 3) == [200, 200, 402]
    message = send(client, secret).json["error"]["message"]
    assert "the key's daily budget for model 'paid-model' of 0.014 credits" in message
    assert "it resets at 2026-12-07T00:00:00Z" in message
    assert statuses(client, secret, 2, model="other-model") == [200, 200]  # another model is not capped
    view = client.get("/api/v1/key", headers={"Authorization": f"Bearer {secret}"}).json["data"]
    [model_budget] = view["budgets"]
    assert (model_budget["scope"], model_budget["model"], model_budget["remaining_usd"]) == ("model", "paid-model", 0)
    assert view["effective_budget"] is None  # it caps one model, not every request
    GetCurrentKeyData.model_validate(view)
    clock.moment += datetime.timedelta(minutes=1)
    assert statuses(client, secret, 3) == [200, 200, 402]


@both_databases
def test_an_account_budget_caps_every_key_of_the_account_per_period(client, clock):
    (first, one), (_, two) = funded_keys(2)
    add_budget(first.account_id, 3 * COST, "monthly")
    assert [send(client, secret).status_code for secret in (one, two, one, two)] == [200, 200, 200, 402]
    message = send(client, one).json["error"]["message"]
    assert "the account's monthly budget of 0.021 credits" in message
    assert "it resets at 2027-01-01T00:00:00Z" in message
    clock.moment += datetime.timedelta(days=1)  # Monday 7 December: the same month
    assert statuses(client, two, 1) == [402]
    clock.moment = datetime.datetime(2027, 1, 1, 0, 0, 1)
    assert [send(client, secret).status_code for secret in (two, one, two, one)] == [200, 200, 200, 402]
    assert charged(first.account_id) == 6 * COST


@both_databases
def test_a_tag_budget_caps_every_key_that_sends_the_tag(client, clock):
    (first, one), (_, two) = funded_keys(2)
    add_budget(first.account_id, 2 * COST, "weekly", tag="team-a")
    assert [send(client, secret, tags=tags).status_code
            for secret, tags in ((one, "team-a"), (two, "x,team-a"), (one, "team-a"), (two, "team-b"), (one, None))
            ] == [200, 200, 402, 200, 200]
    message = send(client, two, tags="team-a").json["error"]["message"]
    assert "the tag 'team-a''s weekly budget of 0.014 credits" in message
    assert "it resets at 2026-12-07T00:00:00Z" in message  # a Sunday: the week ends at midnight
    clock.moment += datetime.timedelta(minutes=1)
    assert statuses(client, one, 3, tags="team-a") == [200, 200, 402]
    assert charged(first.account_id) == 6 * COST
