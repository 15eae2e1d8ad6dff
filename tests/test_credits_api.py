"""Billing through HTTP: 402, usage.cost, faults, balance views, admin, and concurrency."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from gateway import db
from gateway.accounting import credits
from gateway.tables import ApiKey, LedgerEntry, Reservation, UsageEntry
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, chat_completion
from tests.live_gateway import live_gateway

PRICE_PER_TOKEN = 1000  # micro-credits per output token (output_price_per_mtok = 1000)
MAX_TOKENS = 10
COST = PRICE_PER_TOKEN * MAX_TOKENS  # every request below costs exactly its worst case
PAID = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}
PAID_MODEL = {"paid-model": {"provider": "fake", "output_price_per_mtok": PRICE_PER_TOKEN, "max_output_tokens": 50}}


def full_cost_responder(path, body):
    usage = {"prompt_tokens": 5, "completion_tokens": MAX_TOKENS, "total_tokens": 5 + MAX_TOKENS}
    return JsonReply(chat_completion(model=body["model"], usage=usage))


@pytest.fixture
def settings(make_settings):
    return make_settings(models=PAID_MODEL)


@pytest.fixture
def funded(app, make_key):
    """A key whose account can afford exactly 50 requests."""
    secret = make_key("payer")
    with db.database.connection_context():
        key = ApiKey.get(ApiKey.name == "payer")
        credits.grant_credits(key.account_id, 50 * COST)
    return secret, key.account_id


def books(account_id: int) -> dict:
    with db.database.connection_context():
        charges = [e.amount for e in LedgerEntry.select().where(LedgerEntry.account == account_id,
                                                                 LedgerEntry.kind == "charge")]
        return {
            "balance": credits.balance_of(account_id),
            "charged": sum(charges),
            "charges": len(charges),
            "open": Reservation.select().where(Reservation.status == "open").count(),
            "usage_cost": sum(row.cost for row in UsageEntry.select()),
        }


def test_empty_balance_is_402_and_upstream_never_called(client, make_key, fake_upstream):
    response = client.post("/v1/chat/completions", json=PAID, headers={"X-API-Key": make_key()})
    assert response.status_code == 402
    assert response.json["error"]["type"] == "insufficient_balance"
    assert response.json["error"]["code"] == "insufficient_balance"
    assert "0.01" in response.json["error"]["message"]
    assert fake_upstream.requests == []


def test_sdk_sees_402_as_api_status_error(live_server, make_key):
    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key=make_key(), max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**PAID)
    assert caught.value.status_code == 402


def test_free_models_need_no_credits(client, make_key):
    body = {**PAID, "model": "test-model"}
    assert client.post("/v1/chat/completions", json=body, headers={"X-API-Key": make_key()}).status_code == 200


def test_usage_cost_and_settlement(client, funded, fake_upstream):
    secret, account_id = funded
    fake_upstream.responder = full_cost_responder
    answer = client.post("/v1/chat/completions", json=PAID, headers={"X-API-Key": secret})
    assert answer.json["usage"]["cost"] == COST / 1_000_000
    assert answer.json["usage"]["completion_tokens"] == MAX_TOKENS
    assert books(account_id) == {"balance": 49 * COST, "charged": COST, "charges": 1, "open": 0,
                                 "usage_cost": COST}


def test_stream_usage_chunk_carries_cost(live_server, funded):
    secret, _ = funded
    response = requests.post(
        f"{live_server}/v1/chat/completions",
        json={**PAID, "stream": True, "stream_options": {"include_usage": True}},
        headers={"X-API-Key": secret}, stream=True, timeout=10,
    )
    chunks = [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True)
              if line.startswith("data: {")]
    assert chunks[-1]["usage"]["cost"] == 7 * PRICE_PER_TOKEN / 1_000_000


def test_upstream_failure_before_output_charges_nothing(client, funded, fake_upstream):
    secret, account_id = funded
    fake_upstream.responder = lambda path, body: JsonReply({"error": {"message": "down"}}, status=500)
    assert client.post("/v1/chat/completions", json=PAID, headers={"X-API-Key": secret}).status_code == 502
    assert books(account_id) == {"balance": 50 * COST, "charged": 0, "charges": 0, "open": 0, "usage_cost": 0}


def test_disconnect_mid_stream_charges_generated_tokens_only(live_server, funded, fake_upstream):
    secret, account_id = funded
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("abcdefgh"))] + [(0.05, chat_chunk("y"))] * 400
    )
    host, port = live_server.removeprefix("http://").split(":")
    payload = json.dumps({**PAID, "stream": True})
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"X-API-Key: {secret}\r\nContent-Length: {len(payload)}\r\n\r\n{payload}").encode())
        received = b""
        while b"abcdefgh" not in received:
            received += sock.recv(4096)
    assert fake_upstream.stream_aborted.wait(10)
    deadline = time.monotonic() + 10
    while books(account_id)["charges"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    state = books(account_id)
    with db.database.connection_context():
        row = UsageEntry.get()
    assert row.status == 499 and row.estimated
    assert state["charged"] == row.completion_tokens * PRICE_PER_TOKEN == row.cost
    assert 2 <= row.completion_tokens < MAX_TOKENS
    assert state["balance"] == 50 * COST - state["charged"] and state["open"] == 0


def test_balance_views(client, app, make_key, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "adm")
    admin = {"Authorization": "Bearer adm"}
    created = client.post("/admin/keys", json={"name": "alice", "credits": 200, "spend_limit": 30,
                                               "tier": "premium"}, headers=admin).json
    client.post(f"/admin/accounts/{created['account_id']}/credits",
                json={"amount": 10, "expires_in_days": 3, "source": "promo"}, headers=admin)
    headers = {"X-API-Key": created["key"]}
    quota = client.get("/quota", headers=headers).json
    assert quota == {"username": "alice", "balance": 210.0, "remaining_quota": 210.0, "used_quota": 0.0,
                     "thinking": {"enabled": False, "default_budget": 16000, "models": []}}
    balance = client.get("/api/v3/auth/credit-balance", headers=headers).json
    assert balance["user_id"] == str(created["account_id"]) and balance["tier"] == "premium"
    assert (balance["current_balance"], balance["total_earned"], balance["total_spent"]) == (210.0, 210.0, 0.0)
    assert balance["expiring_credits"] == 10.0 and balance["next_expiration"].startswith("20")
    key_view = client.get("/api/v1/key", headers=headers).json["data"]
    assert (key_view["limit"], key_view["limit_remaining"], key_view["usage"]) == (30.0, 30.0, 0.0)
    assert key_view["is_free_tier"] is False and key_view["label"].startswith("sk-gw-")
    assert client.get("/api/v1/credits", headers=headers).json == {"data": {"total_credits": 210.0,
                                                                           "total_usage": 0.0}}
    for path in ("/quota", "/api/v3/auth/credit-balance", "/api/v1/key", "/api/v1/credits"):
        assert client.get(path).status_code == 401


def test_admin_ledger_tier_and_limits(client, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "adm")
    admin = {"Authorization": "Bearer adm"}
    created = client.post("/admin/keys", json={"name": "bob"}, headers=admin).json
    account = created["account_id"]
    granted = client.post(f"/admin/accounts/{account}/credits", json={"amount": 5}, headers=admin)
    assert granted.status_code == 201 and granted.json["balance"] == 5.0
    assert client.post(f"/admin/accounts/{account}/credits", json={"amount": -1}, headers=admin).status_code == 400
    ledger = client.get(f"/admin/accounts/{account}/ledger", headers=admin).json["data"]
    assert [(entry["kind"], entry["amount"]) for entry in ledger] == [("grant", 5.0)]
    patched = client.patch(f"/admin/accounts/{account}", json={"tier": "enterprise"}, headers=admin).json
    assert patched["tier"] == "enterprise"
    key = client.patch(f"/admin/keys/{created['id']}", json={"rpm": 7, "spend_limit": 1.5}, headers=admin).json
    assert (key["rpm"], key["spend_limit"]) == (7, 1.5)
    cleared = client.patch(f"/admin/keys/{created['id']}", json={"spend_limit": None}, headers=admin).json
    assert cleared["spend_limit"] is None and cleared["rpm"] == 7
    assert client.get("/admin/accounts/999", headers=admin).status_code == 404


def test_cli_credits_grant(tmp_path, capsys, database_url):
    from gateway.cli import main

    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n')
    assert main(["keys", "create", "--name", "c", "--credits", "2.5", "--json", "--config", str(config)]) == 0
    created = json.loads(capsys.readouterr().out)
    assert main(["credits", "grant", str(created["account_id"]), "1.25", "--expires-in-days", "2",
                 "--config", str(config)]) == 0
    assert "balance 3.75" in capsys.readouterr().out
    assert main(["credits", "grant", "999", "1", "--config", str(config)]) == 1


def hammer(base_url: str, secret: str, count: int = 200) -> list[int]:
    def one(_: int) -> int:
        return requests.post(f"{base_url}/v1/chat/completions", json=PAID,
                             headers={"X-API-Key": secret}, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_200_concurrent_requests_afford_exactly_50(live_server, funded, fake_upstream):
    secret, account_id = funded
    fake_upstream.responder = full_cost_responder
    statuses = hammer(live_server, secret)
    assert statuses.count(200) == 50 and statuses.count(402) == 150
    assert books(account_id) == {"balance": 0, "charged": 50 * COST, "charges": 50, "open": 0,
                                 "usage_cost": 50 * COST}


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_several_gunicorn_workers_afford_exactly_50(tmp_path, database_url, fake_upstream, funded):
    secret, account_id = funded
    fake_upstream.responder = full_cost_responder
    config = (f'[database]\nurl = "{database_url}"\n'
              f'[providers.fake]\nbase_url = "{fake_upstream.base_url}"\n'
              f'[models.paid-model]\nprovider = "fake"\noutput_price_per_mtok = {PRICE_PER_TOKEN}\n')
    with live_gateway(tmp_path, config, workers=3, threads=8) as served:
        statuses = hammer(served.base_url, secret)
    assert statuses.count(200) == 50 and statuses.count(402) == 150
    assert books(account_id) == {"balance": 0, "charged": 50 * COST, "charges": 50, "open": 0,
                                 "usage_cost": 50 * COST}
