"""Token counts: reading upstream usage, deterministic estimates when there is none, and hold sizes.

Two different counts of a prompt, on purpose:
- the *usage estimate* (`estimate_prompt_tokens`, one token per 4 characters + 3 per message) is
  what a usage row records when the upstream reports nothing, and what rate limits check;
- the *hold size* (`hold_prompt_tokens`) is what a reservation assumes: one token per 2 UTF-8
  bytes of the text (twice the estimate for English, and non-Latin scripts, 2-4 bytes a
  character, are not undercounted) plus a margin for the chat template: 5 tokens per message
  (ChatML's and Llama 3's markers) and 8 per request (the reply's priming). `"y " * 100` is
  estimated at 53 tokens, held at 113, and real tokenizers report about 100. It is a margin, not
  a proof: a tokenizer that splits every digit, or a template that adds its own system prompt,
  can exceed it; then the full cost is still charged (see batch.py), and a run that owes more
  than its hold and the debt bound is stopped (gateway.accounting.meter).
"""

from __future__ import annotations

import json
import math
from typing import Any

from gateway.accounting.usage import Usage

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
HOLD_BYTES_PER_TOKEN = 2
HOLD_TOKENS_PER_MESSAGE = 5
HOLD_TOKENS_PER_REQUEST = 8


def estimate_text_tokens(text: str) -> int:
    """Deterministic estimate: one token per 4 characters, rounded up."""
    return tokens_of_length(len(text))


def tokens_of_length(characters: int) -> int:
    """The estimate of a text of this many characters (estimate_text_tokens without the text)."""
    return math.ceil(characters / CHARS_PER_TOKEN)


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


def hold_prompt_tokens(body: dict[str, Any]) -> int:
    """A request's input as its hold assumes it: UTF-8 bytes / 2 of the text, plus a template margin."""
    total = HOLD_TOKENS_PER_REQUEST
    for message in body.get("messages") or []:
        parts = [message.get(key) for key in ("content", "tool_calls") if isinstance(message, dict)]
        total += HOLD_TOKENS_PER_MESSAGE + sum(_held_bytes(_flatten(p)) for p in parts if p)
    for key in ("prompt", "input", "tools"):
        if body.get(key) is not None:
            total += _held_bytes(_flatten(body[key]))
    return total


def _held_bytes(text: str) -> int:
    return math.ceil(len(text.encode()) / HOLD_BYTES_PER_TOKEN)


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
        cache_write_tokens=int(prompt_details.get("cache_write_tokens") or 0),
    )
