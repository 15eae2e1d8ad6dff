"""Stored responses and chains: what a turn inherits, what it does not, and what is stored."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from gateway import db
from gateway.responses import store
from gateway.tables import StoredResponse
from tests.fake_upstream import StreamReply
from tests.mcp_fixtures.launch import TOOL_SERVER, http_tool_server
from tests.scripted_model import ScriptedModel, answer_chunks, tool_call_chunks
from tests.test_responses_api import ask, validate_response

WEATHER_TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def row(response_id: str) -> StoredResponse:
    with db.database.connection_context():
        return StoredResponse.get_by_id(response_id)


def counting_model(path: str, body: dict[str, Any]) -> StreamReply:
    """Answers 'answer N' where N counts the user messages it was sent."""
    users = sum(message["role"] == "user" for message in body["messages"])
    return StreamReply(answer_chunks(f"answer {users}"))


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_third_turn_sees_the_first_two_turns(client, auth_headers, fake_upstream):
    fake_upstream.responder = counting_model
    previous = None
    for text in ("one", "two", "three"):
        answer = ask(client, auth_headers, input=text, previous_response_id=previous)
        assert answer.status_code == 200, answer.json
        previous = answer.json["id"]
    assert answer.json["previous_response_id"] is not None
    assert fake_upstream.bodies()[-1]["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "answer 1"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "answer 2"},
        {"role": "user", "content": "three"},
    ]


def test_instructions_tools_and_tool_choice_are_not_inherited(client, auth_headers, fake_upstream):
    first = ask(
        client, auth_headers, instructions="Talk like a pirate.", tools=[WEATHER_TOOL], tool_choice="required"
    ).json
    second = ask(client, auth_headers, input="again", previous_response_id=first["id"]).json
    sent = fake_upstream.bodies()[-1]
    assert all(message["role"] != "system" for message in sent["messages"])
    assert "tools" not in sent and "tool_choice" not in sent
    assert (second["instructions"], second["tools"], second["tool_choice"]) == (None, [], "auto")


def test_function_call_round_trip(client, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(
        tool_call_chunks([("get_weather", {"city": "Paris"})])
    )
    first = ask(client, auth_headers, input="Weather in Paris?", tools=[WEATHER_TOOL]).json
    validate_response(first)
    [call] = first["output"]
    assert (call["type"], call["name"], json.loads(call["arguments"])) == (
        "function_call",
        "get_weather",
        {"city": "Paris"},
    )
    fake_upstream.responder = lambda path, body: StreamReply(answer_chunks("It is sunny."))
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
    second = ask(
        client, auth_headers, input=[output], previous_response_id=first["id"], tools=[WEATHER_TOOL]
    ).json
    assert second["output"][0]["content"][0]["text"] == "It is sunny."
    messages = fake_upstream.bodies()[-1]["messages"]
    assert messages[0] == {"role": "user", "content": "Weather in Paris?"}
    assert messages[1]["role"] == "assistant"
    assert messages[1]["tool_calls"][0]["id"] == call["call_id"]
    assert messages[2] == {"role": "tool", "tool_call_id": call["call_id"], "content": "sunny"}


def test_store_false_is_not_retrievable_or_chainable(client, auth_headers):
    response = ask(client, auth_headers, store=False).json
    assert response["store"] is False
    assert client.get(f"/v1/responses/{response['id']}", headers=auth_headers).status_code == 404
    chained = ask(client, auth_headers, previous_response_id=response["id"])
    assert chained.status_code == 404 and chained.json["error"]["code"] == "previous_response_not_found"


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_storage_is_linear_in_chain_length(client, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(answer_chunks("same answer"))
    previous, sizes = None, []
    for _ in range(6):
        previous = ask(client, auth_headers, input="same question", previous_response_id=previous).json["id"]
        stored = row(previous)
        sizes.append(len(stored.input_items.encode()) + len(stored.output_items.encode()))
    assert len(fake_upstream.bodies()[-1]["messages"]) == 11  # the chain is read whole...
    assert len(set(sizes)) == 1  # ...but each row holds only its own turn


def test_chain_depth_is_capped(client, auth_headers, monkeypatch):
    monkeypatch.setattr(store, "MAX_CHAIN_DEPTH", 2)
    first = ask(client, auth_headers).json["id"]
    second = ask(client, auth_headers, previous_response_id=first).json["id"]
    too_deep = ask(client, auth_headers, previous_response_id=second)
    assert too_deep.status_code == 200
    third = too_deep.json["id"]
    refused = ask(client, auth_headers, previous_response_id=third)
    assert refused.status_code == 400 and refused.json["error"]["code"] == "conversation_too_long"


def test_a_deleted_ancestor_ends_the_history(client, auth_headers, fake_upstream):
    fake_upstream.responder = counting_model
    first = ask(client, auth_headers, input="one").json["id"]
    second = ask(client, auth_headers, input="two", previous_response_id=first).json["id"]
    client.delete(f"/v1/responses/{first}", headers=auth_headers)
    ask(client, auth_headers, input="three", previous_response_id=second)
    assert [message["content"] for message in fake_upstream.bodies()[-1]["messages"]] == [
        "two",
        "answer 2",
        "three",
    ]


def test_input_items_are_this_turns_own(client, auth_headers):
    first = ask(client, auth_headers, input="one").json["id"]
    second = ask(client, auth_headers, input="two", previous_response_id=first).json["id"]
    items = client.get(f"/v1/responses/{second}/input_items", headers=auth_headers).json["data"]
    assert [item["content"] for item in items] == [[{"type": "input_text", "text": "two"}]]


@pytest.fixture
def with_mcp() -> None:
    """Marks a test that needs the MCP settings below."""


@pytest.fixture
def settings(make_settings, request):
    """Plain settings; with `with_mcp`, a built-in stdio MCP server and unchecked remote URLs."""
    if "with_mcp" not in request.fixturenames:
        return make_settings()
    return make_settings(
        mcp={"remote_url_checks": False},
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]}},
    )


def test_remote_mcp_secrets_are_never_stored(with_mcp, client, auth_headers, fake_upstream):
    fake_upstream.responder = ScriptedModel([("mcp__remote__echo", {"text": "ping"})])
    with http_tool_server() as (url, _):
        tool = {
            "type": "mcp",
            "server_label": "remote",
            "server_url": url,
            "require_approval": "never",
            "authorization": "secret-token-123",
            "headers": {"X-Secret": "header-secret-456"},
        }
        response = ask(client, auth_headers, input="use the tool", tools=[tool]).json
        second = ask(
            client, auth_headers, input="again", tools=[tool], previous_response_id=response["id"]
        ).json
    assert [item["type"] for item in response["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    assert response["output"][1]["output"] == "ping"
    assert "mcp_list_tools" not in [item["type"] for item in second["output"]]  # listed earlier in the chain
    for response_id in (response["id"], second["id"]):
        stored = row(response_id)
        text = stored.body + stored.input_items + stored.output_items
        assert "secret-token-123" not in text and "header-secret-456" not in text
        assert "remote" in text


def test_builtin_mcp_approval_round_trip(with_mcp, client, auth_headers, fake_upstream):
    fake_upstream.responder = ScriptedModel([("mcp__tools__add", {"a": 2, "b": 3})])
    tool = {"type": "mcp", "server_label": "tools", "require_approval": "always"}
    first = ask(client, auth_headers, input="add", tools=[tool]).json
    request = first["output"][-1]
    assert request["type"] == "mcp_approval_request" and request["name"] == "add"
    approval = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}
    second = ask(client, auth_headers, input=[approval], tools=[tool], previous_response_id=first["id"]).json
    call = next(item for item in second["output"] if item["type"] == "mcp_call")
    assert call["output"] == "5"
    assert second["output"][-1]["content"][0]["text"] == "Tools said: 5"
    unknown = {**approval, "approval_request_id": "mcpr_nope"}
    refused = ask(client, auth_headers, input=[unknown], tools=[tool], previous_response_id=first["id"])
    assert refused.status_code == 422 and refused.json["error"]["param"] == "input[0].approval_request_id"
