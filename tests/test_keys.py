"""API keys: format, hashed storage, header forms, revocation, the admin API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway import db
from gateway.accounting import keys
from gateway.accounting.keycache import KeyCache
from gateway.tables import ApiKey

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


def test_key_format_and_digest():
    secret = keys.generate_key()
    assert re.fullmatch(r"sk-gw-[A-Za-z0-9_-]{43,}", secret)
    assert keys.digest(secret) == keys.digest(secret) != keys.digest(keys.generate_key())


@pytest.mark.parametrize(
    "headers,expected",
    [
        ({"Authorization": "Bearer abc"}, "abc"),
        ({"Authorization": "bearer  abc "}, "abc"),
        ({"X-API-Key": "abc"}, "abc"),
        ({"Authorization": "Basic abc"}, None),
        ({"Authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_presented_key(headers, expected):
    assert keys.presented_key(headers) == expected


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_no_key_is_stored_in_clear_text(client, make_key, database_url):
    secrets = [make_key(f"k{i}") for i in range(3)]
    with db.database.connection_context():
        rows = list(ApiKey.select().dicts())
    dumped = repr(rows)
    assert all(secret not in dumped for secret in secrets)
    assert {row["digest"] for row in rows} == {keys.digest(secret) for secret in secrets}
    if database_url.startswith("sqlite:///"):
        raw = Path(database_url.removeprefix("sqlite:///")).read_bytes()
        wal = Path(database_url.removeprefix("sqlite:///") + "-wal")
        raw += wal.read_bytes() if wal.exists() else b""
        assert all(secret[12:].encode() not in raw for secret in secrets)


def revoke(secret: str) -> None:
    with db.database.connection_context():
        keys.revoke_key(ApiKey.get(ApiKey.digest == keys.digest(secret)).id)


def test_a_key_revoked_through_this_process_is_refused_at_once(client, app, make_key):
    secret = make_key()
    headers = {"X-API-Key": secret}
    assert client.get("/v1/models", headers=headers).status_code == 200  # now cached
    with app.app_context():
        revoke(secret)
    answer = client.get("/v1/models", headers=headers)
    assert answer.status_code == 401 and answer.json["error"]["code"] == "invalid_api_key"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_revoked_elsewhere_is_refused_once_the_cache_entry_expires(client, app, make_key):
    clock = Clock()
    app.extensions[keys.CACHE] = KeyCache(2.0, clock=clock)
    secret = make_key()
    headers = {"X-API-Key": secret}
    assert client.get("/v1/models", headers=headers).status_code == 200
    revoke(secret)  # outside any app: another worker, or the CLI
    clock.now += 1.9
    assert client.get("/v1/models", headers=headers).status_code == 200
    clock.now += 0.1
    assert client.get("/v1/models", headers=headers).status_code == 401


def test_key_cache_expiry_size_bound_and_forgetting():
    clock = Clock()
    cache: KeyCache[int] = KeyCache(5.0, max_entries=2, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)  # evicts the oldest
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, 3)
    cache.forget(lambda value: value == 2)
    assert cache.get("b") is None and cache.get("c") == 3
    clock.now += 5
    assert cache.get("c") is None
    off: KeyCache[int] = KeyCache(0)
    off.put("a", 1)
    assert off.get("a") is None


def test_two_keys_without_account_are_two_tenants(client):
    with db.database.connection_context():
        first, _ = keys.create_key("a")
        second, _ = keys.create_key("b")
        shared, _ = keys.create_key("c", first.account)
    assert first.account_id != second.account_id
    assert shared.account_id == first.account_id


@pytest.fixture
def admin(monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "admin-secret")
    return {"Authorization": "Bearer admin-secret"}


def test_admin_key_lifecycle(client, admin):
    created = client.post("/admin/keys", json={"name": "svc", "tier": "premium", "rpm": 5}, headers=admin)
    assert created.status_code == 201
    secret = created.json["key"]
    assert created.json["prefix"] == secret[:12] and "digest" not in created.json
    assert client.get("/v1/models", headers={"X-API-Key": secret}).status_code == 200
    listed = client.get("/admin/keys", headers=admin).json["data"]
    assert [key["id"] for key in listed] == [created.json["id"]] and "key" not in listed[0]
    joined = client.post("/admin/keys", json={"name": "svc2", "account_id": created.json["account_id"]},
                         headers=admin)
    assert joined.json["account_id"] == created.json["account_id"]
    revoked = client.delete(f"/admin/keys/{created.json['id']}", headers=admin)
    assert revoked.json["revoked"] is True
    assert client.get("/v1/models", headers={"X-API-Key": secret}).status_code == 401


@pytest.mark.parametrize(
    "body,status,param",
    [
        ({"name": "x", "colour": "red"}, 400, "colour"),
        ({"name": ""}, 400, "name"),
        ({"name": "x", "tier": "gold"}, 400, "tier"),
        ({"name": "x", "account_id": 999}, 404, "account_id"),
    ],
)
def test_admin_validation(client, admin, body, status, param):
    answer = client.post("/admin/keys", json=body, headers=admin)
    assert answer.status_code == status and answer.json["error"]["param"] == param


def test_admin_wrong_token(client, admin):
    answer = client.get("/admin/keys", headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401
    assert client.delete("/admin/keys/12345", headers=admin).status_code == 404
