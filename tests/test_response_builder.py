"""ResponseBuilder: event order, sequence numbers, indexes, and spec validity of every object."""

from __future__ import annotations

import json
from typing import Any

import openresponses_types as spec
import pytest
from openai.types.responses import (
    ResponseMcpCallArgumentsDeltaEvent,
    ResponseMcpCallArgumentsDoneEvent,
    ResponseMcpCallCompletedEvent,
    ResponseMcpCallFailedEvent,
    ResponseMcpCallInProgressEvent,
    ResponseMcpListToolsCompletedEvent,
    ResponseMcpListToolsFailedEvent,
    ResponseMcpListToolsInProgressEvent,
)
from openai.types.responses.response_output_item import McpApprovalRequest, McpCall, McpListTools
from openai.types.responses.tool import Mcp
from pydantic import BaseModel, ValidationError

from gateway.accounting.usage import Usage
from gateway.loop.events import (
    FunctionCallDelta,
    KeepAlive,
    LoopFinished,
    McpApprovalRequested,
    McpCallFinished,
    McpCallStarted,
    McpToolsListed,
    ReasoningDelta,
    TextDelta,
    TurnFinished,
)
from gateway.loop.failure import Failure
from gateway.responses.builder import ResponseBuilder
from gateway.responses.echo import request_echo
from gateway.responses.validation import parse_create_request

SPEC_EVENTS: dict[str, type[BaseModel]] = {
    "response.created": spec.ResponseCreatedStreamingEvent,
    "response.in_progress": spec.ResponseInProgressStreamingEvent,
    "response.completed": spec.ResponseCompletedStreamingEvent,
    "response.incomplete": spec.ResponseIncompleteStreamingEvent,
    "response.failed": spec.ResponseFailedStreamingEvent,
    "response.output_item.added": spec.ResponseOutputItemAddedStreamingEvent,
    "response.output_item.done": spec.ResponseOutputItemDoneStreamingEvent,
    "response.content_part.added": spec.ResponseContentPartAddedStreamingEvent,
    "response.content_part.done": spec.ResponseContentPartDoneStreamingEvent,
    "response.output_text.delta": spec.ResponseOutputTextDeltaStreamingEvent,
    "response.output_text.done": spec.ResponseOutputTextDoneStreamingEvent,
    "response.reasoning.delta": spec.ResponseReasoningDeltaStreamingEvent,
    "response.reasoning.done": spec.ResponseReasoningDoneStreamingEvent,
    "response.function_call_arguments.delta": spec.ResponseFunctionCallArgumentsDeltaStreamingEvent,
    "response.function_call_arguments.done": spec.ResponseFunctionCallArgumentsDoneStreamingEvent,
    "error": spec.ErrorStreamingEvent,
}
# MCP is not in the OpenResponses spec; these are OpenAI's own types (openai SDK).
MCP_EVENTS: dict[str, type[BaseModel]] = {
    "response.mcp_list_tools.in_progress": ResponseMcpListToolsInProgressEvent,
    "response.mcp_list_tools.completed": ResponseMcpListToolsCompletedEvent,
    "response.mcp_list_tools.failed": ResponseMcpListToolsFailedEvent,
    "response.mcp_call.in_progress": ResponseMcpCallInProgressEvent,
    "response.mcp_call_arguments.delta": ResponseMcpCallArgumentsDeltaEvent,
    "response.mcp_call_arguments.done": ResponseMcpCallArgumentsDoneEvent,
    "response.mcp_call.completed": ResponseMcpCallCompletedEvent,
    "response.mcp_call.failed": ResponseMcpCallFailedEvent,
}
MCP_ITEMS: dict[str, type[BaseModel]] = {
    "mcp_list_tools": McpListTools,
    "mcp_call": McpCall,
    "mcp_approval_request": McpApprovalRequest,
}
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def spec_json(model: type[BaseModel], data: dict[str, Any]) -> None:
    """Validate as the wire JSON, strictly (enums must carry their exact values)."""
    model.model_validate_json(json.dumps(data), strict=True)


def validate_mcp_item(item: dict[str, Any]) -> None:
    assert item["status"] in {"in_progress", "completed", "failed", "incomplete"}
    if item["type"] == "mcp_call":
        # mcp_call.error is a plain string here (OpenAI's documented shape); newer SDKs type an object.
        assert item["error"] is None or isinstance(item["error"], str)
        item = {**item, "error": None}
    MCP_ITEMS[item["type"]].model_validate(item)


def validate_response(response: dict[str, Any]) -> None:
    """The spec's ResponseResource for the spec part; MCP items and tools by OpenAI's types."""
    spec_part = {
        **response,
        "output": [item for item in response["output"] if item["type"] not in MCP_ITEMS],
        "tools": [tool for tool in response["tools"] if tool["type"] == "function"],
    }
    spec_json(spec.ResponseResource, spec_part)
    for item in response["output"]:
        if item["type"] in MCP_ITEMS:
            validate_mcp_item(item)
    for tool in response["tools"]:
        if tool["type"] == "mcp":
            assert "authorization" not in tool and "headers" not in tool
            Mcp.model_validate(tool)


def validate_event(event: dict[str, Any]) -> None:
    if event["type"] in MCP_EVENTS:
        MCP_EVENTS[event["type"]].model_validate(event)
        return
    envelope = dict(event)
    if "response" in event:
        validate_response(event["response"])
        envelope["response"] = {**event["response"], "output": [], "tools": []}
    if "item" in event and event["item"]["type"] in MCP_ITEMS:
        validate_mcp_item(event["item"])
        envelope["item"] = None
    spec_json(SPEC_EVENTS[event["type"]], envelope)


def check_stream(events: list[dict[str, Any]]) -> None:
    """Spec validity plus the invariants of a whole stream."""
    for event in events:
        validate_event(event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
    assert events[0]["response"]["status"] == "in_progress"
    assert [event["type"] in TERMINAL for event in events].count(True) == 1
    assert events[-1]["type"] in TERMINAL
    check_item_lifecycles(events)


def check_item_lifecycles(events: list[dict[str, Any]]) -> None:
    """Items open in output order, one at a time, and events reference the open item's id."""
    final = events[-1]["response"]["output"]
    ids: dict[int, str] = {}
    open_index = None
    for event in events:
        index = event.get("output_index")
        if event["type"] == "response.output_item.added":
            assert open_index is None and index == len(ids)
            ids[index] = event["item"]["id"]
            open_index = index
        elif index is not None:
            assert index == open_index
            assert event.get("item_id", ids[index]) == ids[index]
        if event["type"] == "response.output_item.done":
            assert event["item"] == final[index]
            open_index = None
    assert open_index is None and len(ids) == len(final)


def builder(**body: Any) -> ResponseBuilder:
    request = parse_create_request({"model": "smollm2", "input": "hi", **body})
    return ResponseBuilder("resp_test", request_echo(request), 1_700_000_000, "smollm2")


def run(b: ResponseBuilder, loop_events: list[Any]) -> list[dict[str, Any]]:
    events = b.start()
    for loop_event in loop_events:
        events += b.feed(loop_event)
    check_stream(events)
    return events


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"].removeprefix("response.") for event in events]


DONE = LoopFinished("completed", Usage(10, 5, cached_tokens=2, reasoning_tokens=1))
ITEM_OPEN = ["output_item.added"]
TEXT_OPEN = ["output_item.added", "content_part.added"]
TEXT_CLOSE = ["output_text.done", "content_part.done", "output_item.done"]


def test_plain_text() -> None:
    b = builder()
    events = run(b, [TextDelta("Hel"), TextDelta(""), TextDelta("lo"), TurnFinished("stop", Usage()), DONE])
    assert types_of(events) == [
        "created",
        "in_progress",
        *TEXT_OPEN,
        "output_text.delta",
        "output_text.delta",
        *TEXT_CLOSE,
        "completed",
    ]
    final = events[-1]["response"]
    message = final["output"][0]
    assert message["id"].startswith("msg_") and message["status"] == "completed"
    assert message["content"] == [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]
    assert final["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 15,
    }
    assert final["status"] == "completed" and isinstance(final["completed_at"], int)
    assert b.response() == final


def test_reasoning_then_text() -> None:
    events = run(builder(), [ReasoningDelta("Think"), ReasoningDelta("ing"), TextDelta("Answer"), DONE])
    assert types_of(events) == [
        "created",
        "in_progress",
        *TEXT_OPEN,
        "reasoning.delta",
        "reasoning.delta",
        "reasoning.done",
        "content_part.done",
        "output_item.done",
        *TEXT_OPEN,
        "output_text.delta",
        *TEXT_CLOSE,
        "completed",
    ]
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["id"].startswith("rs_") and reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Thinking"}]
    assert events[4]["content_index"] == 0 and events[4]["output_index"] == 0
    assert message["content"][0]["text"] == "Answer"


def test_two_parallel_function_calls() -> None:
    events = run(
        builder(
            tools=[{"type": "function", "name": "get_weather"}, {"type": "function", "name": "get_time"}]
        ),
        [
            FunctionCallDelta(0, "call_a", "get_weather", ""),
            FunctionCallDelta(0, arguments='{"city":'),
            FunctionCallDelta(0, arguments='"Paris"}'),
            FunctionCallDelta(1, "call_b", "get_time", "{}"),
            TurnFinished("tool_calls", Usage(3, 4)),
            DONE,
        ],
    )
    assert types_of(events) == [
        "created",
        "in_progress",
        *ITEM_OPEN,
        "function_call_arguments.delta",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        *ITEM_OPEN,
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "completed",
    ]
    first, second = events[-1]["response"]["output"]
    assert (first["call_id"], first["name"], first["arguments"]) == (
        "call_a",
        "get_weather",
        '{"city":"Paris"}',
    )
    assert (second["call_id"], second["name"], second["arguments"]) == ("call_b", "get_time", "{}")
    assert first["id"].startswith("fc_") and first["status"] == second["status"] == "completed"
    assert events[5]["arguments"] == '{"city":"Paris"}'


def test_text_then_function_call() -> None:
    events = run(
        builder(tools=[{"type": "function", "name": "lookup"}]),
        [TextDelta("Let me check."), FunctionCallDelta(0, "call_1", "lookup", '{"q": 1}'), DONE],
    )
    assert types_of(events) == [
        "created",
        "in_progress",
        *TEXT_OPEN,
        "output_text.delta",
        *TEXT_CLOSE,
        *ITEM_OPEN,
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "completed",
    ]
    assert [item["type"] for item in events[-1]["response"]["output"]] == ["message", "function_call"]


def test_function_call_waits_for_its_name_and_generates_a_call_id() -> None:
    b = builder()
    assert b.start()[-1]["sequence_number"] == 1
    assert b.feed(FunctionCallDelta(0, arguments='{"a"')) == []
    events = b.feed(FunctionCallDelta(0, name="late", arguments=": 1}"))
    assert types_of(events) == ["output_item.added", "function_call_arguments.delta"]
    assert events[0]["item"]["name"] == "late" and events[0]["item"]["call_id"].startswith("call_")
    assert events[1]["delta"] == '{"a": 1}'


def test_call_indexes_restart_each_turn() -> None:
    turn = [FunctionCallDelta(0, "call_x", "f", "{}"), TurnFinished("tool_calls", Usage())]
    events = run(
        builder(),
        [*turn, FunctionCallDelta(0, "call_y", "f", "{}"), TurnFinished("tool_calls", Usage()), DONE],
    )
    assert [item["call_id"] for item in events[-1]["response"]["output"]] == ["call_x", "call_y"]


MCP_TOOLS = [{"name": "get_time", "description": "Now", "inputSchema": {"type": "object"}}]


def test_mcp_list_and_calls_success_and_failure() -> None:
    b = builder(tools=[{"type": "mcp", "server_label": "time"}])
    events = run(
        b,
        [
            McpToolsListed("time", MCP_TOOLS),
            McpCallStarted("mcp_1", "time", "get_time", '{"tz": "UTC"}'),
            McpCallFinished("mcp_1", output="12:00"),
            McpCallStarted("mcp_2", "time", "get_time", ""),
            KeepAlive(),
            McpCallFinished("mcp_2", error="server exploded"),
            TextDelta("It is noon."),
            DONE,
        ],
    )
    call = ["output_item.added", "mcp_call.in_progress"]
    assert types_of(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "output_item.done",
        *call,
        "mcp_call_arguments.delta",
        "mcp_call_arguments.done",
        "mcp_call.completed",
        "output_item.done",
        *call,
        "mcp_call_arguments.done",
        "mcp_call.failed",
        "output_item.done",
        *TEXT_OPEN,
        "output_text.delta",
        *TEXT_CLOSE,
        "completed",
    ]
    listing, ok, failed, message = events[-1]["response"]["output"]
    assert listing["id"].startswith("mcp") and listing["status"] == "completed"
    assert listing["tools"] == [
        {"name": "get_time", "description": "Now", "input_schema": {"type": "object"}, "annotations": None}
    ]
    assert (ok["status"], ok["output"], ok["error"], ok["arguments"]) == (
        "completed",
        "12:00",
        None,
        '{"tz": "UTC"}',
    )
    assert (failed["status"], failed["output"], failed["error"]) == ("failed", None, "server exploded")
    assert message["type"] == "message" and events[-1]["response"]["status"] == "completed"


def test_mcp_list_tools_failure() -> None:
    events = run(builder(), [McpToolsListed("docs", error="unreachable"), DONE])
    assert types_of(events)[2:6] == [
        "output_item.added",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.failed",
        "output_item.done",
    ]
    assert events[5]["item"]["error"] == "unreachable" and events[5]["item"]["status"] == "failed"


def test_approval_request() -> None:
    events = run(
        builder(tools=[{"type": "mcp", "server_label": "time", "require_approval": "always"}]),
        [McpToolsListed("time", MCP_TOOLS), McpApprovalRequested("mcpr_1", "time", "get_time", "{}"), DONE],
    )
    assert types_of(events)[6:] == ["output_item.added", "output_item.done", "completed"]
    request = events[-1]["response"]["output"][1]
    assert request == {
        "id": "mcpr_1",
        "type": "mcp_approval_request",
        "status": "completed",
        "server_label": "time",
        "name": "get_time",
        "arguments": "{}",
    }


@pytest.mark.parametrize("turn_end", [[TurnFinished("length", Usage(1, 16))], []])
def test_incomplete_by_max_output_tokens(turn_end: list[Any]) -> None:
    stop = LoopFinished("incomplete", Usage(1, 16), incomplete_reason="max_output_tokens")
    events = run(builder(max_output_tokens=16), [TextDelta("Once upon"), *turn_end, stop])
    assert types_of(events)[-4:] == [*TEXT_CLOSE, "incomplete"]
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete" and final["completed_at"] is None
    assert final["max_output_tokens"] == 16


def test_failure_mid_stream() -> None:
    b = builder()
    events = b.start() + b.feed(TextDelta("partial"))
    failure = Failure("The upstream model timed out.", 504, code="upstream_timeout")
    events.append(b.error_event(failure))
    events += b.finish(LoopFinished("failed", Usage(), failure=failure))
    check_stream(events)
    error = next(event for event in events if event["type"] == "error")
    assert error["error"] == {
        "type": "api_error",
        "code": "upstream_timeout",
        "message": "The upstream model timed out.",
        "param": None,
    }
    assert (error["code"], error["message"]) == ("upstream_timeout", "The upstream model timed out.")
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.failed"
    assert final["error"] == {"type": "api_error", "code": "upstream_timeout", "message": "The upstream model timed out."}
    assert final["output"][0]["status"] == "incomplete"


def test_finished_builder_refuses_more_events() -> None:
    b = builder()
    b.start()
    b.finish(DONE)
    assert b.feed(KeepAlive()) == []
    with pytest.raises(RuntimeError):
        b.feed(TextDelta("late"))
    with pytest.raises(RuntimeError):
        b.finish(DONE)


def test_finish_of_unknown_mcp_call_is_a_bug() -> None:
    b = builder()
    b.start()
    with pytest.raises(ValueError):
        b.feed(McpCallFinished("mcp_nope", output="x"))


def test_open_mcp_call_is_incomplete_when_the_run_fails() -> None:
    b = builder()
    events = b.start() + b.feed(McpCallStarted("mcp_9", "time", "get_time", "{}"))
    events += b.finish(LoopFinished("failed", Usage(), failure=Failure("x")))
    check_stream(events)
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"


def test_response_echo_has_every_field_and_hides_mcp_secrets() -> None:
    b = builder(
        tools=[
            {"type": "function", "name": "f"},
            {
                "type": "mcp",
                "server_label": "docs",
                "server_url": "https://mcp.example.com/mcp",
                "authorization": "sk-secret-token",
                "headers": {"X-Tenant": "acme"},
                "allowed_tools": ["search"],
            },
        ],
        text={"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
        metadata={"k": "v"},
        temperature=0.2,
        instructions="Be brief.",
    )
    response = b.response()
    validate_response(response)
    assert "sk-secret-token" not in json.dumps(response) and "acme" not in json.dumps(response)
    assert response["tools"][0] == {
        "type": "function",
        "name": "f",
        "description": None,
        "parameters": None,
        "strict": None,
    }
    assert response["tools"][1]["server_url"] == "https://mcp.example.com/mcp"
    assert response["text"]["format"]["name"] == "out" and response["text"]["format"]["strict"] is True
    assert (response["metadata"], response["temperature"], response["instructions"]) == (
        {"k": "v"},
        0.2,
        "Be brief.",
    )
    assert builder().response()["metadata"] == {}
    response["output"].append({"mutated": True})
    assert b.response()["output"] == []


def test_validators_reject_broken_objects() -> None:
    """The spec checks above are not vacuous."""
    events = run(builder(), [TextDelta("x"), DONE])
    broken_part = json.loads(json.dumps(events[3]))
    del broken_part["part"]["annotations"]
    with pytest.raises(ValidationError):
        validate_event(broken_part)
    broken_response = json.loads(json.dumps(events[-1]["response"]))
    del broken_response["usage"]["input_tokens_details"]
    with pytest.raises(ValidationError):
        validate_response(broken_response)
    with pytest.raises(ValidationError):
        validate_event({**events[4], "type": "response.mcp_call.completed", "item_id": None})
