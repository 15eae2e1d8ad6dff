"""Anthropic's MCP connector on `/v1/messages`, through the `anthropic` SDK's beta client against a live gateway.

The gateway runs the servers in its tool loop: the built-in `time` server (`url: "gateway:time"`), a
remote server by URL (its token as the bearer, never logged), the URL policy and the key's allow-list
as 400s; executed calls come back as `mcp_tool_use` / `mcp_tool_result` blocks, JSON and streamed.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import anthropic
import pytest

from gateway import create_app, db, lifecycle
from gateway.accounting.keys import set_mcp_servers
from gateway.accounting.mcp_allow_list import encode_allow_list
from gateway.tables import ApiKey, UsageEntry
from tests.mcp_fixtures.launch import TOOL_SERVER, http_tool_server
from tests.scripted_model import ScriptedModel

OLD_BETA, NEW_BETA = "mcp-client-2025-04-04", "mcp-client-2025-11-20"
TIME_SERVER = {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}
TIME = {"type": "url", "url": "gateway:time", "name": "time"}
USER = [{"role": "user", "content": "What time is it?"}]
SECRET = "tok-5e4d3c2b1a"
LOOKUP = {"name": "lookup", "description": "Look a word up.",
          "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}}}


@pytest.fixture
def settings(make_settings):
    return make_settings(
        mcp={"remote_url_checks": False, "tool_timeout_s": 5},
        mcpServers={"time": TIME_SERVER, "tools": {"command": sys.executable, "args": [TOOL_SERVER]}},
    )


def beta(live_server: str, key: str) -> Any:
    return anthropic.Anthropic(base_url=live_server, api_key=key, max_retries=0, timeout=30).beta


def blocks(message: Any) -> list[dict[str, Any]]:
    return [block.model_dump(exclude_none=True) for block in message.content]


def usage_rows() -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def check_time_answer(content: list[dict[str, Any]]) -> None:
    use, result, text = content
    assert (use["type"], use["name"], use["server_name"], use["input"]) == (
        "mcp_tool_use", "get_current_time", "time", {"timezone": "UTC"})
    assert (result["type"], result["tool_use_id"], result["is_error"]) == ("mcp_tool_result", use["id"], False)
    assert '"timezone": "UTC"' in result["content"][0]["text"]
    assert text["type"] == "text" and text["text"].startswith("Tools said: {")


def test_builtin_server_runs_in_the_loop_and_answers_mcp_blocks(live_server, api_key, fake_upstream):
    model = ScriptedModel([("mcp__time__get_current_time", {"timezone": "UTC"})])
    fake_upstream.responder = model
    message = beta(live_server, api_key).messages.create(
        model="test-model", max_tokens=100, messages=USER, mcp_servers=[TIME], betas=[OLD_BETA])
    check_time_answer(blocks(message))
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("end_turn", 40, 10)
    assert "mcp__time__get_current_time" in {tool["function"]["name"] for tool in model.bodies[0]["tools"]}
    assert not any(name.startswith("mcp__tools__") for name in
                   (tool["function"]["name"] for tool in model.bodies[0]["tools"]))  # only the declared server
    assert [(row.endpoint, row.status, row.prompt_tokens, row.completion_tokens) for row in usage_rows()] == [
        ("messages", 200, 40, 10)]


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_streamed_mcp_blocks_are_accumulated_by_the_sdk(live_server, api_key, fake_upstream, prefix):
    fake_upstream.responder = ScriptedModel([("mcp__time__get_current_time", {"timezone": "UTC"})])
    with beta(live_server + prefix, api_key).messages.stream(
            model="test-model", max_tokens=100, messages=USER, mcp_servers=[TIME], betas=[OLD_BETA]) as stream:
        events = [event.type for event in stream]
        message = stream.get_final_message()
    check_time_answer(blocks(message))
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 10
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert events.count("content_block_start") == events.count("content_block_stop") == 3
    assert [(row.endpoint, row.status) for row in usage_rows()] == [("messages", 200)]


def test_client_tools_beside_mcp_come_back_as_tool_use(live_server, api_key, fake_upstream):
    fake_upstream.responder = ScriptedModel([("mcp__time__get_current_time", {"timezone": "UTC"}),
                                             ("lookup", {"word": "gateway"})])
    message = beta(live_server, api_key).messages.create(
        model="test-model", max_tokens=100, messages=USER, mcp_servers=[TIME], tools=[LOOKUP], betas=[OLD_BETA])
    content = blocks(message)
    assert [block["type"] for block in content] == ["tool_use", "mcp_tool_use", "mcp_tool_result"]  # as they came
    assert (content[0]["name"], content[0]["input"]) == ("lookup", {"word": "gateway"})
    assert content[2]["is_error"] is False
    assert message.stop_reason == "tool_use"


def test_remote_server_by_url_with_its_token_and_a_toolset(client, api_key, fake_upstream, caplog):
    caplog.set_level(logging.DEBUG)
    model = ScriptedModel([("mcp__remote__header", {"name": "authorization"})])
    fake_upstream.responder = model
    with http_tool_server() as (url, _):
        answer = client.post("/v1/messages", headers={"x-api-key": api_key, "anthropic-beta": NEW_BETA}, json={
            "model": "test-model", "max_tokens": 100, "messages": USER,
            "mcp_servers": [{"type": "url", "url": url, "name": "remote", "authorization_token": SECRET}],
            "tools": [{"type": "mcp_toolset", "mcp_server_name": "remote", "default_config": {"enabled": False},
                       "configs": {"header": {"enabled": True}}}]})
    assert answer.status_code == 200, answer.json
    use, result, _ = answer.json["content"]
    assert (use["server_name"], use["name"]) == ("remote", "header")
    assert result["content"] == [{"type": "text", "text": f"Bearer {SECRET}"}]  # the bearer reached the server
    assert [tool["function"]["name"] for tool in model.bodies[0]["tools"]] == ["mcp__remote__header"]
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps([row.__data__ for row in usage_rows()], default=str)


def test_a_url_the_policy_refuses_is_a_400(make_settings, make_key, fake_upstream):
    app = create_app(make_settings(mcpServers={"time": TIME_SERVER}))  # remote_url_checks on, as by default
    answer = app.test_client().post("/v1/messages", headers={"x-api-key": make_key()}, json={
        "model": "test-model", "max_tokens": 50, "messages": USER,
        "mcp_servers": [TIME, {"type": "url", "url": "http://127.0.0.1:9/mcp", "name": "local"}]})
    assert answer.status_code == 400, answer.json
    assert answer.json["type"] == "error" and answer.json["error"]["type"] == "invalid_request_error"
    assert answer.json["error"]["message"].startswith("mcp_servers[1].url")
    assert fake_upstream.requests == []
    lifecycle.close(app)


def test_a_builtin_server_outside_the_keys_allow_list_is_refused(live_server, app, make_key, fake_upstream):
    key = make_key("narrowed")
    with db.database.connection_context():
        set_mcp_servers(ApiKey.get(ApiKey.name == "narrowed"), encode_allow_list(app.extensions["gateway.settings"],
                                                                                 ["tools"]))
    with pytest.raises(anthropic.BadRequestError) as refused:
        beta(live_server, key).messages.create(model="test-model", max_tokens=100, messages=USER,
                                               mcp_servers=[TIME], betas=[OLD_BETA])
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert "mcp_servers[0].name" in refused.value.body["error"]["message"]
    assert fake_upstream.requests == []


def test_a_conversation_continues_with_the_mcp_blocks_sent_back(live_server, api_key, fake_upstream):
    model = ScriptedModel([("mcp__time__get_current_time", {"timezone": "UTC"})])
    fake_upstream.responder = model
    sdk = beta(live_server, api_key)
    first = sdk.messages.create(model="test-model", max_tokens=100, messages=USER, mcp_servers=[TIME],
                                betas=[OLD_BETA])
    history = [*USER, {"role": "assistant", "content": blocks(first)}, {"role": "user", "content": "Thanks!"}]
    second = sdk.messages.create(model="test-model", max_tokens=100, messages=history, mcp_servers=[TIME],
                                 betas=[OLD_BETA])
    assert second.stop_reason == "end_turn"
    sent = model.bodies[-1]["messages"]
    assert [message["role"] for message in sent] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "mcp__time__get_current_time"
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"] and '"timezone": "UTC"' in sent[2]["content"]


def test_a_builtin_server_by_name_alone_and_a_failing_call(live_server, api_key, fake_upstream):
    fake_upstream.responder = ScriptedModel([("mcp__tools__fail", {"message": "no luck"})])
    message = beta(live_server, api_key).messages.create(
        model="test-model", max_tokens=100, messages=USER, mcp_servers=[{"type": "url", "name": "tools"}],
        betas=[OLD_BETA])
    use, result, text = blocks(message)
    assert (use["server_name"], use["name"], use["input"]) == ("tools", "fail", {"message": "no luck"})
    assert result["is_error"] is True and "no luck" in result["content"][0]["text"]
    assert text["text"].startswith("Tools said: Error:")


def test_count_tokens_takes_mcp_servers(client, api_key):
    answer = client.post("/v1/messages/count_tokens", headers={"x-api-key": api_key}, json={
        "model": "test-model", "messages": USER, "mcp_servers": [TIME]})
    assert answer.status_code == 200, answer.json
    assert answer.json["input_tokens"] > 0
