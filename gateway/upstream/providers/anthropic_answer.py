"""Anthropic's answers in canonical form: a `message`, the stream's events, and the error body.

`stop_reason` becomes `finish_reason`; thinking goes to `reasoning` (and, with its signature, to
OpenRouter's `reasoning_details`, so a client can send it back); usage counts cache reads and
writes in `prompt_tokens` (Anthropic's `input_tokens` excludes them) with `cached_tokens` and
`cache_write_tokens` beside. A 529 `overloaded_error` is a retryable 503 with Retry-After.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.errors import UpstreamStreamBroken
from gateway.upstream.providers.base import (
    OVERLOADED_RETRY_AFTER_S,
    WireError,
    chunk,
    completion,
    header,
    raw_body,
    usage,
)
from gateway.upstream.sse import SseEvent

REASONING_FORMAT = "anthropic-claude-v1"  # OpenRouter's `reasoning_details[].format` for Claude's thinking
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                  "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
ERROR_TYPES = {"invalid_request_error": "invalid_request_error", "not_found_error": "invalid_request_error",
               "request_too_large": "invalid_request_error", "rate_limit_error": "rate_limit_error"}


def finish_reason(stop_reason: str | None) -> str | None:
    """A `stop_reason` as OpenAI's `finish_reason`."""
    return FINISH_REASONS.get(stop_reason, "stop") if stop_reason else None


def usage_of(counts: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical usage of Anthropic's usage object."""
    cached = int(counts.get("cache_read_input_tokens") or 0)
    written = int(counts.get("cache_creation_input_tokens") or 0)
    prompt = int(counts.get("input_tokens") or 0) + cached + written
    return usage(prompt, int(counts.get("output_tokens") or 0), cached, written)


def completion_of(message: dict[str, Any]) -> dict[str, Any]:
    """The canonical chat completion of a Messages API `message`."""
    text, reasoning, details, calls = [], [], [], []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
            details.append(reasoning_detail(block))
        elif kind == "redacted_thinking":
            details.append(reasoning_detail(block))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": json.dumps(block.get("input") or {})}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if reasoning:
        reply["reasoning"] = "".join(reasoning)
    if details:
        reply["reasoning_details"] = details
    if calls:
        reply["tool_calls"] = calls
    return completion(str(message.get("id")), str(message.get("model")), reply,
                      finish_reason(message.get("stop_reason")) or "stop", usage_of(message.get("usage") or {}))


def reasoning_detail(block: dict[str, Any]) -> dict[str, Any]:
    """A thinking or redacted_thinking block as OpenRouter's `reasoning_details` entry."""
    if block.get("type") == "redacted_thinking":
        return {"type": "reasoning.encrypted", "data": block.get("data"), "format": REASONING_FORMAT, "index": 0}
    return {"type": "reasoning.text", "text": block.get("thinking") or "", "signature": block.get("signature"),
            "format": REASONING_FORMAT, "index": 0}


class AnthropicStream:
    """Messages stream events in, chat chunks out; tool arguments are passed on as they arrive."""

    def __init__(self, model: str) -> None:
        self.id, self.model = "", model
        self.counts: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}  # content block index -> tool_calls index
        self.finish_reason: str | None = None
        self.stopped = False

    def feed(self, event: SseEvent) -> list[dict[str, Any]]:
        """The chunks of one event."""
        try:
            data = json.loads(event.data)
        except ValueError:
            raise UpstreamStreamBroken("Anthropic sent a malformed stream event.") from None
        kind = data.get("type") if isinstance(data, dict) else None
        handler = getattr(self, f"_on_{kind}", None)
        return handler(data) if handler is not None else []  # ping and future event types say nothing

    def finish(self) -> list[dict[str, Any]]:
        """Raises when the stream ended before message_stop."""
        if not self.stopped:
            raise UpstreamStreamBroken("Anthropic closed the stream before message_stop.")
        return []

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None,
               usage_: dict[str, Any] | None = None) -> dict[str, Any]:
        return chunk(self.id, self.model, delta, finish, usage_)

    def _on_message_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        message = data.get("message") or {}
        self.id, self.model = str(message.get("id") or ""), str(message.get("model") or self.model)
        self.counts.update(message.get("usage") or {})
        return [self._chunk({"role": "assistant", "content": ""})]

    def _on_content_block_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        block = data.get("content_block") or {}
        if block.get("type") == "tool_use":
            index = self.tool_index[int(data.get("index", 0))] = len(self.tool_index)
            call = {"index": index, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}
            return [self._chunk({"tool_calls": [call]})]
        if block.get("type") == "redacted_thinking":
            return [self._chunk({"reasoning_details": [reasoning_detail(block)]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _on_content_block_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text") or ""})]
        if kind == "input_json_delta":
            index = self.tool_index.get(int(data.get("index", 0)), 0)
            return [self._chunk({"tool_calls": [{"index": index, "function": {
                "arguments": delta.get("partial_json") or ""}}]})]
        if kind == "thinking_delta":
            text = delta.get("thinking") or ""
            detail = {"type": "reasoning.text", "text": text, "format": REASONING_FORMAT, "index": 0}
            return [self._chunk({"reasoning": text, "reasoning_details": [detail]})]
        if kind == "signature_delta":
            detail = {"type": "reasoning.text", "text": "", "signature": delta.get("signature"),
                      "format": REASONING_FORMAT, "index": 0}
            return [self._chunk({"reasoning_details": [detail]})]
        return []

    def _on_message_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        self.counts.update({key: value for key, value in (data.get("usage") or {}).items() if value is not None})
        self.finish_reason = finish_reason((data.get("delta") or {}).get("stop_reason")) or "stop"
        return [self._chunk({}, self.finish_reason)]

    def _on_message_stop(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        self.stopped = True
        finished = [] if self.finish_reason else [self._chunk({}, "stop")]
        return [*finished, self._chunk(None, usage_=usage_of(self.counts))]

    def _on_error(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        error = data.get("error") or {}
        raise UpstreamStreamBroken(f"Upstream failed mid-stream: {error.get('type')}: {error.get('message')}")


def error_of(status: int, headers: Mapping[str, str], body: Any) -> WireError:
    """The WireError of an Anthropic error answer (529 `overloaded_error`: overloaded, with Retry-After)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {"type": "api_error", "message": str(body)[:500]}
    kind = str(error.get("type") or "api_error")
    overloaded = status == 529 or kind == "overloaded_error"
    retry_after = header(headers, "retry-after") or (OVERLOADED_RETRY_AFTER_S if overloaded else None)
    return WireError(status, ERROR_TYPES.get(kind, "api_error"), kind, str(error.get("message") or kind),
                     retry_after, overloaded=overloaded, raw=raw_body(body))
