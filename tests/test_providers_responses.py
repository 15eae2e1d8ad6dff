"""Responses (JSON, SSE, WebSocket, background) in front of the Anthropic, Gemini and Azure fakes.

A function tool, a built-in MCP server and a stored `previous_response_id` chain, each once per
provider (tests/native_providers.py): Responses never sees a provider's wire format.
"""

from __future__ import annotations

import json

import openai
import pytest

from tests import native_providers
from tests.native_providers import Backend
from tests.polling import wait_until
from tests.test_response_builder import check_stream
from tests.test_responses_ws import open_socket, turn

native, key, settings = native_providers.native, native_providers.key, native_providers.settings  # fixtures

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}
ECHO = {"type": "mcp", "server_label": "tools", "require_approval": "never", "allowed_tools": ["echo"]}


@pytest.fixture
def sdk(live_server, key):
    with openai.OpenAI(base_url=f"{live_server}/v1", api_key=key, max_retries=0, timeout=20) as client:
        yield client


def sse_events(sdk, **body) -> list[dict]:
    """The data of every event of a streamed response."""
    with sdk.responses.with_streaming_response.create(model="native-model", stream=True, **body) as raw:
        return [json.loads(line[6:]) for line in raw.iter_lines() if line.startswith("data: {")]


def test_json_text_and_a_stored_chain(sdk, native: Backend):
    first = sdk.responses.create(model="native-model", input="My name is Ada.")
    assert first.output_text == native.text and first.usage.input_tokens == 12
    second = sdk.responses.create(model="native-model", input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    sent = json.dumps(native.requests()[-1][1])
    assert "My name is Ada." in sent and native.text in sent and "What is my name?" in sent


@pytest.mark.parametrize("stream", [False, True])
def test_a_function_tool_and_its_output(sdk, native: Backend, stream):
    if stream:
        events = sse_events(sdk, input="Weather in Paris?", tools=[WEATHER])
        check_stream(events)
        response = events[-1]["response"]
        [call] = [item for item in response["output"] if item["type"] == "function_call"]
        call_id, name, arguments, response_id = call["call_id"], call["name"], call["arguments"], response["id"]
    else:
        response = sdk.responses.create(model="native-model", input="Weather in Paris?", tools=[WEATHER])
        [call] = [item for item in response.output if item.type == "function_call"]
        call_id, name, arguments, response_id = call.call_id, call.name, call.arguments, response.id
    assert name == "get_weather" and json.loads(arguments) == {"city": "Paris"}
    follow = sdk.responses.create(model="native-model", previous_response_id=response_id, tools=[WEATHER],
                                  input=[{"type": "function_call_output", "call_id": call_id, "output": "sunny"}])
    assert follow.output_text.startswith("The tool said:") and "sunny" in follow.output_text


@pytest.mark.parametrize("stream", [False, True])
def test_a_builtin_mcp_server(sdk, native: Backend, stream):
    if stream:
        events = sse_events(sdk, input="What time is it?", tools=[ECHO])
        check_stream(events)
        assert "response.mcp_call.completed" in {event["type"] for event in events}
        output = events[-1]["response"]["output"]
    else:
        output = sdk.responses.create(model="native-model", input="What time is it?", tools=[ECHO]).model_dump()[
            "output"]
    [call] = [item for item in output if item["type"] == "mcp_call"]
    assert (call["server_label"], call["name"], call["output"]) == ("tools", "echo", "Paris")  # the fakes say Paris
    message = output[-1]["content"][0]["text"]
    assert message.startswith("The tool said:")


def test_websocket_turns_with_a_function_tool_and_a_chain(live_server, key, native: Backend):
    with open_socket(live_server, key) as ws:
        first = turn(ws, model="native-model", input="Weather in Paris?", tools=[WEATHER])
        check_stream(first)
        [call] = [item for item in first[-1]["response"]["output"] if item["type"] == "function_call"]
        second = turn(ws, model="native-model", previous_response_id=first[-1]["response"]["id"], tools=[WEATHER],
                      input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}])
        check_stream(second)
        text = second[-1]["response"]["output"][-1]["content"][0]["text"]
        assert second[-1]["type"] == "response.completed" and "sunny" in text
        third = turn(ws, model="native-model", input="What time is it?", tools=[ECHO])
        assert any(item["type"] == "mcp_call" for item in third[-1]["response"]["output"])


def test_background_response(sdk, native: Backend):
    started = sdk.responses.create(model="native-model", input="hi", background=True)
    wait_until(lambda: sdk.responses.retrieve(started.id).status == "completed", "the background response")
    assert sdk.responses.retrieve(started.id).output_text == native.text
