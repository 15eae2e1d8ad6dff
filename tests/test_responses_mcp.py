"""MCP in the Responses API: built-in and remote servers, events, validation rules, agents SDK."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import openai
import pytest

from gateway import create_app, lifecycle
from gateway.config import load_settings
from tests.mcp_fixtures.launch import TOOL_SERVER, http_tool_server
from tests.scripted_model import ScriptedModel
from tests.test_response_builder import check_stream

BUILTIN = {"type": "mcp", "server_label": "tools", "require_approval": "never"}
SECRET = "tok-9f8e7d6c5b4a"


@pytest.fixture
def settings(make_settings):
    return make_settings(
        mcp={"remote_url_checks": False, "tool_timeout_s": 3},
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]}},
    )


@pytest.fixture
def sdk(live_server, api_key):
    with openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0, timeout=30) as client:
        yield client


def ask(client, headers, **body: Any):
    return client.post("/v1/responses", json={"model": "test-model", "input": "go", **body}, headers=headers)


def test_streamed_mcp_events_follow_the_lifecycle(sdk, fake_upstream):
    fake_upstream.responder = ScriptedModel([("mcp__tools__echo", {"text": "hi"}), ("mcp__tools__fail", {"message": "no"})])
    with sdk.responses.with_streaming_response.create(model="test-model", input="go", tools=[BUILTIN],
                                                      stream=True) as raw:
        lines = [line for line in raw.iter_lines() if line.startswith("data: {")]
    events = [json.loads(line[6:]) for line in lines]
    check_stream(events)
    types = [event["type"] for event in events]
    assert types.index("response.mcp_list_tools.in_progress") < types.index("response.mcp_list_tools.completed")
    assert types.count("response.mcp_call.in_progress") == 2
    assert "response.mcp_call_arguments.done" in types
    assert types.count("response.mcp_call.completed") == 1 and types.count("response.mcp_call.failed") == 1
    assert types[-1] == "response.completed"
    final = events[-1]["response"]
    calls = [item for item in final["output"] if item["type"] == "mcp_call"]
    assert [(call["name"], call["status"]) for call in calls] == [("echo", "completed"), ("fail", "failed")]
    assert calls[0]["output"] == "hi" and "no" in calls[1]["error"]
    listed = next(item for item in final["output"] if item["type"] == "mcp_list_tools")
    assert {"echo", "add"} <= {tool["name"] for tool in listed["tools"]}


def test_no_mcp_items_without_mcp_declarations(client, auth_headers):
    response = ask(client, auth_headers).json
    assert [item["type"] for item in response["output"]] == ["message"]


def test_max_tool_calls_is_enforced(client, auth_headers, fake_upstream):
    model = ScriptedModel([("mcp__tools__echo", {"text": "a"}), ("mcp__tools__add", {"a": 1, "b": 1})])
    fake_upstream.responder = model
    response = ask(client, auth_headers, tools=[BUILTIN], max_tool_calls=1).json
    assert [item["name"] for item in response["output"] if item["type"] == "mcp_call"] == ["echo"]
    assert response["max_tool_calls"] == 1
    results = [m["content"] for m in model.bodies[1]["messages"] if m["role"] == "tool"]
    assert results[0] == "a" and "max_tool_calls" in results[1]


def test_allowed_tools_and_approval_filters(client, auth_headers, fake_upstream):
    model = ScriptedModel([("mcp__tools__add", {"a": 2, "b": 2})])
    fake_upstream.responder = model
    tool = {**BUILTIN, "allowed_tools": ["add", "echo"], "require_approval": {"never": {"tool_names": ["echo"]}}}
    response = ask(client, auth_headers, tools=[tool]).json
    assert {t["function"]["name"] for t in model.bodies[0]["tools"]} == {"mcp__tools__add", "mcp__tools__echo"}
    assert response["output"][-1]["type"] == "mcp_approval_request"
    denial = {"type": "mcp_approval_response", "approval_request_id": response["output"][-1]["id"], "approve": False}
    follow = ask(client, auth_headers, tools=[tool], input=[denial], previous_response_id=response["id"]).json
    assert "mcp_call" not in [item["type"] for item in follow["output"]]
    assert "denied" in next(m for m in model.bodies[-1]["messages"] if m["role"] == "tool")["content"]


def remote(url: str = "https://mcp.example.com/mcp", **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "remote", "server_url": url, "require_approval": "never", **extra}


VALIDATION_RULES = [
    ({"tools": [BUILTIN], "tool_choice": {"type": "mcp", "server_label": "other"}}, 422, "tool_choice.server_label"),
    ({"tools": [BUILTIN, {**BUILTIN}]}, 422, "tools[1].server_label"),
    ({"tools": [BUILTIN, remote(server_label="tools")]}, 422, "tools[1].server_label"),
    ({"tools": [{**BUILTIN, "server_label": "ghost"}]}, 422, "tools[0].server_label"),
    ({"tools": [{**BUILTIN, "headers": {"X": "1"}}]}, 422, "tools[0].headers"),
    ({"tools": [{**BUILTIN, "authorization": "t"}]}, 422, "tools[0].authorization"),
    ({"tools": [{"type": "function", "name": "mcp__sneaky", "parameters": {}}]}, 422, "tools[0].name"),
    ({"tools": [{**BUILTIN, "connector_id": "connector_gmail"}]}, 422, "tools[0].connector_id"),
    ({"tools": [{**BUILTIN, "allowed_tools": ["nope"]}]}, 422, "tools[0].allowed_tools"),
    ({"tools": [{**BUILTIN, "allowed_tools": {"read_only": True, "tool_names": ["add"]}}]}, 422,
     "tools[0].allowed_tools"),
    ({"tools": [{"type": "mcp", "server_url": "https://x.example"}]}, 400, "tools[0].server_label"),
]


@pytest.mark.parametrize("body,status,param", VALIDATION_RULES)
def test_validation_rules(client, auth_headers, fake_upstream, body, status, param):
    answer = ask(client, auth_headers, **body)
    assert answer.status_code == status, answer.json
    assert answer.json["error"]["param"] == param
    assert answer.json["error"]["type"] == ("bad_input" if status == 422 else "invalid_request_error")
    assert fake_upstream.requests == []


def test_remote_url_checks_refuse_loopback(make_settings, make_key, fake_upstream):
    app = create_app(make_settings())
    headers = {"X-API-Key": make_key()}
    for url in ("http://127.0.0.1:9/mcp", "https://localhost/mcp", "https://2130706433/mcp", "https://[::1]/mcp"):
        answer = app.test_client().post("/v1/responses", json={"model": "test-model", "input": "x",
                                                               "tools": [remote(url)]}, headers=headers)
        assert answer.status_code == 422 and answer.json["error"]["param"] == "tools[0].server_url", url
    lifecycle.close(app)


@pytest.mark.parametrize("how", ["config", "env"])
def test_remote_mcp_can_be_disabled(tmp_path, fake_upstream, how, make_key, database_url):
    config = tmp_path / "c.toml"
    text = (f'[database]\nurl = "{database_url}"\n[providers.fake]\nbase_url = "{fake_upstream.base_url}"\n'
            '[models.test-model]\nprovider = "fake"\n')
    config.write_text(text + ("[mcp]\nremote_enabled = false\n" if how == "config" else ""))
    environ = {"VR_MCP_REQUEST_REMOTE_ENABLED": "false"} if how == "env" else {}
    app = create_app(load_settings(str(config), environ=environ))
    answer = app.test_client().post("/v1/responses", json={"model": "test-model", "input": "x", "tools": [remote()]},
                                    headers={"X-API-Key": make_key()})
    assert answer.status_code == 422 and "disabled" in answer.json["error"]["message"]
    lifecycle.close(app)


def test_unlistable_remote_is_422_with_the_token_redacted(client, auth_headers, caplog):
    caplog.set_level(logging.DEBUG)
    answer = ask(client, auth_headers, tools=[remote("http://127.0.0.1:9/mcp", authorization=SECRET)])
    assert answer.status_code == 422 and answer.json["error"]["type"] == "bad_input"
    assert SECRET not in answer.get_data(as_text=True)
    assert SECRET not in caplog.text


def test_remote_tools_work_and_secrets_stay_out_of_answers_and_logs(client, auth_headers, fake_upstream, caplog):
    caplog.set_level(logging.DEBUG)
    fake_upstream.responder = ScriptedModel([("mcp__remote__header", {"name": "x-tenant"})])
    with http_tool_server() as (url, _):
        declaration = remote(url, authorization=SECRET, headers={"X-Tenant": "acme-7"})
        answer = ask(client, auth_headers, tools=[declaration])
    text = answer.get_data(as_text=True)
    assert answer.status_code == 200, text
    call = next(item for item in answer.json["output"] if item["type"] == "mcp_call")
    assert call["output"] == "acme-7"  # the header reached the remote server
    echoed = answer.json["tools"][0]
    assert "authorization" not in echoed and "headers" not in echoed
    assert SECRET not in text and SECRET not in caplog.text


def test_openai_agents_hosted_mcp_tool(live_server, api_key, fake_upstream):
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    fake_upstream.responder = ScriptedModel([("mcp__tools__add", {"a": 20, "b": 22})])
    client = openai.AsyncOpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0)
    agent = agents.Agent(
        name="calculator",
        instructions="Use the tools.",
        model=agents.OpenAIResponsesModel(model="test-model", openai_client=client),
        tools=[agents.HostedMCPTool(tool_config={"type": "mcp", "server_label": "tools",
                                                 "require_approval": "never"})],
    )
    result = agents.Runner.run_sync(agent, "What is 20 + 22?")
    assert result.final_output == "Tools said: 42"
    kinds = [item.type for item in result.new_items]
    assert "mcp_call_item" in kinds or "tool_call_item" in kinds


def test_openai_agents_streamed(live_server, api_key, fake_upstream):
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    fake_upstream.responder = ScriptedModel([("mcp__tools__echo", {"text": "streamed"})])
    client = openai.AsyncOpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0)
    agent = agents.Agent(name="echoer", model=agents.OpenAIResponsesModel(model="test-model", openai_client=client),
                         tools=[agents.HostedMCPTool(tool_config=BUILTIN)])

    async def run() -> str:
        streamed = agents.Runner.run_streamed(agent, "echo")
        async for _ in streamed.stream_events():
            pass
        return streamed.final_output

    import asyncio

    assert asyncio.run(run()) == "Tools said: streamed"
