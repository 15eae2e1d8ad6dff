"""The canonical chat answer in Anthropic's Messages dialect: the `message` object and its SSE events.

The inverse of gateway.upstream.providers.anthropic_answer: `STOP_REASONS` is derived from its
`FINISH_REASONS` (the first stop reason of each finish reason) and `anthropic_usage` undoes its
`usage_of`. A chat `stop` becomes `stop_sequence` only when the upstream named the matched sequence
(vLLM's `stop_reason` on the choice); otherwise `end_turn`. Reasoning becomes a `thinking` block
(its signature only where the upstream gave one, as OpenRouter's `reasoning_details`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.errors import ANTHROPIC, ErrorFields, render_error
from gateway.ids import new_id
from gateway.upstream.providers.anthropic_answer import FINISH_REASONS
from gateway.upstream.sse import encode

STOP_REASONS = {finish: stop for stop, finish in reversed(FINISH_REASONS.items())}  # finish_reason -> stop_reason


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Anthropic's usage of canonical usage: `input_tokens` excludes cache reads and writes."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    return {"input_tokens": max(int(usage.get("prompt_tokens") or 0) - cached - written, 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": cached}


def stop_of(finish_reason: str | None, matched: Any, stop_sequences: Iterable[str]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of a chat finish; `matched` is the upstream's named stop string, if any."""
    if finish_reason in (None, "stop") and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return STOP_REASONS.get(finish_reason or "stop", "end_turn"), None


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the `input` object (arguments that are not a JSON object are kept as text)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        value = None
    return value if isinstance(value, dict) else {"arguments": str(arguments)}


def signature_of(message: Mapping[str, Any]) -> str:
    """The thinking signature an upstream gave in `reasoning_details`, else empty."""
    return next((str(detail["signature"]) for detail in message.get("reasoning_details") or []
                 if isinstance(detail, dict) and detail.get("signature")), "")


def message_of(completion: Mapping[str, Any], model: str, stop_sequences: Iterable[str] = ()) -> dict[str, Any]:
    """The `message` object of a canonical chat completion (its first choice)."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = reply.get("reasoning") or reply.get("reasoning_content")
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": signature_of(reply)})
    if reply.get("content"):
        content.append({"type": "text", "text": str(reply["content"])})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": str(call.get("id") or new_id("toolu")),
                        "name": str(function.get("name")), "input": tool_input(function.get("arguments"))})
    stop_reason, stop_sequence = stop_of(choice.get("finish_reason"), choice.get("stop_reason"), stop_sequences)
    return {"id": message_id(completion.get("id")), "type": "message", "role": "assistant", "content": content,
            "model": model, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": anthropic_usage(completion.get("usage"))}


def message_id(upstream_id: Any) -> str:
    """A `msg_` id: the upstream's when it is one, else a new one."""
    return upstream_id if isinstance(upstream_id, str) and upstream_id.startswith("msg_") else new_id("msg")


def event(name: str, data: dict[str, Any]) -> bytes:
    """One Messages stream event: `event: NAME` and its JSON, whose `type` is NAME."""
    return encode({"type": name, **data}, event=name)


def ping() -> bytes:
    """The `ping` event a view sends during a silence."""
    return event("ping", {})


def error_event(error: ErrorFields) -> bytes:
    """The `error` event of a stream that failed after it started (the error tree's Anthropic body)."""
    return encode(render_error(error, ANTHROPIC), event="error")
