"""Hostile inputs: each is a clear 4xx before any hold, the output cap always reaches the upstream."""

from __future__ import annotations

import logging
import sys

import pytest

from gateway import db
from gateway.accounting.credits import grant_credits
from gateway.accounting.keys import set_mcp_servers
from gateway.accounting.mcp_allow_list import encode_allow_list
from gateway.tables import ApiKey, Reservation, UsageEntry
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.scripted_model import ScriptedModel

PAID = {"provider": "fake", "input_price_per_mtok": 1000, "output_price_per_mtok": 1000, "max_output_tokens": 64}
ADMIN_TOKEN = "admin-secret-123"


@pytest.fixture
def settings(make_settings):
    return make_settings(
        models={"paid-model": PAID},
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER], "scopes": ["acme"]}},
        profiles={"acme/default": {"mcp_servers": ["tools"]}},
        mcp={"default_profile": "acme/default", "tool_timeout_s": 3},
    )


@pytest.fixture
def payer(make_key) -> dict[str, str]:
    secret = make_key("payer", scope="acme")
    with db.database.connection_context():
        grant_credits(ApiKey.get(ApiKey.name == "payer").account_id, 10_000_000)
    return {"X-API-Key": secret}


def nothing_held_or_recorded() -> bool:
    with db.database.connection_context():
        return not Reservation.select().exists() and not UsageEntry.select().exists()


@pytest.mark.parametrize("path,extra,param", [
    ("/v1/chat/completions", {"stream": "true"}, "stream"),
    ("/v1/chat/completions", {"stream": 1}, "stream"),
    ("/v1/chat/completions", {"stream": True, "stream_options": "x"}, "stream_options"),
    ("/v1/chat/completions", {"tools": "auto", "stream": True, "stream_options": 3}, "stream_options"),
    ("/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": "yes"}},
     "stream_options.include_usage"),
    ("/v1/completions", {"prompt": "x", "stream": True, "stream_options": "x"}, "stream_options"),
    ("/v1/chat/completions", {"max_tokens": -1}, "max_tokens"),
    ("/v1/chat/completions", {"max_completion_tokens": "10"}, "max_completion_tokens"),
    ("/v1/chat/completions", {"n": 0}, "n"),
])
def test_malformed_stream_and_cap_fields_are_400_before_any_hold(client, payer, path, extra, param):
    body = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], **extra}
    answer = client.post(path, json=body, headers=payer)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["param"] == param
    assert nothing_held_or_recorded()


@pytest.mark.parametrize("body,sent_field,cap", [
    ({}, "max_tokens", 64),                                # the model's cap, as the hold assumed
    ({"max_tokens": 10}, "max_tokens", 10),
    ({"max_completion_tokens": 12}, "max_completion_tokens", 12),
    ({"max_output_tokens": 1}, "max_tokens", 1),           # not a chat field: mapped, not forwarded
])
def test_the_upstream_always_receives_the_cap_the_hold_assumed(client, payer, fake_upstream, body, sent_field,
                                                                cap):
    request = {"model": "paid-model", "messages": [{"role": "user", "content": "y " * 200}], **body}
    assert client.post("/v1/chat/completions", json=request, headers=payer).status_code == 200
    sent = fake_upstream.bodies()[-1]
    assert sent[sent_field] == cap
    assert not {"max_tokens", "max_completion_tokens", "max_output_tokens"} - {sent_field} & set(sent)


def test_tool_loops_send_the_loop_total_as_the_cap(client, payer, fake_upstream):
    model = ScriptedModel([("mcp__tools__echo", {"text": "hi"})])
    fake_upstream.responder = model
    chat = client.post("/v1/chat/completions", headers=payer, json={
        "model": "paid-model", "messages": [{"role": "user", "content": "go"}], "tools": "auto"})
    assert chat.status_code == 200, chat.json
    assert [body["max_tokens"] for body in model.bodies] == [64, 64 - 5]
    response = client.post("/v1/responses", headers=payer, json={"model": "paid-model", "input": "go"})
    assert response.status_code == 200
    assert model.bodies[-1]["max_tokens"] == 64


def test_auth_comes_before_the_body(client, caplog):
    deep = "[" * 2000 + "]" * 2000
    with caplog.at_level(logging.ERROR):
        for body in (deep, "not json"):
            answer = client.post("/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 401 and answer.json["error"]["code"] == "invalid_api_key"
    assert "Traceback" not in caplog.text and not caplog.records


def test_a_deeply_nested_body_with_a_key_is_400(client, payer, caplog):
    with caplog.at_level(logging.ERROR):
        answer = client.post("/v1/chat/completions", data="[" * 100_000, headers=payer)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_json"
    assert not caplog.records


def outsider_key(make_key, client, who: str) -> str:
    """A key that may not use the `tools` server: of another scope, or narrowed to nothing."""
    if who == "another scope":
        return make_key("outsider", scope="other")
    secret = make_key("narrowed", scope="acme")  # a scope that allows `tools` ...
    with db.database.connection_context():  # ... and an allow-list that allows nothing
        settings = client.application.extensions["gateway.settings"]
        set_mcp_servers(ApiKey.get(ApiKey.name == "narrowed"), encode_allow_list(settings, []))
    return secret


@pytest.mark.parametrize("who", ["another scope", "an empty allow-list"])
def test_builtin_servers_a_key_may_not_use_are_invisible_on_every_route(client, make_key, payer, fake_upstream, who):
    other = {"X-API-Key": outsider_key(make_key, client, who)}
    model = ScriptedModel([("mcp__tools__echo", {"text": "hi"})])
    fake_upstream.responder = model
    chat = client.post("/v1/chat/completions", headers=other, json={
        "model": "test-model", "messages": [{"role": "user", "content": "go"}], "tools": "auto"})
    assert chat.status_code == 200 and "tools" not in model.bodies[-1]
    declared = {"model": "test-model", "input": "go",
                "tools": [{"type": "mcp", "server_label": "tools", "require_approval": "never"}]}
    refused = client.post("/v1/responses", headers=other, json=declared)
    assert refused.status_code == 422 and refused.json["error"]["param"] == "tools[0].server_label"
    assert client.get("/v1/mcp/servers", headers=other).json["data"] == []
    assert client.get("/v1/mcp/servers/tools/tools", headers=other).status_code == 404
    assert [s["label"] for s in client.get("/v1/mcp/servers", headers=payer).json["data"]] == ["tools"]
    assert client.post("/v1/responses", headers=payer, json=declared).status_code == 200


@pytest.fixture
def admin(monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.parametrize("method,path,body,param", [
    ("post", "/admin/accounts/1/credits", {"amount": 1e13}, "amount"),
    ("post", "/admin/accounts/1/credits", {"amount": 1, "expires_in_days": 1e10}, "expires_in_days"),
    ("get", f"/admin/accounts/{10**23}", None, "account_id"),
    ("patch", f"/admin/keys/{10**23}", {"rpm": 5}, "key_id"),
    ("post", "/admin/keys", {"name": "x", "credits": 1e13}, "credits"),
    ("patch", "/admin/accounts/1", {"name": None}, "name"),  # NOT NULL columns: was a 500
    ("patch", "/admin/accounts/1", {"tier": None}, "tier"),
])
def test_absurd_admin_inputs_are_400(client, payer, admin, method, path, body, param):
    answer = getattr(client, method)(path, json=body, headers=admin)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["param"] == param


def test_the_admin_token_is_accepted_only_as_a_bearer_token(client, admin):
    assert client.get("/admin/keys", headers=admin).status_code == 200
    assert client.get("/admin/keys", headers={"X-API-Key": ADMIN_TOKEN}).status_code == 401
