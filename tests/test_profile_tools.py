"""A profile's MCP tools without `tools: "auto"` (`tools_by_default`), beside client function tools.

Executed calls are listed in `message.mcp_calls`; `message.tool_calls` holds only the client's calls
(the seed's form, executed calls in `tool_calls`, stays for `tools: "auto"`).
"""

from __future__ import annotations

import json

import openai
import pytest
import requests

from gateway import db
from gateway.accounting.keys import set_mcp_servers
from gateway.accounting.mcp_allow_list import encode_allow_list
from gateway.tables import ApiKey
from tests.agent_model import CLIENT_TOOL, LUCKY, TIME_TOOL, AgentModel

BASE = "/api/v1/openai/acme/default"
CLIENT_TOOLS = [{"type": "function", "function": {"name": CLIENT_TOOL, "description": "The user's lucky number",
                                                  "parameters": {"type": "object", "properties": {}}}}]
ASK = {"model": "test-model", "messages": [{"role": "user", "content": "time and lucky number?"}]}


@pytest.fixture
def settings(make_settings):
    return make_settings(
        mcpServers={"time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}},
        profiles={"acme/default": {"mcp_servers": ["time"], "tools_by_default": True},
                  "acme/plain": {"mcp_servers": ["time"]}},
        mcp={"default_profile": "acme/default"},
    )


@pytest.fixture
def headers(make_key):
    return {"Authorization": f"Bearer {make_key('acme-user', scope='acme')}"}


def test_no_tools_gets_the_profiles_tools_and_mcp_calls(client, headers, fake_upstream):
    model = fake_upstream.responder = AgentModel()
    answer = client.post(f"{BASE}/chat/completions", json=ASK, headers=headers)
    assert answer.status_code == 200, answer.json
    choice = answer.json["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    [executed] = choice["message"]["mcp_calls"]
    assert executed["type"] == "mcp_call" and executed["server_label"] == "time"
    assert executed["name"] == "get_current_time" and json.loads(executed["arguments"]) == {"timezone": "UTC"}
    assert "datetime" in executed["output"] and executed["error"] is None
    assert model.time_results()


def test_client_tool_calls_come_back_for_the_client(client, headers, fake_upstream):
    model = fake_upstream.responder = AgentModel()
    answer = client.post(f"{BASE}/chat/completions", json={**ASK, "tools": CLIENT_TOOLS}, headers=headers)
    choice = answer.json["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": CLIENT_TOOL, "arguments": "{}"} and call["type"] == "function"
    assert [item["name"] for item in choice["message"]["mcp_calls"]] == ["get_current_time"]
    offered = {tool["function"]["name"] for tool in model.bodies[0]["tools"]}
    assert {CLIENT_TOOL, TIME_TOOL} <= offered
    follow_up = ASK["messages"] + [{"role": "assistant", "content": None, "tool_calls": [call]},
                                   {"role": "tool", "tool_call_id": call["id"], "content": LUCKY}]
    second = client.post(f"{BASE}/chat/completions", json={**ASK, "messages": follow_up, "tools": CLIENT_TOOLS},
                         headers=headers)
    assert second.json["choices"][0]["message"]["content"] == f"Your lucky number is {LUCKY}."
    assert second.json["choices"][0]["finish_reason"] == "stop"


def test_client_tool_calls_stream(live_server, headers, fake_upstream):
    fake_upstream.responder = AgentModel()
    sdk = openai.OpenAI(base_url=live_server + BASE, api_key=headers["Authorization"][7:], max_retries=0)
    chunks = list(sdk.chat.completions.create(**ASK, tools=CLIENT_TOOLS, stream=True))
    calls = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == CLIENT_TOOL and calls[0].index == 0
    assert "".join(call.function.arguments or "" for call in calls) == "{}"
    executed = [item for chunk in chunks if chunk.choices for item in (chunk.choices[0].delta.model_extra or {})
                .get("mcp_calls", [])]
    assert [item["name"] for item in executed] == ["get_current_time"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tools_auto_keeps_the_seeds_form(client, headers, fake_upstream):
    fake_upstream.responder = AgentModel()
    answer = client.post(f"{BASE}/chat/completions", json={**ASK, "tools": "auto"}, headers=headers)
    message = answer.json["choices"][0]["message"]
    assert [call["function"]["name"] for call in message["tool_calls"]] == [TIME_TOOL]
    assert answer.json["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("path", ["/v1/chat/completions", f"{BASE}/chat/completions"])
def test_header_selects_the_agents_form(client, headers, fake_upstream, path):
    fake_upstream.responder = AgentModel()
    answer = client.post(path, json={**ASK, "tools": "auto"},
                         headers={**headers, "X-Gateway-Executed-Calls": "mcp_calls"})
    message = answer.json["choices"][0]["message"]
    assert "tool_calls" not in message and [item["name"] for item in message["mcp_calls"]] == ["get_current_time"]


def test_bad_form_header_is_a_400(client, headers):
    answer = client.post(f"{BASE}/chat/completions", json={**ASK, "tools": "auto"},
                         headers={**headers, "X-Gateway-Executed-Calls": "both"})
    assert answer.status_code == 400


def test_reserved_client_tool_name_is_a_422(client, headers):
    tools = [{"type": "function", "function": {"name": TIME_TOOL, "parameters": {"type": "object"}}}]
    answer = client.post(f"{BASE}/chat/completions", json={**ASK, "tools": tools}, headers=headers)
    assert answer.status_code == 422 and answer.json["error"]["param"] == "tools[0].function.name"


def test_without_the_setting_the_profile_route_relays(client, headers, fake_upstream):
    model = fake_upstream.responder = AgentModel()
    answer = client.post("/api/v1/openai/acme/plain/chat/completions", json=ASK, headers=headers)
    assert answer.json["choices"][0]["message"]["content"] == "non-streamed turns are not scripted"
    assert "tools" not in model.bodies[0]


def test_responses_on_the_profile_route_offer_its_servers(live_server, headers, fake_upstream):
    fake_upstream.responder = AgentModel()
    sdk = openai.OpenAI(base_url=live_server + BASE, api_key=headers["Authorization"][7:], max_retries=0)
    response = sdk.responses.create(model="test-model", input="time and lucky number?",
                                    tools=[{"type": "function", "name": CLIENT_TOOL, "parameters": {}}])
    kinds = [item.type for item in response.output]
    assert kinds == ["mcp_list_tools", "mcp_call", "function_call"]
    assert response.output[1].server_label == "time" and "datetime" in response.output[1].output
    follow = sdk.responses.create(model="test-model", previous_response_id=response.id, input=[
        {"type": "function_call_output", "call_id": response.output[2].call_id, "output": LUCKY}])
    assert follow.output_text == f"Your lucky number is {LUCKY}."
    assert [item.type for item in follow.output] == ["message"]  # the chain listed time already
    assert sdk.responses.retrieve(follow.id).output_text == follow.output_text
    compacted = requests.post(f"{live_server}{BASE}/responses/compact", headers=headers, timeout=60,
                              json={"model": "test-model", "previous_response_id": follow.id, "input": "more"})
    assert compacted.status_code == 200 and compacted.json()["object"] == "response.compaction"
    with sdk.responses.stream(model="test-model", input="time?") as stream:
        events = [event.type for event in stream]
    assert "response.mcp_call.completed" in events and events[-1] == "response.completed"


def test_responses_on_the_profile_route_follow_access_rules(client, make_key, fake_upstream):
    model = fake_upstream.responder = AgentModel()
    other = {"Authorization": f"Bearer {make_key('other', scope='other')}"}
    assert client.post(f"{BASE}/responses", json={"model": "test-model", "input": "x"}, headers=other).status_code == 404
    narrowed = {"Authorization": f"Bearer {make_key('narrowed', scope='acme')}"}
    with db.database.connection_context():  # an allow-list that allows nothing: the profile offers nothing
        settings = client.application.extensions["gateway.settings"]
        set_mcp_servers(ApiKey.get(ApiKey.name == "narrowed"), encode_allow_list(settings, []))
    answer = client.post(f"{BASE}/responses", json={"model": "test-model", "input": "x"}, headers=narrowed)
    assert answer.status_code == 200 and "tools" not in model.bodies[-1]
    body = {"model": "test-model", "input": "x", "tools": [{"type": "mcp", "server_label": "time"}]}
    assert client.post(f"{BASE}/responses", json=body, headers=narrowed).status_code == 422


def test_responses_websocket_on_the_profile_route(live_server, headers, fake_upstream):
    from websockets.sync.client import connect

    fake_upstream.responder = AgentModel()
    url = live_server.replace("http://", "ws://") + BASE + "/responses"
    with connect(url, additional_headers=headers) as socket:
        socket.send(json.dumps({"type": "response.create", "model": "test-model", "input": "time?"}))
        kinds = []
        while not kinds or kinds[-1] not in ("response.completed", "response.failed", "error"):
            kinds.append(json.loads(socket.recv(timeout=60))["type"])
    assert "response.mcp_call.completed" in kinds and kinds[-1] == "response.completed"


def test_unknown_route_with_a_bad_key_is_401(live_server):
    for path in ("/v1/nope", "/api/v1/nope", f"{BASE}/nope", "/v1/chat/completions/x"):
        answer = requests.get(live_server + path, headers={"Authorization": "Bearer bad"}, timeout=10)
        assert answer.status_code == 401, path
        assert answer.json()["error"]["type"] == "authentication_error" or answer.json()["error"]["code"] == 401
