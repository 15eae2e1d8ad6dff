"""Validate a POST /v1/responses body: shape checks (400) and contract checks (422), as gateway errors."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from gateway.errors import BadInput, InvalidRequest, UnknownParameter
from gateway.mcp.naming import PREFIX, is_reserved
from gateway.responses.schema import (
    AllowedToolsChoice,
    CreateResponseRequest,
    FunctionChoice,
    FunctionTool,
    McpChoice,
    McpTool,
    McpToolFilter,
    MessageItem,
)


def parse_create_request(body: Any) -> CreateResponseRequest:
    """Validate a request body; raise UnknownParameter/InvalidRequest (400) or BadInput (422)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for key in body:
        if key not in CreateResponseRequest.model_fields:
            raise UnknownParameter(f"Unknown parameter: '{key}'.", param=key)
    try:
        request = CreateResponseRequest.model_validate(body)
    except ValidationError as exc:
        raise _as_gateway_error(exc, body) from None  # the chain would carry raw input values
    _check_message_parts(request)
    _check_tools(request)
    _check_tool_choice(request)
    return request


TAG_ERRORS = {"union_tag_invalid", "union_tag_not_found", "invalid_item_type", "invalid_tool_type"}


def error_param(error: dict[str, Any], body: Any) -> str | None:
    """A JSON path like `input[2].content[0].type` for a pydantic error, skipping union labels."""
    path: list[str | int] = []
    current, loc = body, error["loc"]
    for position, segment in enumerate(loc):
        if (
            (isinstance(current, list)
            and isinstance(segment, int)
            and 0 <= segment < len(current))
            or (isinstance(current, dict)
            and isinstance(segment, str)
            and segment in current)
        ):
            path.append(segment)
            current = current[segment]
        elif position == len(loc) - 1 and error["type"] == "missing":
            path.append(segment)
    if error["type"] in TAG_ERRORS:
        path.append("type")
    return format_path(path)


def format_path(path: list[str | int]) -> str | None:
    """Render ['input', 2, 'type'] as 'input[2].type'."""
    text = ""
    for segment in path:
        text += f"[{segment}]" if isinstance(segment, int) else f".{segment}"
    return text.lstrip(".") or None


def _as_gateway_error(exc: ValidationError, body: dict[str, Any]) -> InvalidRequest:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    params = [error_param(error, body) for error in errors]
    depth = [len((param or "").replace("[", ".").split(".")) for param in params]
    index = depth.index(max(depth))
    error, param = errors[index], params[index]
    if error["type"] == "extra_forbidden":
        return UnknownParameter(f"Unknown parameter: '{param}'.", param=param)
    if error["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    message = error["msg"].removeprefix("Value error, ")
    return InvalidRequest(f"Invalid value for '{param}': {message}.", param=param)


ASSISTANT_PARTS = {"output_text", "refusal"}


def _check_message_parts(request: CreateResponseRequest) -> None:
    """Assistant content is output_text/refusal; system/developer content is input_text."""
    if isinstance(request.input, str):
        return
    for i, item in enumerate(request.input):
        if not isinstance(item, MessageItem) or isinstance(item.content, str):
            continue
        for j, part in enumerate(item.content):
            if item.role == "assistant":
                allowed = part.type in ASSISTANT_PARTS
            elif item.role == "user":
                allowed = part.type not in ASSISTANT_PARTS
            else:
                allowed = part.type == "input_text"
            if not allowed:
                param = f"input[{i}].content[{j}].type"
                raise InvalidRequest(
                    f"Invalid value for '{param}': '{part.type}' is not allowed in {item.role} messages.",
                    param=param,
                )


def _check_tools(request: CreateResponseRequest) -> None:
    """Reserved names, duplicates, connector_id and secrets without server_url are 422s."""
    seen_functions: set[str] = set()
    seen_labels: set[str] = set()
    for i, tool in enumerate(request.tools):
        if isinstance(tool, FunctionTool):
            if is_reserved(tool.name):
                raise BadInput(
                    f"Function tool names starting with '{PREFIX}' are reserved.",
                    param=f"tools[{i}].name",
                )
            if tool.name in seen_functions:
                raise BadInput(f"Duplicate function tool '{tool.name}'.", param=f"tools[{i}].name")
            seen_functions.add(tool.name)
            continue
        _check_mcp_declaration(tool, i, seen_labels)
        seen_labels.add(tool.server_label)


def _check_mcp_declaration(tool: McpTool, index: int, seen_labels: set[str]) -> None:
    if tool.connector_id is not None:
        raise BadInput("connector_id is not supported.", param=f"tools[{index}].connector_id")
    if tool.server_label in seen_labels:
        raise BadInput(
            f"Duplicate MCP declaration for server_label '{tool.server_label}'.",
            param=f"tools[{index}].server_label",
        )
    for field in ("headers", "authorization"):
        if getattr(tool, field) is not None and tool.server_url is None:
            raise BadInput(
                f"'{field}' is only allowed on MCP declarations with a server_url.",
                param=f"tools[{index}].{field}",
            )


def _check_tool_choice(request: CreateResponseRequest) -> None:
    """tool_choice may only name declared function tools and MCP server labels."""
    choice = request.tool_choice
    if isinstance(choice, (FunctionChoice, McpChoice)):
        _check_choice_target(request, choice, "tool_choice")
    elif isinstance(choice, AllowedToolsChoice):
        for j, target in enumerate(choice.tools):
            _check_choice_target(request, target, f"tool_choice.tools[{j}]")


def _check_choice_target(
    request: CreateResponseRequest, target: FunctionChoice | McpChoice, param: str
) -> None:
    if isinstance(target, FunctionChoice):
        if target.name not in {tool.name for tool in request.function_tools()}:
            raise BadInput(f"Function '{target.name}' is not in tools.", param=f"{param}.name")
        return
    declarations = [t for t in request.mcp_tools() if t.server_label == target.server_label]
    if not declarations:
        raise BadInput(
            f"No MCP declaration in tools has server_label '{target.server_label}'.",
            param=f"{param}.server_label",
        )
    allowed = declarations[0].allowed_tools
    names = allowed.tool_names if isinstance(allowed, McpToolFilter) else allowed
    if target.name is not None and names is not None and target.name not in names:
        raise BadInput(
            f"Tool '{target.name}' is not in allowed_tools of '{target.server_label}'.",
            param=f"{param}.name",
        )
