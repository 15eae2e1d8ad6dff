"""Concurrent stream caps per key and per account (429 rate_limit_error), released when a response closes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway import create_app, db, lifecycle
from gateway.accounting.keys import create_key
from gateway.accounting.streams import TENANTS, Caps, StreamSlots, TenantCount
from gateway.errors import RateLimited
from gateway.tables import ApiKey

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def test_slots_cap_keys_and_accounts_and_release_once() -> None:
    slots = StreamSlots(threads=64, share=1.0)
    caps = Caps(key=2, account=3, key_source="its key's", account_source="its account's")
    first = slots.acquire(1, 10, caps)
    slots.acquire(1, 10, caps)
    with pytest.raises(RateLimited, match="This key already has 2 streams open"):
        slots.acquire(1, 10, caps)
    slots.acquire(2, 10, caps)
    with pytest.raises(RateLimited, match="This key's account already has 3 streams open"):
        slots.acquire(3, 10, caps)
    slots.acquire(4, 20, caps)  # another account
    first()
    first()  # idempotent
    assert slots.open_streams(1) == 1
    slots.acquire(3, 10, caps)


NO_CAPS = Caps(None, None, "its key's", "its account's")
ALONE = Caps(None, None, "", "", shared=False)


def test_a_single_tenant_may_use_every_thread_and_one_of_several_its_share() -> None:
    slots = StreamSlots(threads=8, share=0.5)
    alone = [slots.acquire(1, 10, ALONE) for _ in range(8)]  # one account with live keys: every thread
    assert slots.open_streams(1) == 8
    for release in alone:
        release()
    for _ in range(4):
        slots.acquire(1, 10, NO_CAPS)
    with pytest.raises(RateLimited, match=r"holds 4 of this worker's 8 threads .*`\[limits\] stream_share` = 0.5"):
        slots.acquire(1, 10, NO_CAPS)
    slots.acquire(2, 20, NO_CAPS)  # another tenant still has threads
    own_limit = Caps(6, None, "", "")
    slots.acquire(1, 10, own_limit)  # a key's own limit replaces the share
    slots.acquire(1, 10, own_limit)
    with pytest.raises(RateLimited, match="This key already has 6 streams open"):
        slots.acquire(1, 10, own_limit)


def test_sibling_keys_share_their_account_share() -> None:
    slots = StreamSlots(threads=4, share=0.5)
    slots.acquire(1, 10, NO_CAPS)
    slots.acquire(2, 10, NO_CAPS)
    slots.acquire(3, 20, NO_CAPS)
    with pytest.raises(RateLimited, match="This key's account holds 2 of this worker's 4 threads") as refused:
        slots.acquire(4, 10, NO_CAPS)
    assert "set its own limit (its account's)" in refused.value.message


def test_a_worker_cap_bounds_every_key_together() -> None:
    slots = StreamSlots(threads=8, share=1.0, worker_cap=3, what="MCP tool calls")
    for key_id in (1, 2, 3):
        slots.acquire(key_id, key_id, NO_CAPS)
    with pytest.raises(RateLimited, match="This worker already has 3 MCP tool calls open") as refused:
        slots.acquire(4, 4, NO_CAPS)
    assert refused.value.code == "too_many_tool_calls"


@pytest.fixture
def settings(make_settings):
    return make_settings(limits={"max_streams_per_key": 2, "max_streams_per_account": 3})


def same_account_key(make_key: Callable[..., str], name: str, other_name: str) -> str:
    with db.database.connection_context():
        account_id = ApiKey.get(ApiKey.name == other_name).account_id
    return make_key(name, account=account_id)


def test_streams_past_a_cap_get_429_until_one_closes(client, make_key: Callable[..., str]) -> None:
    first = {"Authorization": f"Bearer {make_key('first')}"}
    sibling = {"Authorization": f"Bearer {same_account_key(make_key, 'sibling', 'first')}"}
    stranger = {"Authorization": f"Bearer {make_key('stranger')}"}
    held = [client.post(path, json=CHAT, headers=first)
            for path in ("/v1/chat/completions", "/api/v1/chat/completions")]
    assert [answer.status_code for answer in held] == [200, 200]

    refused = client.post("/v1/chat/completions", json=CHAT, headers=first)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json["error"]["type"] == "rate_limit_error"
    assert refused.json["error"]["code"] == "too_many_streams"
    assert client.post("/v1/responses", json={"model": "test-model", "input": "hi", "stream": True},
                       headers=first).status_code == 429
    assert client.post("/v1/chat/completions", json={**CHAT, "stream": False}, headers=first).status_code == 200

    held.append(client.post("/v1/chat/completions", json=CHAT, headers=sibling))
    assert held[-1].status_code == 200
    account_full = client.post("/v1/chat/completions", json=CHAT, headers=sibling)
    assert account_full.status_code == 429 and "account" in account_full.json["error"]["message"]
    assert client.post("/v1/chat/completions", json=CHAT, headers=stranger).status_code == 200

    held[0].close()
    again = client.post("/v1/chat/completions", json=CHAT, headers=first)
    assert again.status_code == 200
    for answer in [*held, again]:
        answer.close()


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_the_tenant_share_applies_once_the_gateway_serves_several_tenants(make_settings) -> None:
    app = create_app(make_settings(server={"threads": 4}))  # the share: 3 of 4 threads
    db.upgrade()
    app.extensions[TENANTS] = TenantCount(ttl_s=0)  # read the tenant count at every stream
    try:
        client = app.test_client()
        with db.database.connection_context():
            _, solo = create_key("solo app")
        headers = {"Authorization": f"Bearer {solo}"}
        held = [client.post("/v1/chat/completions", json=CHAT, headers=headers) for _ in range(4)]
        assert [answer.status_code for answer in held] == [200] * 4  # a single tenant: every thread
        for answer in held:
            answer.close()
        with db.database.connection_context():
            create_key("another tenant")
        held = [client.post("/v1/chat/completions", json=CHAT, headers=headers) for _ in range(4)]
        assert [answer.status_code for answer in held] == [200, 200, 200, 429]
        assert "`[limits] stream_share` = 0.75" in held[-1].json["error"]["message"]
        for answer in held:
            answer.close()
    finally:
        lifecycle.close(app)
