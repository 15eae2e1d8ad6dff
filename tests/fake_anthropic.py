"""A loopback Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`), from Anthropic's API reference.

It checks what the real API checks first (the key in `x-api-key` or `Authorization: Bearer`, the
`anthropic-version` header, `model` / `max_tokens` / `messages`, the thinking budget, tool_result
ids, and temperature / top_p on API versions that refuse them), then answers a `message` or its SSE
event sequence: text, a tool_use of the first offered tool, a thinking block when thinking is on,
usage with cache reads and writes when the request marks `cache_control`. `script` takes errors
(`error(429, "rate_limit_error", ..., retry_after="7")`, 529 `overloaded_error`) or any reply. Its
count_tokens answers `counted_tokens(body)` (1000 and up: never the gateway's estimate).
"""

from __future__ import annotations

import json
from typing import Any

from tests.provider_fake import Events, Json, ProviderFake, Received, Reply, first_error

SAMPLING_DROPPED_VERSION = "2026-10-21"
TEXT = "Hello from Claude"
MESSAGES_PATH = "/v1/messages"
COUNT_PATH = "/v1/messages/count_tokens"


def error(status: int, kind: str, message: str, retry_after: str | None = None) -> Json:
    """Anthropic's error body with its status (and retry-after)."""
    headers = {"retry-after": retry_after} if retry_after else {}
    return Json({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"},
                status, {"request-id": "req_fake", **headers})


def message(content: list[dict[str, Any]], stop_reason: str = "end_turn", model: str = "claude-fake",
            cached: int = 0, written: int = 0) -> dict[str, Any]:
    """A `message` object with usage."""
    usage = {"input_tokens": 12, "output_tokens": 9, "cache_read_input_tokens": cached,
             "cache_creation_input_tokens": written}
    return {"id": "msg_fake01", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None, "usage": usage}


def counted_tokens(body: dict[str, Any]) -> int:
    """The fake's token count of a request: 1000 plus one per character of its system, messages and tools."""
    return 1000 + sum(len(json.dumps(body.get(name) or "")) for name in ("system", "messages", "tools"))


def pieces(text: str, count: int) -> list[str]:
    """`text` in `count` consecutive pieces (some may be empty)."""
    size = max(1, -(-len(text) // count))
    return [text[start:start + size] for start in range(0, len(text), size)] or [""]


def stream_events(answer: dict[str, Any]) -> Events:
    """The Messages stream of a message: text, tool input JSON and thinking sent in pieces."""
    start = {**answer, "content": [], "stop_reason": None, "usage": {**answer["usage"], "output_tokens": 1}}
    events: list[tuple[str | None, Any]] = [("message_start", {"type": "message_start", "message": start}),
                                            ("ping", {"type": "ping"})]
    for index, block in enumerate(answer["content"]):
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": _empty(block)}))
        events.extend(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                      for delta in _deltas(block))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": answer["stop_reason"], "stop_sequence": None}, "usage": {"output_tokens": answer["usage"][
            "output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return Events(events)


def _empty(block: dict[str, Any]) -> dict[str, Any]:
    return {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": "", "signature": ""},
            "tool_use": {**block, "input": {}}}.get(block["type"], block)


def _deltas(block: dict[str, Any]) -> list[dict[str, Any]]:
    if block["type"] == "text":
        return [{"type": "text_delta", "text": piece} for piece in pieces(block["text"], 2)]
    if block["type"] == "tool_use":
        return [{"type": "input_json_delta", "partial_json": piece} for piece in pieces(json.dumps(block["input"]), 3)]
    if block["type"] == "thinking":
        return [*({"type": "thinking_delta", "thinking": piece} for piece in pieces(block["thinking"], 2)),
                {"type": "signature_delta", "signature": block["signature"]}]
    return []


def tool_input(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments that satisfy a simple input schema's required properties."""
    samples = {"string": "Paris", "integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
    properties = schema.get("properties") or {}
    return {name: samples.get(str((properties.get(name) or {}).get("type")).lower(), "x") for name in schema.get("required") or []}


class FakeAnthropic(ProviderFake):
    """Anthropic's Messages API on a loopback port."""

    def answer(self, request: Received) -> Reply:
        """Checks, then a message (or its stream)."""
        body = request.body if isinstance(request.body, dict) else {}
        refused = self.refusal(request, body)
        if refused is not None:
            return refused
        if request.path.split("?")[0] == COUNT_PATH:
            return Json({"input_tokens": counted_tokens(body)})
        answer = self.message_for(body)
        return stream_events(answer) if body.get("stream") else Json(answer, headers={"request-id": "req_fake"})

    def refusal(self, request: Received, body: dict[str, Any]) -> Reply | None:
        """The error the real API answers first, if any."""
        key = request.header("x-api-key") or (request.header("authorization") or "").removeprefix("Bearer ")
        version = request.header("anthropic-version") or ""
        thinking = body.get("thinking") or {}
        budget = thinking.get("budget_tokens", 0) if thinking.get("type") == "enabled" else None
        counting = request.path.split("?")[0] == COUNT_PATH
        return first_error([
            (request.path.split("?")[0] not in (MESSAGES_PATH, COUNT_PATH),
             lambda: error(404, "not_found_error", "Not found")),
            (key != self.api_key, lambda: error(401, "authentication_error", "invalid x-api-key")),
            (not version, lambda: error(400, "invalid_request_error", "anthropic-version: header is required")),
            (not isinstance(body.get("model"), str), lambda: error(400, "invalid_request_error", "model: Field required")),
            (counting and "max_tokens" in body,
             lambda: error(400, "invalid_request_error", "max_tokens: Extra inputs are not permitted")),
            (not counting and not isinstance(body.get("max_tokens"), int),
             lambda: error(400, "invalid_request_error", "max_tokens: Field required")),
            (not body.get("messages"), lambda: error(400, "invalid_request_error", "messages: Field required")),
            (version >= SAMPLING_DROPPED_VERSION and ("temperature" in body or "top_p" in body),
             lambda: error(400, "invalid_request_error", "temperature: not supported on this API version")),
            (budget is not None and not 1024 <= budget < body.get("max_tokens", 0),
             lambda: error(400, "invalid_request_error", "thinking.budget_tokens: must be >= 1024 and < max_tokens")),
            (not _tool_results_match(body.get("messages") or []),
             lambda: error(400, "invalid_request_error", "messages: tool_result block(s) without a tool_use")),
        ])

    def message_for(self, body: dict[str, Any]) -> dict[str, Any]:
        """Text, a tool call, or the answer to a tool result; a thinking block first when thinking is on."""
        last = (body.get("messages") or [{}])[-1]
        blocks = last.get("content") if isinstance(last.get("content"), list) else []
        results = [block for block in blocks if block.get("type") == "tool_result"]
        tools, choice = body.get("tools") or [], body.get("tool_choice") or {"type": "auto"}
        content: list[dict[str, Any]] = []
        if (body.get("thinking") or {}).get("type") == "enabled":
            content.append({"type": "thinking", "thinking": "Let me think.", "signature": "sig-fake-1"})
        if results:
            content.append({"type": "text", "text": f"The tool said: {json.dumps(results[0].get('content'))}"})
            stop = "end_turn"
        elif tools and choice.get("type") != "none":
            tool = next((item for item in tools if item["name"] == choice.get("name")), tools[0])
            content.append({"type": "tool_use", "id": "toolu_fake01", "name": tool["name"],
                            "input": tool_input(tool.get("input_schema") or {})})
            stop = "tool_use"
        else:
            content.append({"type": "text", "text": TEXT})
            stop = "end_turn"
        cached = "cache_control" in json.dumps(body)
        return message(content, stop, body["model"], cached=100 if cached else 0, written=20 if cached else 0)


def _tool_results_match(messages: list[dict[str, Any]]) -> bool:
    """Every tool_result names a tool_use of the assistant turn before it."""
    offered: set[str] = set()
    for turn in messages:
        blocks = turn.get("content") if isinstance(turn.get("content"), list) else []
        if turn.get("role") == "assistant":
            offered = {block.get("id") for block in blocks if block.get("type") == "tool_use"}
        elif any(block.get("type") == "tool_result" and block.get("tool_use_id") not in offered for block in blocks):
            return False
    return True
