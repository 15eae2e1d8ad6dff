"""Translation between Responses items and chat-completions messages and parameters."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.accounting.usage import Usage
from gateway.errors import BadInput
from gateway.loop.events import (
    FunctionCallDelta,
    LoopFinished,
    McpCallFinished,
    McpCallStarted,
    McpToolsListed,
    ReasoningDelta,
    TextDelta,
    TurnFinished,
)
from gateway.mcp.naming import tool_function_name
from gateway.responses.builder import ResponseBuilder
from gateway.responses.echo import request_echo
from gateway.responses.translate import (
    allowed_function_names,
    allowed_mcp_targets,
    input_to_messages,
    output_items_to_input,
    request_to_chat_params,
)
from gateway.responses.validation import parse_create_request

IMAGE = "data:image/png;base64,iVBORw0KGgo="
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}
CALL_2 = {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"}


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


MESSAGE_CASES = [
    ("string input", "Hi", None, [{"role": "user", "content": "Hi"}]),
    (
        "instructions lead",
        "Hi",
        "Be brief.",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    ),
    (
        "roles, developer becomes system",
        [
            {"type": "message", "role": "system", "content": "S"},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "D"}]},
            {"role": "user", "content": "U"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A"}]},
        ],
        None,
        [
            {"role": "system", "content": "S"},
            {"role": "system", "content": "D"},
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"},
        ],
    ),
    (
        "text parts join into a string",
        [
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
            }
        ],
        None,
        [{"role": "user", "content": "a\nb"}],
    ),
    (
        "image and file parts become chat parts",
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look"},
                    {"type": "input_image", "image_url": IMAGE, "detail": "low"},
                    {
                        "type": "input_file",
                        "file_data": "data:application/pdf;base64,AA==",
                        "filename": "a.pdf",
                    },
                ],
            }
        ],
        None,
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
                    {
                        "type": "file",
                        "file": {"file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"},
                    },
                ],
            }
        ],
    ),
    (
        "parallel calls make one assistant message, outputs make tool messages",
        [
            {"role": "user", "content": "Weather and time?"},
            CALL,
            CALL_2,
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": "noon"},
        ],
        None,
        [
            {"role": "user", "content": "Weather and time?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    tool_call("call_1", "get_weather", '{"city":"Paris"}'),
                    tool_call("call_2", "get_time", "{}"),
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        ],
    ),
    (
        "assistant text followed by a call shares one message",
        [{"role": "assistant", "content": "Checking."}, CALL],
        None,
        [
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [tool_call("call_1", "get_weather", '{"city":"Paris"}')],
            }
        ],
    ),
    (
        "reasoning, listings and approvals are not sent",
        [
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "hmm"}]},
            {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "time", "tools": []},
            {
                "type": "mcp_approval_request",
                "id": "mcpr_1",
                "server_label": "t",
                "name": "n",
                "arguments": "{}",
            },
            {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True},
            {"role": "user", "content": "Go"},
        ],
        None,
        [{"role": "user", "content": "Go"}],
    ),
    (
        "mcp calls become a tool call and its result",
        [
            {
                "type": "mcp_call",
                "id": "mcp_1",
                "server_label": "time",
                "name": "now",
                "arguments": "{}",
                "output": "12:00",
            },
            {
                "type": "mcp_call",
                "id": "mcp_2",
                "server_label": "time",
                "name": "now",
                "arguments": "{}",
                "error": "boom",
            },
        ],
        None,
        [
            {"role": "assistant", "content": "", "tool_calls": [tool_call("mcp_1", "mcp__time__now", "{}")]},
            {"role": "tool", "tool_call_id": "mcp_1", "content": "12:00"},
            {"role": "assistant", "content": "", "tool_calls": [tool_call("mcp_2", "mcp__time__now", "{}")]},
            {"role": "tool", "tool_call_id": "mcp_2", "content": "Error: boom"},
        ],
    ),
    (
        "tool output parts",
        [
            CALL,
            {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": [
                    {"type": "input_text", "text": "sun"},
                    {"type": "input_image", "image_url": IMAGE},
                ],
            },
        ],
        None,
        [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [tool_call("call_1", "get_weather", '{"city":"Paris"}')],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": [
                    {"type": "text", "text": "sun"},
                    {"type": "image_url", "image_url": {"url": IMAGE, "detail": "auto"}},
                ],
            },
        ],
    ),
]


@pytest.mark.parametrize(
    "items,instructions,expected",
    [case[1:] for case in MESSAGE_CASES],
    ids=[case[0] for case in MESSAGE_CASES],
)
def test_input_to_messages(items: Any, instructions: str | None, expected: list[dict[str, Any]]) -> None:
    assert input_to_messages(items, instructions) == expected


@pytest.mark.parametrize("items,instructions,expected", [case[1:] for case in MESSAGE_CASES[2:]])
def test_validated_items_translate_the_same(items: Any, instructions: str | None, expected: Any) -> None:
    """Items that went through the request schema translate like the raw dicts."""
    request = parse_create_request({"model": "m", "input": items})
    assert input_to_messages(request.input_items(), instructions) == expected


def test_item_reference_is_rejected_with_its_position() -> None:
    with pytest.raises(BadInput) as caught:
        input_to_messages([{"role": "user", "content": "x"}, {"type": "item_reference", "id": "msg_1"}], None)
    assert caught.value.param == "input[1]"


def chat_params(**body: Any) -> dict[str, Any]:
    return request_to_chat_params(parse_create_request({"model": "m", "input": "hi", **body}))


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather",
    "parameters": {"type": "object"},
    "strict": True,
}
TIME = {"type": "function", "name": "get_time"}
CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object"},
        "strict": True,
    },
}
CHAT_TIME = {"type": "function", "function": {"name": "get_time"}}
MCP = {"type": "mcp", "server_label": "time"}

PARAM_CASES = [
    ("defaults add nothing", {}, {}),
    (
        "function tools",
        {"tools": [WEATHER, TIME]},
        {"tools": [CHAT_WEATHER, CHAT_TIME], "tool_choice": "auto", "parallel_tool_calls": True},
    ),
    (
        "forced function",
        {
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False,
        },
        {
            "tools": [CHAT_WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
        },
    ),
    (
        "allowed_tools filters the list",
        {
            "tools": [WEATHER, TIME],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "get_time"}],
            },
        },
        {"tools": [CHAT_TIME], "tool_choice": "required", "parallel_tool_calls": True},
    ),
    (
        "mcp choice with a name forces the prefixed function",
        {"tools": [MCP], "tool_choice": {"type": "mcp", "server_label": "time", "name": "now"}},
        {
            "tool_choice": {"type": "function", "function": {"name": "mcp__time__now"}},
            "parallel_tool_calls": True,
        },
    ),
    (
        "mcp choice without a name requires a tool",
        {"tools": [MCP], "tool_choice": {"type": "mcp", "server_label": "time"}},
        {"tool_choice": "required", "parallel_tool_calls": True},
    ),
    (
        "json_object",
        {"text": {"format": {"type": "json_object"}}},
        {"response_format": {"type": "json_object"}},
    ),
    (
        "json_schema",
        {
            "text": {
                "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
            }
        },
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
            }
        },
    ),
    ("text format adds nothing", {"text": {"format": {"type": "text"}}}, {}),
    (
        "sampling and pass-through",
        {
            "temperature": 0.5,
            "top_p": 0.9,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "safety_identifier": "u1",
            "prompt_cache_key": "k",
            "service_tier": "flex",
            "user": "bob",
            "max_output_tokens": 64,
            "metadata": {"a": "b"},
        },
        {
            "temperature": 0.5,
            "top_p": 0.9,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "safety_identifier": "u1",
            "prompt_cache_key": "k",
            "service_tier": "flex",
            "user": "bob",
        },
    ),
    ("top_logprobs", {"top_logprobs": 3}, {"logprobs": True, "top_logprobs": 3}),
    (
        "logprobs via include",
        {"include": ["message.output_text.logprobs"]},
        {"logprobs": True, "top_logprobs": 0},
    ),
    ("reasoning effort", {"reasoning": {"effort": "low", "summary": "auto"}}, {"reasoning_effort": "low"}),
]


@pytest.mark.parametrize(
    "body,expected", [case[1:] for case in PARAM_CASES], ids=[case[0] for case in PARAM_CASES]
)
def test_request_to_chat_params(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert chat_params(**body) == expected


def test_allowed_tool_sets() -> None:
    request = parse_create_request(
        {
            "model": "m",
            "input": "x",
            "tools": [TIME, MCP, {"type": "mcp", "server_label": "docs"}],
            "tool_choice": {
                "type": "allowed_tools",
                "tools": [
                    {"type": "function", "name": "get_time"},
                    {"type": "mcp", "server_label": "time", "name": "now"},
                    {"type": "mcp", "server_label": "docs"},
                ],
            },
        }
    )
    assert allowed_function_names(request) == {"get_time"}
    assert allowed_mcp_targets(request) == {"time": {"now"}, "docs": None}
    plain = parse_create_request({"model": "m", "input": "x", "tools": [TIME]})
    assert allowed_function_names(plain) is None and allowed_mcp_targets(plain) is None


def test_mcp_tool_function_name() -> None:
    assert tool_function_name("time", "get_current_time") == "mcp__time__get_current_time"


def stored_output() -> list[dict[str, Any]]:
    """A real builder output: reasoning, listing, an MCP call, text, then a function call."""
    b = ResponseBuilder("resp_1", request_echo(parse_create_request({"model": "m", "input": "x"})), 1, "m")
    b.start()
    for event in [
        ReasoningDelta("hmm"),
        McpToolsListed("time", [{"name": "now", "input_schema": {}}]),
        McpCallStarted("mcp_1", "time", "now", "{}"),
        McpCallFinished("mcp_1", output="12:00"),
        TextDelta("It is noon. "),
        FunctionCallDelta(0, "call_9", "notify", '{"at": "12:00"}'),
        TurnFinished("tool_calls", Usage()),
    ]:
        b.feed(event)
    b.finish(LoopFinished("completed", Usage()))
    return b.response()["output"]


def test_output_items_replay_as_next_input() -> None:
    replay = output_items_to_input(stored_output())
    assert [item["type"] for item in replay] == ["reasoning", "mcp_call", "message", "function_call"]
    assert replay[2] == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "It is noon. ", "annotations": [], "logprobs": []}],
    }
    follow_up = [*replay, {"type": "function_call_output", "call_id": "call_9", "output": "ok"}]
    request = parse_create_request({"model": "m", "input": follow_up})
    assert input_to_messages(request.input_items(), None) == [
        {"role": "assistant", "content": "", "tool_calls": [tool_call("mcp_1", "mcp__time__now", "{}")]},
        {"role": "tool", "tool_call_id": "mcp_1", "content": "12:00"},
        {
            "role": "assistant",
            "content": "It is noon. ",
            "tool_calls": [tool_call("call_9", "notify", '{"at": "12:00"}')],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "ok"},
    ]


TEXT = st.text(min_size=1, max_size=20)
CALL_IDS = st.text("abcdefghij0123456789_", min_size=1, max_size=12)
NAMES = st.from_regex(r"[a-zA-Z0-9_-]{1,20}", fullmatch=True)
INPUT_PARTS = st.lists(st.builds(lambda text: {"type": "input_text", "text": text}, TEXT), min_size=1, max_size=3)
OUTPUT_PARTS = st.lists(st.builds(lambda text: {"type": "output_text", "text": text}, TEXT), min_size=1, max_size=3)
INPUT_ITEMS = st.one_of(
    st.builds(lambda role, content: {"role": role, "content": content},
              st.sampled_from(["user", "system", "developer"]), TEXT | INPUT_PARTS),
    st.builds(lambda content: {"type": "message", "role": "assistant", "content": content}, TEXT | OUTPUT_PARTS),
    st.builds(lambda call_id, name, arguments: {"type": "function_call", "call_id": call_id, "name": name,
                                                "arguments": arguments}, CALL_IDS, NAMES, TEXT),
    st.builds(lambda call_id, output: {"type": "function_call_output", "call_id": call_id, "output": output},
              CALL_IDS, TEXT | INPUT_PARTS),
    st.builds(lambda call_id, label, name, output: {"type": "mcp_call", "id": call_id, "server_label": label,
                                                    "name": name, "arguments": "{}", "output": output},
              CALL_IDS, NAMES, NAMES, TEXT),
    st.builds(lambda summary: {"type": "reasoning", "summary": [{"type": "summary_text", "text": summary}]}, TEXT),
)


def item_trace(item: dict[str, Any]) -> list[tuple[str, ...]]:
    """What an input item must become, in order: texts by role, calls and outputs by id."""
    kind = item.get("type", "message")
    if kind == "message":
        content, role = item["content"], {"developer": "system"}.get(item["role"], item["role"])
        joiner = "" if role == "assistant" else "\n"
        return [("text", role, content if isinstance(content, str) else joiner.join(p["text"] for p in content))]
    if kind == "function_call":
        return [("call", item["call_id"], item["name"])]
    if kind == "function_call_output":
        return [("output", item["call_id"])]
    if kind == "mcp_call":
        return [("call", item["id"], tool_function_name(item["server_label"], item["name"])), ("output", item["id"])]
    return []  # reasoning is not replayed


def message_trace(message: dict[str, Any]) -> list[tuple[str, ...]]:
    """The same view of a chat message (the empty assistant text that only carries calls left out)."""
    if message["role"] == "tool":
        return [("output", message["tool_call_id"])]
    text = [("text", message["role"], message["content"])] if message["content"] != "" else []
    return text + [("call", call["id"], call["function"]["name"]) for call in message.get("tool_calls", [])]


@settings(deadline=None)
@given(st.lists(INPUT_ITEMS, max_size=8), st.none() | TEXT)
def test_valid_input_items_translate_keeping_content_and_order(items, instructions):
    request = parse_create_request({"model": "m", "input": items, "instructions": instructions})
    messages = input_to_messages(request.input_items(), request.instructions)
    expected = [("text", "system", instructions)] if instructions else []
    expected += [entry for item in items for entry in item_trace(item)]
    assert [entry for message in messages for entry in message_trace(message)] == expected
    assert all(message["role"] in {"system", "user", "assistant", "tool"} for message in messages)
