"""Every money field of every view and admin route is a JSON number, on SQLite and PostgreSQL.

PostgreSQL's SUM of a BIGINT is NUMERIC, a Decimal in Python, which Flask writes as a string;
`to_credits` is the one place amounts become the float the API shows.
"""

from __future__ import annotations

from typing import Any

import pytest

ADMIN = {"Authorization": "Bearer money-admin-token"}
# 11 input tokens x 100 + 7 output tokens x 3700 micro-credits = 0.0270 credits per chat
PRICED = {"test-model": {"provider": "fake", "input_price_per_mtok": 100, "output_price_per_mtok": 3700,
                         "max_output_tokens": 64}}
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7}
COST = 0.027


@pytest.fixture
def settings(make_settings, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN["Authorization"].removeprefix("Bearer "))
    return make_settings(models=PRICED)


def money_at(body: Any, path: str) -> Any:
    """The value at a dotted path (`data.usage`, `data.0.amount`)."""
    for part in path.split("."):
        body = body[int(part)] if isinstance(body, list) else body[part]
    return body


def assert_numbers(body: Any, paths: list[str], where: str) -> None:
    for path in paths:
        value = money_at(body, path)
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{where} {path} = {value!r}"


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_money_fields_are_json_numbers_on_both_databases(client, database_url):
    created = client.post("/admin/keys", json={"name": "payer", "credits": 1.5, "spend_limit": 0.75},
                          headers=ADMIN)
    assert created.status_code == 201, created.json
    account, user = created.json["account_id"], {"Authorization": f"Bearer {created.json['key']}"}
    assert_numbers(created.json, ["spend_limit"], "POST /admin/keys")
    granted = client.post(f"/admin/accounts/{account}/credits", json={"amount": 0.25, "expires_in_days": 2},
                          headers=ADMIN)
    assert_numbers(granted.json, ["balance", "reserved", "total_earned", "total_spent"], "grant")

    chat = client.post("/v1/chat/completions", json=CHAT, headers=user)
    assert chat.status_code == 200, chat.json
    assert_numbers(chat.json, ["usage.cost"], "chat")
    answered = client.post("/v1/responses", json={"model": "test-model", "input": "hi"}, headers=user)
    assert answered.status_code == 200, answered.json
    assert_numbers(answered.json, ["usage.cost"], "responses")
    assert chat.json["usage"]["cost"] == pytest.approx(COST)

    views: list[tuple[str, dict[str, str], list[str]]] = [
        ("/quota", user, ["balance", "remaining_quota", "used_quota"]),
        ("/api/v3/auth/credit-balance", user, ["current_balance", "total_earned", "total_spent",
                                               "expiring_credits"]),
        ("/api/v1/credits", user, ["data.total_credits", "data.total_usage"]),
        ("/api/v1/key", user, ["data.limit", "data.limit_remaining", "data.usage", "data.usage_daily",
                               "data.usage_weekly", "data.usage_monthly"]),
        (f"/admin/accounts/{account}", ADMIN, ["balance", "reserved", "total_earned", "total_spent"]),
        (f"/admin/accounts/{account}/ledger", ADMIN, ["data.0.amount", "data.1.amount", "data.2.amount"]),
        ("/admin/keys", ADMIN, ["data.0.spend_limit"]),
    ]
    for path, headers, fields in views:
        answer = client.get(path, headers=headers)
        assert answer.status_code == 200, (path, answer.json)
        assert_numbers(answer.json, fields, path)
    balance = client.get("/api/v3/auth/credit-balance", headers=user).json
    assert balance["current_balance"] == pytest.approx(1.75 - 2 * COST)
    assert balance["total_spent"] == pytest.approx(2 * COST)
    assert balance["expiring_credits"] == pytest.approx(0.25 - 2 * COST)  # spent soonest-expiring first
    patched = client.patch(f"/admin/keys/{created.json['id']}", json={"spend_limit": 2}, headers=ADMIN)
    assert_numbers(patched.json, ["spend_limit"], "PATCH /admin/keys")
