"""Anthropic's Messages API (`POST {base_url}/v1/messages`): the prepared chat body in, Claude's wire out.

System and developer messages become the top-level `system` blocks; the rest alternate user /
assistant, consecutive same-role turns merged. Parts become content blocks (`text`, `image` from
data or http URLs), assistant `tool_calls` become `tool_use`, `tool` messages `tool_result` blocks
of the next user turn, and `thinking` / `redacted_thinking` blocks a client sends back (as content
parts, or OpenRouter's `reasoning_details`) go through unchanged. `cache_control` on parts, messages
and tools is kept. The answer side is gateway.upstream.providers.anthropic_answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.upstream.providers import anthropic_answer
from gateway.upstream.providers.base import ProviderWire, WireError, WireRequest, join_url, refuse
from gateway.upstream.providers.chat_parts import (
    content_parts,
    data_url,
    function_tools,
    image_url,
    max_output_tokens,
    reasoning_effort,
    refuse_no_equivalent,
    stop_sequences,
    tool_arguments,
)

SAMPLING_DROPPED_VERSION = "2026-10-21"  # from this anthropic-version on, temperature and top_p are a 400
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}
MIN_THINKING_BUDGET = 1024  # Anthropic's floor; the budget must also stay below max_tokens
THINKING_PART_TYPES = ("thinking", "redacted_thinking")


def translate_request(body: dict[str, Any], upstream_model: str, provider: ProviderWire) -> dict[str, Any]:
    """The Messages API body of a prepared chat body."""
    refuse_no_equivalent(body, "Anthropic")
    cap = max_output_tokens(body)
    if cap is None:
        raise refuse("max_tokens", "Anthropic requires an output cap.")
    system, turns = split_system(body.get("messages") or [])
    wire: dict[str, Any] = {"model": upstream_model, "max_tokens": cap, "messages": turns}
    if system:
        wire["system"] = system
    wire.update(sampling(body, provider))
    if (stops := stop_sequences(body.get("stop"))) is not None:
        wire["stop_sequences"] = stops
    wire.update(tooling(body))
    if (output := output_config(body.get("response_format"))) is not None:
        wire["output_config"] = output
    if (thinking := thinking_config(reasoning_effort(body), cap)) is not None:
        wire["thinking"] = thinking
    if isinstance(body.get("user"), str):
        wire["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        wire["stream"] = True
    return wire


def sampling(body: dict[str, Any], provider: ProviderWire) -> dict[str, Any]:
    """temperature and top_p (Anthropic's temperature runs 0-1; newer API versions take neither)."""
    sent = {name: body[name] for name in ("temperature", "top_p") if body.get(name) is not None}
    for name in sent:
        if provider.anthropic_version >= SAMPLING_DROPPED_VERSION:
            raise refuse(name, f"anthropic-version {provider.anthropic_version} does not accept it.")
    if sent.get("temperature", 0) > 1:
        raise refuse("temperature", "Anthropic accepts 0 to 1.")
    return sent


def split_system(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating turns) of chat messages."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(with_message_cache(message, text_blocks(message.get("content"), f"messages[{index}]")))
            continue
        role, blocks = turn(message, index)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def turn(message: dict[str, Any], index: int) -> tuple[str, list[dict[str, Any]]]:
    """(role, content blocks) of one chat message."""
    param = f"messages[{index}]"
    role = message.get("role")
    if role == "tool":
        result = {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id") or ""),
                  "content": user_blocks(message.get("content"), param)}  # a tool result may hold images
        return "user", with_message_cache(message, [result])
    if role == "user":
        return "user", with_message_cache(message, user_blocks(message.get("content"), param))
    if role == "assistant":
        return "assistant", with_message_cache(message, assistant_blocks(message, param))
    raise refuse(f"{param}.role", f"Anthropic has no {role!r} role.")


def text_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    """Text parts as text blocks (cache_control kept); a 400 naming any other part."""
    blocks = []
    for number, part in enumerate(content_parts(content)):
        if part.get("type") != "text":
            raise refuse(f"{param}.content[{number}]", f"a {part.get('type')!r} part cannot go here.")
        blocks.append(block_of(part, {"type": "text", "text": str(part.get("text", ""))}))
    return blocks


def user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    """A user message's parts: text and images."""
    blocks = []
    for number, part in enumerate(content_parts(content)):
        if part.get("type") == "text":
            blocks.append(block_of(part, {"type": "text", "text": str(part.get("text", ""))}))
        elif part.get("type") == "image_url":
            blocks.append(block_of(part, image_block(image_url(part))))
        else:
            raise refuse(f"{param}.content[{number}]", f"Anthropic cannot take a {part.get('type')!r} part.")
    return blocks


def image_block(url: str) -> dict[str, Any]:
    """An image block: base64 from a data URL, else a URL source."""
    inline = data_url(url)
    if inline is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def assistant_blocks(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    """Thinking blocks sent back, then text, then tool_use blocks."""
    blocks = [block for detail in message.get("reasoning_details") or []
              if isinstance(detail, dict) and (block := thinking_block(detail)) is not None]
    for number, part in enumerate(content_parts(message.get("content"))):
        if part.get("type") in THINKING_PART_TYPES:
            blocks.append(part)
        elif part.get("type") in ("text", "refusal"):
            blocks.append(block_of(part, {"type": "text", "text": str(part.get("text") or part.get("refusal"))}))
        else:
            raise refuse(f"{param}.content[{number}]", f"an assistant {part.get('type')!r} part cannot go here.")
    for number, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        arguments = tool_arguments(function.get("arguments"), f"{param}.tool_calls[{number}].function.arguments")
        blocks.append({"type": "tool_use", "id": str(call.get("id")), "name": str(function.get("name")),
                       "input": arguments})
    return blocks


def thinking_block(detail: dict[str, Any]) -> dict[str, Any] | None:
    """The thinking block of an OpenRouter `reasoning_details` entry (None for other providers' entries)."""
    if detail.get("format") != anthropic_answer.REASONING_FORMAT:
        return None
    if detail.get("type") == "reasoning.encrypted":
        return {"type": "redacted_thinking", "data": detail.get("data")}
    return {"type": "thinking", "thinking": detail.get("text") or "", "signature": detail.get("signature") or ""}


def block_of(part: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """A block with its part's cache_control."""
    return {**block, "cache_control": part["cache_control"]} if "cache_control" in part else block


def with_message_cache(message: dict[str, Any], blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A message-level `cache_control` put on its last block, where Anthropic reads it."""
    if "cache_control" not in message or not blocks:
        return blocks
    return [*blocks[:-1], {**blocks[-1], "cache_control": message["cache_control"]}]


def tooling(body: dict[str, Any]) -> dict[str, Any]:
    """`tools` and `tool_choice` (with `disable_parallel_tool_use` for `parallel_tool_calls: false`)."""
    tools = [{"name": tool.get("name"), "input_schema": tool.get("parameters") or {"type": "object"},
              **{key: tool[key] for key in ("description", "cache_control") if key in tool}}
             for tool in function_tools(body)]
    sent: dict[str, Any] = {"tools": tools} if tools else {}
    choice = tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and tools and (choice or {}).get("type") != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        sent["tool_choice"] = choice
    return sent


def tool_choice(choice: Any) -> dict[str, Any] | None:
    """OpenAI's tool_choice in Anthropic's words."""
    if choice is None:
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    words = {"auto": "auto", "required": "any", "none": "none"}
    if choice not in words:
        raise refuse("tool_choice", "must be auto, required, none or a named function.")
    return {"type": words[choice]}


def output_config(response_format: Any) -> dict[str, Any] | None:
    """`response_format` json_schema as Anthropic's structured output; json_object has no equivalent."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in (None, "text"):
        return None
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise refuse("response_format.json_schema.schema", "a JSON schema object is required.")
        return {"format": {"type": "json_schema", "schema": schema}}
    raise refuse("response_format", f"Anthropic has no {kind!r} mode; use json_schema.")


def thinking_config(effort: str | None, cap: int) -> dict[str, Any] | None:
    """Extended thinking with a budget for the effort, below the output cap."""
    if effort is None:
        return None
    if effort == "none":
        return {"type": "disabled"}
    budget = min(THINKING_BUDGETS[effort], cap - 1)
    if budget < MIN_THINKING_BUDGET:
        raise refuse("reasoning_effort", f"Anthropic's thinking needs max_tokens above {MIN_THINKING_BUDGET}.")
    return {"type": "enabled", "budget_tokens": budget}


def wire_headers(provider: ProviderWire, beta: tuple[str, ...] = ()) -> dict[str, str]:
    """x-api-key, anthropic-version and anthropic-beta (the provider's flags, then `beta`'s), then extra headers."""
    headers = {"anthropic-version": provider.anthropic_version, "content-type": "application/json"}
    if provider.api_key:
        headers["x-api-key"] = provider.api_key
    if flags := list(dict.fromkeys((*provider.anthropic_beta, *beta))):
        headers["anthropic-beta"] = ",".join(flags)
    return {**headers, **provider.extra_headers}


class AnthropicAdapter:
    """Claude's Messages API."""

    name = "anthropic"

    def build_request(self, body: dict[str, Any], upstream_model: str, provider: ProviderWire) -> WireRequest:
        """POST {base_url}/v1/messages with x-api-key, anthropic-version and anthropic-beta."""
        return WireRequest("POST", join_url(provider.base_url, "v1/messages"), wire_headers(provider),
                           translate_request(body, upstream_model, provider), bool(body.get("stream")))

    def parse_response(self, status: int, body: dict[str, Any]) -> dict[str, Any]:
        """The canonical completion of a `message`."""
        return anthropic_answer.completion_of(body)

    def stream_translator(self, model: str) -> anthropic_answer.AnthropicStream:
        """A fresh translator of Messages stream events."""
        return anthropic_answer.AnthropicStream(model)

    def parse_error(self, status: int, headers: Mapping[str, str], body: Any) -> WireError:
        """Anthropic's `{"type": "error", "error": {"type", "message"}}`."""
        return anthropic_answer.error_of(status, headers, body)


ANTHROPIC = AnthropicAdapter()
