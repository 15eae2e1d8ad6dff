"""Two gateway instances (two gunicorn masters) on one PostgreSQL share keys, balances, limits and responses."""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.tables import ApiKey
from tests.live_gateway import live_gateway

OUTPUT_TOKENS = 7  # what the fake upstream reports for every answer
PRICE = 1_000_000  # credits per 1M output tokens: one credit per token
BALANCE_FOR = 150  # requests the balance pays for, exactly
CONCURRENT = 200
RPM = 30
KEY_CACHE_TTL_S = 1.0
ADMIN_TOKEN = "two-hosts-admin"
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL")
PRICED = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": OUTPUT_TOKENS}


def new_key(grant: int = 0, **options) -> tuple[int, str]:
    """A key of a new account holding `grant` credits: (key id, secret)."""
    with db.database.connection_context(), db.database.atomic():
        key, secret = create_key("two-hosts", **options)
        if grant:
            credits.grant_credits(key.account_id, credits.to_micro(grant))
    return key.id, secret


def post(base: str, path: str, secret: str, body: dict) -> requests.Response:
    return requests.post(f"{base}{path}", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {secret}", "Connection": "close"})


def start_of_a_minute() -> None:
    """Rate windows are calendar minutes: begin a burst well inside one."""
    if time.time() % 60 > 45:
        time.sleep(60.5 - time.time() % 60)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("backend", ["database", "redis"])
def test_two_hosts_share_state(tmp_path, database_url, fake_upstream, backend, monkeypatch):
    if backend == "redis" and not REDIS_URL:
        pytest.skip("GATEWAY_TEST_REDIS_URL is not set")
    db.bind(database_url)
    db.upgrade()
    limits = {"backend": backend, **({"url": REDIS_URL} if backend == "redis" else {})}
    tables = {
        "server": {"workers": 2, "threads": 16},
        "database": {"url": database_url},
        "auth": {"key_cache_ttl_s": KEY_CACHE_TTL_S},
        "admin": {"token_env": "TWO_HOSTS_ADMIN_TOKEN"},  # live_gateway passes no GATEWAY_* variable on
        "limits": limits,
        "providers": {"fake": {"base_url": fake_upstream.base_url}},
        "models": {"paid-model": {"provider": "fake", "output_price_per_mtok": PRICE},
                   "free-model": {"provider": "fake"}},
    }
    monkeypatch.setenv("TWO_HOSTS_ADMIN_TOKEN", ADMIN_TOKEN)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with contextlib.ExitStack() as stack:
        hosts = [f"http://127.0.0.1:{stack.enter_context(live_gateway(tmp_path / name, tables)).port}"
                 for name in ("a", "b")]
        a, b = hosts
        continue_a_response_on_the_other_host(a, b, fake_upstream)
        revoke_on_one_host_refused_on_the_other(a, b)
        spend_a_balance_exactly_from_both(hosts)
        limit_requests_exactly_across_both(hosts)


def continue_a_response_on_the_other_host(a: str, b: str, fake_upstream) -> None:
    _, secret = new_key(grant=1000)
    first = post(a, "/v1/responses", secret, {"model": "paid-model", "input": "Remember 42.", "max_output_tokens": 50})
    assert first.status_code == 200, first.text
    follow = post(b, "/v1/responses", secret, {"model": "paid-model", "input": "Which number?",
                                              "previous_response_id": first.json()["id"], "max_output_tokens": 50})
    assert follow.status_code == 200, follow.text
    assert follow.json()["previous_response_id"] == first.json()["id"]
    sent = [str(message.get("content")) for message in fake_upstream.bodies()[-1]["messages"]]
    assert any("Remember 42." in content for content in sent)  # B sent A's turn upstream


def revoke_on_one_host_refused_on_the_other(a: str, b: str) -> None:
    key_id, secret = new_key()
    models = [requests.get(f"{b}/v1/models", headers={"X-API-Key": secret, "Connection": "close"}, timeout=10)
              for _ in range(6)]
    assert {response.status_code for response in models} == {200}  # cached by B's workers now
    revoked = requests.delete(f"{a}/admin/keys/{key_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                              timeout=10)
    assert revoked.status_code == 200
    time.sleep(KEY_CACHE_TTL_S + 0.2)  # the documented delay: [auth] key_cache_ttl_s
    after = [requests.get(f"{b}/v1/models", headers={"X-API-Key": secret, "Connection": "close"}, timeout=10)
             for _ in range(6)]
    assert {response.status_code for response in after} == {401}


def spend_a_balance_exactly_from_both(hosts: list[str]) -> None:
    key_id, secret = new_key(grant=OUTPUT_TOKENS * BALANCE_FOR)
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda index: post(hosts[index % 2], "/v1/chat/completions", secret,
                                                    PRICED).status_code, range(CONCURRENT)))
    assert statuses.count(200) == BALANCE_FOR and statuses.count(402) == CONCURRENT - BALANCE_FOR
    with db.database.connection_context():
        account = ApiKey.get_by_id(key_id).account_id
        assert credits.balance_of(account) == 0


def limit_requests_exactly_across_both(hosts: list[str]) -> None:
    _, secret = new_key(rpm=RPM)
    free = {**PRICED, "model": "free-model"}
    start_of_a_minute()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda index: post(hosts[index % 2], "/v1/chat/completions", secret,
                                                    free).status_code, range(RPM + 20)))
    assert statuses.count(200) == RPM and statuses.count(429) == 20
