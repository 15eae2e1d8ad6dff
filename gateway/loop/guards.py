"""What keeps a weak model's tool loop finite and within its cap: pure checks the loop applies.

- A tool call identical to one already run (same tool, same arguments) is not run again; the
  model is told so and its next turn is offered no MCP tools, so it answers.
- A turn offered MCP tools that answers nothing at all (no text, no call) is asked again without
  them: llama-cpp-python's automatic tool choice can only call a tool or return an empty message.
- A follow-up turn the upstream refuses because the conversation no longer fits the model's
  context ends the loop `incomplete` (CONTEXT_FULL) instead of failing it.
- The request's output cap is hard: a turn that reports more output than it was asked for (an
  upstream that ignores `max_tokens`, like llama-cpp-python's automatic tool choice) counts as
  exactly the cap and finishes with "length"; a fetched completion's text is cut in proportion.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from gateway.accounting.usage import Usage
from gateway.errors import UpstreamRejected

CONTEXT_FULL = "context_length_exceeded"  # incomplete_details.reason; chat's finish_reason is "length"
REPEATED_MESSAGE = ("Not executed: this exact call already ran; its result is above. "
                    "Answer with what you have.")
CONTEXT_ERROR = re.compile(r"context (length|window)|maximum context|too many tokens", re.IGNORECASE)


def call_signature(name: str, arguments: str) -> tuple[str, str]:
    """What makes two tool calls the same call: the tool and its arguments (JSON compared as values)."""
    try:
        canonical = json.dumps(json.loads(arguments or "{}"), sort_keys=True)
    except ValueError:
        canonical = arguments.strip()
    return name, canonical


def overflows_context(error: UpstreamRejected) -> bool:
    """Whether an upstream 4xx says the prompt does not fit the model's context."""
    return error.code == CONTEXT_FULL or bool(CONTEXT_ERROR.search(error.message or ""))


def capped_usage(usage: Usage, finish_reason: str | None, cap: int | None) -> tuple[Usage, str | None]:
    """The turn's usage and finish reason with its output held to `cap` ("length" when it was over)."""
    if cap is None or usage.output_tokens <= cap:
        return usage, finish_reason
    return dataclasses.replace(usage, output_tokens=cap, reasoning_tokens=min(usage.reasoning_tokens, cap)), "length"


def capped_completion(completion: dict[str, Any], cap: int | None) -> dict[str, Any]:
    """A chat.completion that reports more output than `cap`, cut to the cap: text shortened, calls dropped."""
    usage = completion.get("usage") if isinstance(completion.get("usage"), dict) else {}
    used = usage.get("completion_tokens")
    if cap is None or not isinstance(used, int) or used <= cap:
        return completion
    choices = []
    for choice in completion.get("choices") or []:
        message = dict(choice.get("message") or {})
        text = message.get("content") if isinstance(message.get("content"), str) else ""
        message["content"] = text[: len(text) * cap // used]
        message.pop("tool_calls", None)
        message.pop("function_call", None)
        choices.append({**choice, "message": message, "finish_reason": "length"})
    prompt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
    capped = {**usage, "completion_tokens": cap, "total_tokens": prompt + cap}
    return {**completion, "choices": choices, "usage": capped}
