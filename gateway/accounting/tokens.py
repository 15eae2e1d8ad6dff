"""Token counts: reading upstream usage, and deterministic estimates when there is none."""

from __future__ import annotations

import json
import math
from typing import Any

from gateway.loop.events import Usage

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3


def estimate_text_tokens(text: str) -> int:
    """Deterministic estimate: one token per 4 characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Estimate a request's input: each message's content and tool calls (+3 per message), prompt or input, tools as JSON."""
    total = 0
    for message in body.get("messages") or []:
        parts = [message.get(key) for key in ("content", "tool_calls") if isinstance(message, dict)]
        total += TOKENS_PER_MESSAGE + sum(estimate_text_tokens(_flatten(p)) for p in parts if p)
    for key in ("prompt", "input", "tools"):
        if body.get(key) is not None:
            total += estimate_text_tokens(_flatten(body[key]))
    return total


def _flatten(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def usage_from_openai(data: dict[str, Any] | None) -> Usage | None:
    """Read an OpenAI `usage` object (chat, completions or embeddings); None when absent."""
    if not isinstance(data, dict):
        return None
    prompt = data.get("prompt_tokens", data.get("input_tokens")) or 0
    completion = data.get("completion_tokens", data.get("output_tokens")) or 0
    prompt_details = data.get("prompt_tokens_details") or data.get("input_tokens_details") or {}
    completion_details = (
        data.get("completion_tokens_details") or data.get("output_tokens_details") or {}
    )
    return Usage(
        input_tokens=int(prompt),
        output_tokens=int(completion),
        cached_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )
