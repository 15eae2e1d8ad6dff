"""Chat with `tools: "auto"`: the gateway runs a profile's MCP tools (real stdio MCP servers)."""

from __future__ import annotations

import json
import sys

import openai
import pytest
import requests

from gateway import db
from gateway.tables import LedgerEntry, UsageEntry
from tests.fake_upstream import StreamReply
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.scripted_model import ScriptedModel, answer_chunks

PROFILE_ROUTE = "/api/v1/openai/acme/default/chat/completions"
ASK = {"model": "test-model", "messages": [{"role": "user", "content": "use tools"}], "tools": "auto"}


@pytest.fixture
def settings(make_settings):
    return make_settings(
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]},
                    "time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}},
        profiles={"acme/default": {"mcp_servers": ["tools", "time"]}, "other/x": {"mcp_servers": ["time"]}},
        mcp={"default_profile": "acme/default", "tool_timeout_s": 3},
        models={"paid-model": {"provider": "fake", "input_price_per_mtok": 1000, "output_price_per_mtok": 1000,
                               "max_output_tokens": 100}},
    )


@pytest.fixture
def acme_key(make_key):
    return make_key("acme-user", scope="acme")


def test_profile_route_runs_tools_and_lists_them(client, acme_key, fake_upstream):
    model = ScriptedModel([("mcp__tools__echo", {"text": "ping"}), ("mcp__tools__add", {"a": 2, "b": 3})])
    fake_upstream.responder = model
    answer = client.post(PROFILE_ROUTE, json=ASK, headers={"Authorization": f"Bearer {acme_key}"})
    assert answer.status_code == 200, answer.json
    message = answer.json["choices"][0]["message"]
    assert message["content"] == "Tools said: ping | 5"
    assert [call["function"]["name"] for call in message["tool_calls"]] == ["mcp__tools__echo", "mcp__tools__add"]
    assert answer.json["choices"][0]["finish_reason"] == "stop"
    assert answer.json["id"] == answer.headers["X-Generation-Id"]
    assert answer.json["usage"] == {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50, "cost": 0.0,
                                    "prompt_tokens_details": {"cached_tokens": 0},
                                    "completion_tokens_details": {"reasoning_tokens": 0}}
    offered = {tool["function"]["name"] for tool in model.bodies[0]["tools"]}
    assert {"mcp__tools__echo", "mcp__time__get_current_time"} <= offered
    second = model.bodies[1]["messages"]
    assert second[1]["role"] == "assistant" and len(second[1]["tool_calls"]) == 2
    assert [m["content"] for m in second if m["role"] == "tool"] == ["ping", "5"]
    assert all(body["model"] == "upstream-model" for body in model.bodies)


def test_default_profile_on_v1_with_the_sdk(live_server, acme_key, fake_upstream):
    fake_upstream.responder = ScriptedModel([("mcp__time__get_current_time", {"timezone": "UTC"})])
    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key=acme_key, max_retries=0)
    response = client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "What time is it?"}], tools="auto"
    )
    assert response.choices[0].message.tool_calls  # the seed's "Tools were used" check
    assert '"timezone": "UTC"' in response.choices[0].message.content


def test_profile_base_url_with_the_sdk_streams(live_server, acme_key, fake_upstream):
    fake_upstream.responder = ScriptedModel([("mcp__tools__echo", {"text": "streamed"})])
    client = openai.OpenAI(base_url=f"{live_server}/api/v1/openai/acme/default", api_key=acme_key, max_retries=0)
    stream = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}],
                                            tools="auto", stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Tools said: streamed"
    assert any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert chunks[-1].usage.total_tokens == 50
    assert [m.id for m in client.models.list()] == ["test-model", "backup-model", "paid-model"]


def test_tool_failures_reach_the_model_not_the_client(client, acme_key, fake_upstream):
    fake_upstream.responder = ScriptedModel([("mcp__tools__fail", {"message": "kaboom"}),
                                             ("mcp__tools__slow", {"seconds": 30})])
    answer = client.post(PROFILE_ROUTE, json=ASK, headers={"X-API-Key": acme_key})
    assert answer.status_code == 200
    content = answer.json["choices"][0]["message"]["content"]
    assert "Error:" in content and "kaboom" in content and "timed out" in content


def test_keep_alives_flow_during_slow_tools(make_settings, make_key, fake_upstream, settings):
    from gateway import create_app

    app = create_app(settings.model_copy(update={"server": settings.server.model_copy(
        update={"keepalive_interval_s": 0.2})}))
    secret = make_key("k", scope="acme")
    fake_upstream.responder = ScriptedModel([("mcp__tools__slow", {"seconds": 1})])
    response = app.test_client().post(PROFILE_ROUTE, json={**ASK, "stream": True}, headers={"X-API-Key": secret})
    text = response.get_data(as_text=True)
    assert ": keep-alive" in text and text.endswith("data: [DONE]\n\n")
    from gateway import lifecycle

    lifecycle.close(app)


@pytest.mark.parametrize(
    "path,key_scope,status",
    [
        ("/api/v1/openai/acme/default/chat/completions", "other", 404),
        ("/api/v1/openai/acme/missing/chat/completions", "acme", 404),
        ("/api/v1/openai/nope/default/models", "acme", 404),
        ("/api/v1/openai/other/x/models", "*", 200),
    ],
)
def test_profile_access(client, make_key, path, key_scope, status):
    secret = make_key("k", scope=key_scope)
    method = client.post if path.endswith("completions") else client.get
    answer = method(path, json=ASK, headers={"X-API-Key": secret})
    assert answer.status_code == status
    if status == 404:
        assert answer.json["error"]["code"] == "profile_not_found"


def test_profile_route_bad_key_is_401(client):
    answer = client.post(PROFILE_ROUTE, json=ASK, headers={"Authorization": "Bearer sk-gw-nope"})
    assert answer.status_code == 401


def test_plain_chat_on_profile_route_is_relayed(client, acme_key, fake_upstream):
    answer = client.post(PROFILE_ROUTE, json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}, headers={"X-API-Key": acme_key})
    assert answer.json["choices"][0]["message"]["content"] == "Hello from upstream"


def test_every_model_turn_is_billed(client, make_key, fake_upstream):
    from gateway.accounting import credits
    from gateway.tables import ApiKey

    secret = make_key("payer", scope="acme")
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == "payer").account_id, 10_000_000)
    fake_upstream.responder = ScriptedModel([("mcp__tools__echo", {"text": "a"})])
    answer = client.post(PROFILE_ROUTE, json={**ASK, "model": "paid-model"}, headers={"X-API-Key": secret})
    assert answer.json["usage"]["cost"] == 50 * 1000 / 1_000_000
    with db.database.connection_context():
        [row] = list(UsageEntry.select())
        [charge] = list(LedgerEntry.select().where(LedgerEntry.kind == "charge"))
    assert (row.prompt_tokens, row.completion_tokens, row.cost, charge.amount) == (40, 10, 50_000, 50_000)


def test_max_tokens_is_a_total_across_turns(client, acme_key, fake_upstream):
    model = ScriptedModel([("mcp__tools__echo", {"text": "a"})])
    fake_upstream.responder = model
    answer = client.post(PROFILE_ROUTE, json={**ASK, "max_tokens": 8}, headers={"X-API-Key": acme_key})
    assert [body["max_tokens"] for body in model.bodies] == [8, 3]
    # the scripted upstream reports 5 output tokens for a turn asked for 3: the cap holds anyway
    assert answer.json["choices"][0]["finish_reason"] == "length"
    assert answer.json["usage"]["completion_tokens"] == 8


def test_upstream_failure_in_loop_is_an_http_error(client, acme_key, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(answer_chunks("partial")[:1], done=False)
    answer = client.post(PROFILE_ROUTE, json=ASK, headers={"X-API-Key": acme_key})
    assert answer.status_code == 502 and answer.json["error"]["code"] == "upstream_error"


def test_discovery(client, acme_key):
    headers = {"X-API-Key": acme_key}
    servers = client.get("/v1/mcp/servers", headers=headers).json["data"]
    assert {row["label"] for row in servers} == {"tools", "time"}
    deadline_rows = None
    for _ in range(200):
        deadline_rows = client.get("/v1/mcp/servers/time/tools", headers=headers)
        if deadline_rows.status_code == 200:
            break
        assert deadline_rows.status_code == 409
        import time

        time.sleep(0.05)
    names = [tool["name"] for tool in deadline_rows.json["data"]]
    assert "get_current_time" in names and "convert_time" in names
    missing = client.get("/v1/mcp/servers/ghost/tools", headers=headers)
    assert missing.status_code == 404 and set(missing.json["error"]) == {"message", "type", "param", "code"}
    assert client.get("/v1/mcp/servers", headers={}).status_code == 401


def test_discovery_without_servers_is_an_empty_list(make_settings, make_key):
    from gateway import create_app, lifecycle

    app = create_app(make_settings())
    answer = app.test_client().get("/api/v1/mcp/servers", headers={"X-API-Key": make_key()})
    assert answer.json == {"object": "list", "data": []}
    lifecycle.close(app)


def test_discovery_409_and_503(make_settings, make_key):
    from gateway import create_app, lifecycle

    app = create_app(make_settings(mcpServers={"broken": {"command": "/nonexistent/binary"}}))
    headers = {"X-API-Key": make_key()}
    client = app.test_client()
    assert client.get("/v1/mcp/servers/broken/tools", headers=headers).status_code == 409
    app.extensions["gateway.mcp"].bridge.close()
    unreachable = client.get("/v1/mcp/servers/broken/tools", headers=headers)
    assert unreachable.status_code == 503
    lifecycle.close(app)


def test_stream_chunks_are_valid_json(live_server, acme_key, fake_upstream):
    fake_upstream.responder = ScriptedModel([("mcp__tools__echo", {"text": "x"})])
    response = requests.post(f"{live_server}{PROFILE_ROUTE}", json={**ASK, "stream": True},
                             headers={"X-API-Key": acme_key}, stream=True, timeout=30)
    lines = [line for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert {chunk["id"] for chunk in chunks} == {response.headers["X-Generation-Id"]}


def test_forced_tool_choice_applies_to_the_first_turn_only(client, acme_key, fake_upstream):
    model = ScriptedModel([("mcp__tools__echo", {"text": "a"})])
    fake_upstream.responder = model
    answer = client.post(PROFILE_ROUTE, json={**ASK, "tool_choice": "required"}, headers={"X-API-Key": acme_key})
    assert answer.status_code == 200
    assert [body["tool_choice"] for body in model.bodies] == ["required", "auto"]


def test_bad_messages_release_the_reservation(client, make_key):
    from gateway.accounting import credits
    from gateway.tables import ApiKey, Reservation

    secret = make_key("payer", scope="acme")
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == "payer").account_id, 10_000_000)
    answer = client.post(PROFILE_ROUTE, json={**ASK, "model": "paid-model", "messages": "nope"},
                         headers={"X-API-Key": secret})
    assert answer.status_code == 400 and answer.json["error"]["param"] == "messages"
    with db.database.connection_context():  # refused by the body gate: no hold was ever taken
        assert list(Reservation.select()) == []
