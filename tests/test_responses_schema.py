"""Request validation for POST /v1/responses: accepted shapes, 400s and 422s with their param."""

from __future__ import annotations

import json
from typing import Any

import openresponses_types as spec
import pytest

from gateway.errors import BadInput, GatewayError, InvalidRequest, UnknownParameter
from gateway.responses.schema import McpTool
from gateway.responses.validation import parse_create_request

IMAGE = "data:image/png;base64,iVBORw0KGgo="


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "smollm2", "input": "hi", **fields}


SPEC_VALID = [
    body(),
    body(
        input=[
            {"type": "message", "role": "system", "content": "Be nice."},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Rules."}]},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": IMAGE, "detail": "high"},
                    {"type": "input_image", "image_url": "https://example.com/a.png"},
                    {
                        "type": "input_file",
                        "file_data": "data:application/pdf;base64,AA==",
                        "filename": "a.pdf",
                    },
                ],
            },
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
            {"type": "message", "role": "assistant", "phase": "final_answer", "content": "Done."},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thought"}]},
            {"type": "item_reference", "id": "msg_1"},
        ],
        instructions="Be brief.",
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            }
        ],
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "get_weather"}],
        },
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
        temperature=0.3,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        max_output_tokens=256,
        max_tool_calls=3,
        reasoning={"effort": "low", "summary": "auto"},
        top_logprobs=2,
        truncation="auto",
        metadata={"k": "v"},
        include=["message.output_text.logprobs", "reasoning.encrypted_content"],
        service_tier="default",
        safety_identifier="user-1",
        prompt_cache_key="cache-1",
        store=False,
        stream=True,
        stream_options={"include_obfuscation": False},
        background=False,
        previous_response_id="resp_1",
    ),
    body(
        tool_choice="required", tools=[{"type": "function", "name": "f"}], text={"format": {"type": "text"}}
    ),
]


@pytest.mark.parametrize("payload", SPEC_VALID)
def test_spec_valid_requests_are_accepted(payload: dict[str, Any]) -> None:
    spec.CreateResponseBody.model_validate_json(json.dumps(payload))  # the spec agrees they are valid
    request = parse_create_request(payload)
    assert request.model == "smollm2"


def test_defaults() -> None:
    request = parse_create_request(body())
    assert (request.store, request.stream, request.background) == (True, False, False)
    assert (request.tool_choice, request.parallel_tool_calls, request.truncation) == (
        "auto",
        True,
        "disabled",
    )
    assert request.metadata == {} and request.tools == [] and request.text.format.type == "text"
    assert request.input_items() == [{"type": "message", "role": "user", "content": "hi"}]


def test_openai_only_shapes_are_accepted() -> None:
    """Beyond the spec: MCP declarations and items, approvals, replayed output fields."""
    request = parse_create_request(
        body(
            input=[
                {"role": "user", "content": "hi"},
                {
                    "type": "message",
                    "id": "msg_1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "x", "annotations": [], "logprobs": []}],
                },
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": "t"}],
                },
                {
                    "type": "mcp_list_tools",
                    "id": "mcpl_1",
                    "server_label": "time",
                    "tools": [],
                    "error": None,
                },
                {
                    "type": "mcp_call",
                    "id": "mcp_1",
                    "server_label": "time",
                    "name": "now",
                    "arguments": "{}",
                    "error": "x",
                },
                {
                    "type": "mcp_approval_request",
                    "id": "mcpr_1",
                    "server_label": "time",
                    "name": "now",
                    "arguments": "{}",
                },
                {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True},
                {"id": "msg_0"},
            ],
            tools=[
                {
                    "type": "mcp",
                    "server_label": "time",
                    "allowed_tools": ["now"],
                    "require_approval": "never",
                },
                {
                    "type": "mcp",
                    "server_label": "docs",
                    "server_url": "https://mcp.example.com/mcp",
                    "authorization": "tok",
                    "headers": {"X-Tenant": "acme"},
                    "allowed_tools": {"tool_names": ["search"], "read_only": True},
                    "require_approval": {"never": {"tool_names": ["search"]}},
                    "server_description": "Docs",
                },
            ],
            tool_choice={"type": "mcp", "server_label": "docs", "name": "search"},
        )
    )
    assert [tool.server_label for tool in request.mcp_tools()] == ["time", "docs"]
    assert [item["type"] for item in request.input_items()][-1] == "item_reference"


INVALID_400 = [
    ("missing model", {"input": "x"}, "model"),
    ("missing input", {"model": "m"}, "input"),
    ("empty model", body(model=""), "model"),
    ("input not str or list", body(input={"role": "user"}), "input"),
    (
        "bad item type",
        body(input=[{"role": "user", "content": "x"}, {"type": "web_search_call"}]),
        "input[1].type",
    ),
    ("item without type or role", body(input=[{"content": "x"}]), "input[0].type"),
    ("bad role", body(input=[{"type": "message", "role": "tool", "content": "x"}]), "input[0].role"),
    (
        "bad content part type",
        body(
            input=[
                {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_audio"}]}
            ]
        ),
        "input[0].content[1].type",
    ),
    (
        "missing text",
        body(input=[{"role": "user", "content": [{"type": "input_text"}]}]),
        "input[0].content[0].text",
    ),
    (
        "http image url",
        body(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/a.png"}]}]),
        "input[0].content[0].image_url",
    ),
    (
        "bad image detail",
        body(
            input=[
                {"role": "user", "content": [{"type": "input_image", "image_url": IMAGE, "detail": "max"}]}
            ]
        ),
        "input[0].content[0].detail",
    ),
    (
        "file without payload",
        body(input=[{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]),
        "input[0].content[0]",
    ),
    (
        "output_text in a user message",
        body(input=[{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]),
        "input[0].content[0].type",
    ),
    (
        "input_text in an assistant message",
        body(input=[{"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}]),
        "input[0].content[0].type",
    ),
    (
        "image in a system message",
        body(input=[{"role": "system", "content": [{"type": "input_image", "image_url": IMAGE}]}]),
        "input[0].content[0].type",
    ),
    (
        "function_call without arguments",
        body(input=[{"type": "function_call", "call_id": "c", "name": "f"}]),
        "input[0].arguments",
    ),
    (
        "function_call_output without call_id",
        body(input=[{"type": "function_call_output", "output": "x"}]),
        "input[0].call_id",
    ),
    (
        "approval without approve",
        body(input=[{"type": "mcp_approval_response", "approval_request_id": "a"}]),
        "input[0].approve",
    ),
    ("unsupported tool type", body(tools=[{"type": "web_search"}]), "tools[0].type"),
    (
        "chat-style function tool",
        body(tools=[{"type": "function", "function": {"name": "f"}}]),
        "tools[0].name",
    ),
    ("bad function name", body(tools=[{"type": "function", "name": "has space"}]), "tools[0].name"),
    ("mcp without label", body(tools=[{"type": "mcp", "server_url": "https://x"}]), "tools[0].server_label"),
    (
        "bad require_approval",
        body(tools=[{"type": "mcp", "server_label": "t", "require_approval": "sometimes"}]),
        "tools[0].require_approval",
    ),
    ("bad tool_choice string", body(tool_choice="any"), "tool_choice"),
    ("bad tool_choice type", body(tool_choice={"type": "file_search"}), "tool_choice.type"),
    ("empty allowed_tools", body(tool_choice={"type": "allowed_tools", "tools": []}), "tool_choice.tools"),
    ("bad text format", body(text={"format": {"type": "xml"}}), "text.format.type"),
    (
        "json_schema without schema",
        body(text={"format": {"type": "json_schema", "name": "x"}}),
        "text.format.schema",
    ),
    ("temperature type", body(temperature="1"), "temperature"),
    ("temperature range", body(temperature=2.5), "temperature"),
    ("top_p range", body(top_p=1.5), "top_p"),
    ("top_logprobs range", body(top_logprobs=21), "top_logprobs"),
    ("max_output_tokens zero", body(max_output_tokens=0), "max_output_tokens"),
    ("max_tool_calls zero", body(max_tool_calls=0), "max_tool_calls"),
    ("stream type", body(stream="yes"), "stream"),
    ("store type", body(store=1), "store"),
    ("bad effort", body(reasoning={"effort": "extreme"}), "reasoning.effort"),
    ("bad truncation", body(truncation="middle"), "truncation"),
    ("bad include", body(include=["everything"]), "include[0]"),
    ("bad service_tier", body(service_tier="gold"), "service_tier"),
    ("long safety_identifier", body(safety_identifier="x" * 65), "safety_identifier"),
    ("too many metadata pairs", body(metadata={str(i): "v" for i in range(17)}), "metadata"),
    ("long metadata key", body(metadata={"k" * 65: "v"}), "metadata"),
    ("long metadata value", body(metadata={"k": "v" * 513}), "metadata"),
    ("metadata value type", body(metadata={"k": 1}), "metadata.k"),
]


@pytest.mark.parametrize(
    "payload,param", [case[1:] for case in INVALID_400], ids=[case[0] for case in INVALID_400]
)
def test_shape_errors_are_400_with_param(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_create_request(payload)
    error = caught.value
    assert (type(error), error.status, error.type) == (InvalidRequest, 400, "invalid_request_error")
    assert error.param == param
    assert param in error.message


def test_metadata_limits_accept_the_maximum() -> None:
    request = parse_create_request(body(metadata={f"{i:0>64}": "v" * 512 for i in range(16)}))
    assert len(request.metadata) == 16


@pytest.mark.parametrize(
    "payload,param",
    [
        (body(foo=1), "foo"),
        (body(messages=[]), "messages"),
        (body(tools=[{"type": "mcp", "server_label": "t", "server_ur": "https://x"}]), "tools[0].server_ur"),
        (body(text={"format": {"type": "text"}, "style": "x"}), "text.style"),
    ],
)
def test_unknown_parameters(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(UnknownParameter) as caught:
        parse_create_request(payload)
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "unknown_parameter", param)


def test_non_object_body() -> None:
    with pytest.raises(InvalidRequest):
        parse_create_request(["model"])


FUNCTION = {"type": "function", "name": "get_weather"}
MCP = {"type": "mcp", "server_label": "time"}

INVALID_422 = [
    ("reserved function name", body(tools=[{"type": "function", "name": "mcp__time__now"}]), "tools[0].name"),
    ("duplicate function", body(tools=[FUNCTION, FUNCTION]), "tools[1].name"),
    ("connector_id", body(tools=[{**MCP, "connector_id": "connector_gmail"}]), "tools[0].connector_id"),
    (
        "duplicate label",
        body(tools=[MCP, {**MCP, "server_url": "https://x.example/mcp"}]),
        "tools[1].server_label",
    ),
    ("headers without server_url", body(tools=[{**MCP, "headers": {"X": "y"}}]), "tools[0].headers"),
    (
        "authorization without server_url",
        body(tools=[{**MCP, "authorization": "tok"}]),
        "tools[0].authorization",
    ),
    (
        "tool_choice function not in tools",
        body(tools=[FUNCTION], tool_choice={"type": "function", "name": "nope"}),
        "tool_choice.name",
    ),
    (
        "tool_choice function without tools",
        body(tool_choice={"type": "function", "name": "f"}),
        "tool_choice.name",
    ),
    (
        "tool_choice mcp without declaration",
        body(tools=[FUNCTION], tool_choice={"type": "mcp", "server_label": "time"}),
        "tool_choice.server_label",
    ),
    (
        "tool_choice mcp name outside allowed_tools",
        body(
            tools=[{**MCP, "allowed_tools": ["now"]}],
            tool_choice={"type": "mcp", "server_label": "time", "name": "zone"},
        ),
        "tool_choice.name",
    ),
    (
        "allowed_tools naming an unknown function",
        body(
            tools=[FUNCTION],
            tool_choice={"type": "allowed_tools", "tools": [FUNCTION, {"type": "function", "name": "x"}]},
        ),
        "tool_choice.tools[1].name",
    ),
    (
        "allowed_tools naming an unknown label",
        body(
            tools=[MCP],
            tool_choice={"type": "allowed_tools", "tools": [{"type": "mcp", "server_label": "docs"}]},
        ),
        "tool_choice.tools[0].server_label",
    ),
]


@pytest.mark.parametrize(
    "payload,param", [case[1:] for case in INVALID_422], ids=[case[0] for case in INVALID_422]
)
def test_contract_errors_are_422_with_param(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_create_request(payload)
    assert (caught.value.status, caught.value.type, caught.value.param) == (422, "bad_input", param)


SECRET = "sk-very-secret-token"


def test_secrets_never_leak_into_errors_repr_or_storage() -> None:
    declaration = {
        "type": "mcp",
        "server_label": "docs",
        "authorization": SECRET,
        "headers": {"X-Key": SECRET},
    }
    for payload in (
        body(tools=[declaration]),
        body(tools=[{**declaration, "server_url": 5}]),
        body(tools=[{**declaration, "server_url": "https://x.example", "bogus": SECRET}]),
    ):
        with pytest.raises(GatewayError) as caught:
            parse_create_request(payload)
        assert SECRET not in caught.value.message and SECRET not in str(caught.value)
        error = caught.value
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    request = parse_create_request(body(tools=[{**declaration, "server_url": "https://x.example/mcp"}]))
    tool = request.tools[0]
    assert isinstance(tool, McpTool) and tool.authorization == SECRET
    assert SECRET not in repr(request)
    assert SECRET not in json.dumps(tool.public_dict())
    assert tool.public_dict()["server_url"] == "https://x.example/mcp"

