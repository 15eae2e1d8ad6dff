"""Anthropic's Messages API as a client speaks it, translated to the canonical chat request.

The inverse of gateway.upstream.providers.anthropic, for a model whose provider is not Anthropic.
`chat_request(body)` gives the chat body and the names of what it dropped (the view may put them in
a warning header): `top_k`, `thinking` / `redacted_thinking` blocks sent back (a chat upstream has
no place for another model's signed thinking), `cache_control` (chat upstreams have no prompt
cache markers) and Anthropic's account-side fields (`service_tier`, `inference_geo`, `speed`, ...).
A `document` block, a server tool, or a field with a gateway-side meaning not built yet
(`mcp_servers`, `container`) is a 400 naming it; so is an unknown field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting.tokens import estimate_prompt_tokens
from gateway.errors import InvalidRequest
from gateway.upstream.providers.anthropic import THINKING_BUDGETS

PASSED = ("temperature", "top_p", "models")  # same name, same meaning on chat (`models`: the fallback list)
# context_management (server-side clearing of old tool results; Claude Code sends it) is a saving, not a meaning:
# dropped, the whole conversation goes up
DROPPED = ("top_k", "cache_control", "service_tier", "inference_geo", "speed", "diagnostics", "user_profile_id",
           "workspace_id", "context_management")  # no chat equivalent: dropped and named
REFUSED = ("mcp_servers", "container")  # not translated: a 400 (mcp_servers is taken off first: dialects.anthropic_mcp)
KNOWN = ("model", "max_tokens", "system", "messages", "tools", "tool_choice", "stop_sequences", "thinking",
         "metadata", "stream", "output_config", *PASSED, *DROPPED, *REFUSED)
THINKING_BLOCKS = ("thinking", "redacted_thinking")
EFFORT_WORDS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}  # output_config
TOOL_ERROR_PREFIX = "Error: "  # chat's tool message has no is_error: a failed result says so in its text


@dataclass
class ChatRequest:
    """A Messages request as a chat body, and the names of what had no chat equivalent."""

    body: dict[str, Any]
    dropped: list[str] = field(default_factory=list)

    def drop(self, name: str) -> None:
        """Note a field or block kind left out (once)."""
        if name not in self.dropped:
            self.dropped.append(name)


def invalid(param: str, why: str) -> InvalidRequest:
    """The 400 `invalid_request_error` naming a field."""
    return InvalidRequest(f"{param}: {why}", param=param)


def chat_request(body: Any) -> ChatRequest:
    """The canonical chat body of a Messages API body (InvalidRequest names what cannot be translated)."""
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object.")
    for name in body:
        if name not in KNOWN:
            raise invalid(name, "Extra inputs are not permitted.")
        if name in REFUSED:
            raise invalid(name, "is not supported on this model by the gateway yet.")
    request = ChatRequest({"model": required_model(body), "max_tokens": required_cap(body)})
    request.body["messages"] = [*system_messages(body.get("system"), request),
                                *chat_messages(body.get("messages"), request)]
    request.body.update({name: body[name] for name in PASSED if body.get(name) is not None})
    for name in DROPPED:
        if body.get(name) is not None:
            request.drop(name)
    request.body.update(tooling(body, request))
    request.body.update(options(body))
    return request


def required_model(body: dict[str, Any]) -> str:
    """`model`, a non-empty string."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid("model", "Field required.")
    return body["model"]


def required_cap(body: dict[str, Any]) -> int:
    """`max_tokens`, required by Anthropic: a positive integer."""
    cap = body.get("max_tokens")
    if cap is None:
        raise invalid("max_tokens", "Field required.")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise invalid("max_tokens", "must be a positive integer.")
    return cap


def options(body: dict[str, Any]) -> dict[str, Any]:
    """stop_sequences, thinking, metadata.user_id, output_config and stream in chat's words."""
    sent: dict[str, Any] = {}
    if body.get("stop_sequences") is not None:
        stops = body["stop_sequences"]
        if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
            raise invalid("stop_sequences", "must be a list of strings.")
        sent["stop"] = stops
    if (effort := reasoning_effort(body.get("thinking")) or configured_effort(body.get("output_config"))):
        sent["reasoning_effort"] = effort
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        sent["user"] = metadata["user_id"]
    if (response_format := output_format(body.get("output_config"))) is not None:
        sent["response_format"] = response_format
    if body.get("stream") is not None:
        sent["stream"] = bool(body["stream"])
    return sent


def reasoning_effort(thinking: Any) -> str | None:
    """`thinking: {type: enabled, budget_tokens}` as the least effort whose budget covers it (the adapter's table)."""
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind in ("disabled", "adaptive"):
        return None  # the upstream's own default: a chat model that cannot think must not get an effort
    if kind != "enabled" or not isinstance(thinking.get("budget_tokens"), int):
        raise invalid("thinking", "must be {type: enabled, budget_tokens}, {type: disabled} or {type: adaptive}.")
    budget = thinking["budget_tokens"]
    covering = [effort for effort, tokens in THINKING_BUDGETS.items() if tokens >= budget]
    return min(covering, key=THINKING_BUDGETS.__getitem__) if covering else max(THINKING_BUDGETS,
                                                                               key=THINKING_BUDGETS.__getitem__)


def configured_effort(config: Any) -> str | None:
    """`output_config.effort` as chat's `reasoning_effort` (Anthropic's `max` is the highest chat has)."""
    effort = config.get("effort") if isinstance(config, dict) else None
    if effort is not None and effort not in EFFORT_WORDS:
        raise invalid("output_config.effort", f"must be one of {', '.join(EFFORT_WORDS)}.")
    return EFFORT_WORDS.get(effort) if effort else None


def output_format(config: Any) -> dict[str, Any] | None:
    """`output_config.format` json_schema as chat's `response_format`."""
    chosen = config.get("format") if isinstance(config, dict) else None
    if chosen is None:
        return None
    if not isinstance(chosen, dict) or chosen.get("type") != "json_schema" or not isinstance(chosen.get("schema"), dict):
        raise invalid("output_config.format", "must be {type: json_schema, schema}.")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": chosen["schema"], "strict": True}}


def system_messages(system: Any, request: ChatRequest, param: str = "system") -> list[dict[str, Any]]:
    """`system` (or a `system` turn's content), a string or text blocks, as one system message."""
    if system in (None, "", []):
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise invalid(param, "must be a string or a list of text blocks.")
    return [{"role": "system", "content": [text_part(block, f"{param}[{index}]", request)
                                           for index, block in enumerate(system)]}]


def text_part(block: Any, param: str, request: ChatRequest) -> dict[str, Any]:
    """A text block as a chat text part (cache_control noted as dropped)."""
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise invalid(param, "must be a text block.")
    if "cache_control" in block:
        request.drop("cache_control")
    return {"type": "text", "text": block["text"]}


def blocks_of(content: Any, param: str) -> list[dict[str, Any]]:
    """A message's content as blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
        raise invalid(param, "must be a string or a list of content blocks.")
    return content


def chat_messages(messages: Any, request: ChatRequest) -> list[dict[str, Any]]:
    """The `messages` turns as chat messages (a user turn's tool results become `tool` messages first).

    A `system` turn (Anthropic takes one anywhere in the list; Claude Code sends one) stays a system message
    at its place.
    """
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "Field required: a non-empty list.")
    translated: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            translated.extend(user_messages(blocks_of(message.get("content"), f"{param}.content"), param, request))
        elif role == "assistant":
            translated.append(assistant_message(blocks_of(message.get("content"), f"{param}.content"), param,
                                                request))
        elif role == "system":
            translated.extend(system_messages(message.get("content"), request, f"{param}.content"))
        else:
            raise invalid(f"{param}.role", "must be 'user', 'assistant' or 'system'.")
    return translated


def user_messages(blocks: list[dict[str, Any]], param: str, request: ChatRequest) -> list[dict[str, Any]]:
    """A user turn: `tool` messages for its tool results, then one user message for the rest."""
    results, parts = [], []
    for number, block in enumerate(blocks):
        where = f"{param}.content[{number}]"
        kind = block.get("type")
        if kind == "tool_result":
            results.append(tool_message(block, where, request))
        elif kind == "text":
            parts.append(text_part(block, where, request))
        elif kind == "image":
            parts.append(image_part(block, where, request))
        elif kind == "document":
            raise invalid(f"{where}.type", "document blocks need a model served by an Anthropic provider.")
        else:
            raise invalid(f"{where}.type", f"a user turn cannot hold a {kind!r} block.")
    return [*results, *([{"role": "user", "content": parts}] if parts else [])]


def image_part(block: dict[str, Any], param: str, request: ChatRequest) -> dict[str, Any]:
    """An image block (base64 or url source) as an `image_url` part."""
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if "cache_control" in block:
        request.drop("cache_control")
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        url = f"data:{source.get('media_type')};base64,{source['data']}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise invalid(f"{param}.source", "must be a base64 or url image source.")
    return {"type": "image_url", "image_url": {"url": url}}


def tool_message(block: dict[str, Any], param: str, request: ChatRequest) -> dict[str, Any]:
    """A `tool_result` block as a chat `tool` message (an error result's text starts with `Error: `)."""
    if not isinstance(block.get("tool_use_id"), str):
        raise invalid(f"{param}.tool_use_id", "Field required.")
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        text = "\n".join(text_part(item, f"{param}.content[{number}]", request)["text"]
                         for number, item in enumerate(blocks_of(content, f"{param}.content")))
    if block.get("is_error"):
        text = TOOL_ERROR_PREFIX + text
    if "cache_control" in block:
        request.drop("cache_control")
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}


def assistant_message(blocks: list[dict[str, Any]], param: str, request: ChatRequest) -> dict[str, Any]:
    """An assistant turn: its text, its tool_use blocks as tool_calls; thinking blocks are dropped."""
    text, calls = [], []
    for number, block in enumerate(blocks):
        where = f"{param}.content[{number}]"
        kind = block.get("type")
        if kind == "text":
            text.append(text_part(block, where, request)["text"])
        elif kind == "tool_use":
            calls.append(tool_call(block, where))
        elif kind in THINKING_BLOCKS:
            request.drop(kind)
        else:
            raise invalid(f"{where}.type", f"an assistant turn cannot hold a {kind!r} block.")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def tool_call(block: dict[str, Any], param: str) -> dict[str, Any]:
    """A `tool_use` block as a chat tool call (its input as JSON arguments)."""
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise invalid(param, "a tool_use block needs an id and a name.")
    if not isinstance(block.get("input", {}), dict):
        raise invalid(f"{param}.input", "must be an object.")
    return {"id": block["id"], "type": "function",
            "function": {"name": block["name"], "arguments": json.dumps(block.get("input") or {})}}


def tooling(body: dict[str, Any], request: ChatRequest) -> dict[str, Any]:
    """`tools` (custom tools only) and `tool_choice` in chat's words."""
    sent: dict[str, Any] = {}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("tools", "must be a list.")
        sent["tools"] = [function_tool(tool, f"tools[{index}]", request) for index, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is None:
        return sent
    kind = choice.get("type") if isinstance(choice, dict) else None
    words = {"auto": "auto", "any": "required", "none": "none"}
    if kind in words:
        sent["tool_choice"] = words[kind]
    elif kind == "tool" and isinstance(choice.get("name"), str):
        sent["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise invalid("tool_choice", "must be {type: auto | any | none} or {type: tool, name}.")
    if choice.get("disable_parallel_tool_use") and kind != "none":
        sent["parallel_tool_calls"] = False
    return sent


def function_tool(tool: Any, param: str, request: ChatRequest) -> dict[str, Any]:
    """A custom tool as a chat function tool; a server tool (web search, bash, ...) is a 400."""
    if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise invalid(f"{param}.type", f"the server tool {kind!r} needs a model served by an Anthropic provider.")
    if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
        raise invalid(param, "a tool needs a name and an input_schema object.")
    function = {"name": tool["name"], "parameters": tool["input_schema"]}
    function.update({key: tool[key] for key in ("description", "strict") if tool.get(key) is not None})
    if "cache_control" in tool:
        request.drop("cache_control")
    return {"type": "function", "function": function}


def count_tokens(body: Any) -> dict[str, int]:
    """`/v1/messages/count_tokens`'s answer: the gateway's estimate of the translated request's input."""
    if isinstance(body, dict) and "max_tokens" not in body:
        body = {**body, "max_tokens": 1}  # count_tokens takes no max_tokens
    return {"input_tokens": estimate_prompt_tokens(chat_request(body).body)}
