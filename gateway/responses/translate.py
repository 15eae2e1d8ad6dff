"""Pure translation between Responses items and chat-completions messages and parameters.

Decisions the spec leaves open:
- `developer` messages become `system` messages (most open upstreams' chat templates lack the role).
- Text-only content becomes a plain string; mixed content becomes a list of chat content parts.
- Reasoning, mcp_list_tools, mcp_approval_request and mcp_approval_response items are not sent to
  the model (reasoning traces are not replayed; approvals are consumed by the loop).
- An assistant message immediately followed by function calls becomes one assistant message with
  both content and `tool_calls`; function calls without preceding text get content "".
"""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import BadInput
from gateway.mcp.naming import tool_function_name
from gateway.responses.schema import (
    AllowedToolsChoice,
    CreateResponseRequest,
    FunctionChoice,
    McpChoice,
)

SKIPPED_ITEMS = {"reasoning", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response"}


def input_to_messages(items: str | list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    """Turn Responses input items (plain dicts) into chat-completions messages."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for index, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item))
        elif kind == "function_call":
            _append_tool_call(messages, item["call_id"], item["name"], item["arguments"])
        elif kind == "function_call_output":
            messages.append(_tool_message(item["call_id"], _tool_output_content(item["output"])))
        elif kind == "mcp_call":
            name = tool_function_name(item["server_label"], item["name"])
            _append_tool_call(messages, item["id"], name, item["arguments"])
            messages.append(_tool_message(item["id"], _mcp_result_text(item)))
        elif kind == "item_reference":
            raise BadInput(
                "item_reference input items are not supported; send the referenced item itself.",
                param=f"input[{index}]",
            )
        elif kind not in SKIPPED_ITEMS:
            raise BadInput(f"Unsupported input item type '{kind}'.", param=f"input[{index}].type")
    return messages


def _message(item: dict[str, Any]) -> dict[str, Any]:
    role = "system" if item["role"] == "developer" else item["role"]
    content = item["content"]
    if isinstance(content, str):
        return {"role": role, "content": content}
    if role == "assistant":
        texts = [part.get("text", part.get("refusal", "")) for part in content]
        return {"role": role, "content": "".join(texts)}
    return {"role": role, "content": _chat_content(content)}


def _chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Chat content for input parts: a string when all parts are text, else chat parts."""
    if all(part["type"] == "input_text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    return [_chat_part(part) for part in parts]


def _chat_part(part: dict[str, Any]) -> dict[str, Any]:
    if part["type"] == "input_text":
        return {"type": "text", "text": part["text"]}
    if part["type"] == "input_image":
        image = {"url": part["image_url"], "detail": part.get("detail", "auto")}
        return {"type": "image_url", "image_url": image}
    file = {key: part[key] for key in ("file_data", "file_url", "filename") if part.get(key) is not None}
    return {"type": "file", "file": file}


def _append_tool_call(messages: list[dict[str, Any]], call_id: str, name: str, arguments: str) -> None:
    """Add a call to the trailing assistant message, starting one when there is none."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is None or last["role"] != "assistant" or not isinstance(last.get("content"), str):
        last = {"role": "assistant", "content": ""}
        messages.append(last)
    last.setdefault("tool_calls", []).append(call)


def _tool_message(call_id: str, content: str | list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _tool_output_content(output: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    return output if isinstance(output, str) else _chat_content(output)


def _mcp_result_text(item: dict[str, Any]) -> str:
    error = item.get("error")
    if error is None:
        return item.get("output") or ""
    detail = error if isinstance(error, str) else json.dumps(error)
    return f"Error: {detail}"


def output_items_to_input(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A stored response's output as input items for the next turn (mcp_list_tools dropped)."""
    replay: list[dict[str, Any]] = []
    for item in items:
        if item["type"] == "mcp_list_tools":
            continue
        if item["type"] == "message":
            parts = [part for part in item["content"] if part["type"] in ("output_text", "refusal")]
            replay.append({"type": "message", "role": "assistant", "content": parts})
        else:
            replay.append(item)
    return replay


def request_to_chat_params(req: CreateResponseRequest) -> dict[str, Any]:
    """Chat-completions parameters for a request, except model, messages, stream and max_tokens.

    MCP tools are not included: the loop appends them (named with tool_function_name) after
    discovery, and drops `tool_choice` and `parallel_tool_calls` if the final tool list is empty.
    """
    params: dict[str, Any] = {}
    tools = _chat_tools(req)
    if tools:
        params["tools"] = tools
    if req.tools:
        params["tool_choice"] = _chat_tool_choice(req)
        params["parallel_tool_calls"] = req.parallel_tool_calls
    response_format = _response_format(req)
    if response_format is not None:
        params["response_format"] = response_format
    params.update(_sampling_params(req))
    return params


def _chat_tools(req: CreateResponseRequest) -> list[dict[str, Any]]:
    allowed = allowed_function_names(req)
    tools = []
    for tool in req.function_tools():
        if allowed is not None and tool.name not in allowed:
            continue
        function = tool.model_dump(exclude={"type"}, exclude_none=True)
        tools.append({"type": "function", "function": function})
    return tools


def allowed_function_names(req: CreateResponseRequest) -> set[str] | None:
    """Function names an allowed_tools tool_choice permits, or None when it does not restrict."""
    if not isinstance(req.tool_choice, AllowedToolsChoice):
        return None
    return {tool.name for tool in req.tool_choice.tools if isinstance(tool, FunctionChoice)}


def allowed_mcp_targets(req: CreateResponseRequest) -> dict[str, set[str] | None] | None:
    """MCP labels (with tool names, None = all) an allowed_tools tool_choice permits, or None."""
    if not isinstance(req.tool_choice, AllowedToolsChoice):
        return None
    targets: dict[str, set[str] | None] = {}
    for tool in req.tool_choice.tools:
        if not isinstance(tool, McpChoice):
            continue
        names = targets.get(tool.server_label, set())
        targets[tool.server_label] = None if tool.name is None or names is None else names | {tool.name}
    return targets


def _chat_tool_choice(req: CreateResponseRequest) -> str | dict[str, Any]:
    choice = req.tool_choice
    if isinstance(choice, str):
        return choice
    if isinstance(choice, FunctionChoice):
        return {"type": "function", "function": {"name": choice.name}}
    if isinstance(choice, McpChoice) and choice.name is not None:
        name = tool_function_name(choice.server_label, choice.name)
        return {"type": "function", "function": {"name": name}}
    if isinstance(choice, McpChoice):
        return "required"
    return choice.mode


def _response_format(req: CreateResponseRequest) -> dict[str, Any] | None:
    text_format = req.text.format
    if text_format.type == "text":
        return None
    if text_format.type == "json_object":
        return {"type": "json_object"}
    schema = {"name": text_format.name, "schema": text_format.json_schema}
    if text_format.strict is not None:
        schema["strict"] = text_format.strict
    if text_format.description is not None:
        schema["description"] = text_format.description
    return {"type": "json_schema", "json_schema": schema}


PASSTHROUGH = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
    "user",
)


def _sampling_params(req: CreateResponseRequest) -> dict[str, Any]:
    params = {name: getattr(req, name) for name in PASSTHROUGH if getattr(req, name) is not None}
    wants_logprobs = "message.output_text.logprobs" in req.include
    if req.top_logprobs or wants_logprobs:
        params["logprobs"] = True
        params["top_logprobs"] = req.top_logprobs or 0
    if req.reasoning is not None and req.reasoning.effort is not None:
        params["reasoning_effort"] = req.reasoning.effort
    return params
