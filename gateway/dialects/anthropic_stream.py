"""Canonical chat chunks in, Anthropic's Messages stream events out: a small stateful encoder.

The order is the one the Anthropic SDK's accumulator checks: `message_start`, then per content
block `content_block_start`, its deltas (`thinking_delta` and `signature_delta`, `text_delta`,
`input_json_delta`) and `content_block_stop`, then `message_delta` (stop reason, cumulative usage)
and `message_stop`. A chat stream reports usage only at its end, so `message_start` carries the
gateway's input estimate and `message_delta` the upstream's counts, which the SDK takes as final.
Tool calls stream one after another on every OpenAI-compatible upstream seen so far; arguments for
a call whose block is already closed still go to that call's index (the SDK accumulates by index).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from gateway.dialects.anthropic_replies import (
    anthropic_usage,
    error_event,
    event,
    message_id,
    ping,
    signature_of,
    stop_of,
)
from gateway.ids import new_id
from gateway.loop.failure import Failure
from gateway.upstream.sse import SseDecoder


class MessagesStreamEncoder:
    """Fed canonical chat chunks in order; gives the bytes of Anthropic's stream events."""

    def __init__(self, model: str, input_tokens: int = 0, stop_sequences: Iterable[str] = ()) -> None:
        self.model, self.input_tokens, self.stop_sequences = model, input_tokens, tuple(stop_sequences)
        self.started = self.stopped = False
        self.block: int | None = None  # the open content block's index
        self.kind: str | None = None  # its type
        self.blocks = 0
        self.tool_blocks: dict[int, int] = {}  # chat tool_calls index -> content block index
        self.signature = ""
        self.finish_reason: str | None = None
        self.matched: Any = None
        self.usage: Mapping[str, Any] | None = None

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        """The events of one chat chunk."""
        frames = self.start(chunk.get("id"))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            self.signature = signature_of(delta) or self.signature
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if reasoning:
                frames += self.delta("thinking", {"type": "thinking_delta", "thinking": reasoning})
            if delta.get("content"):
                frames += self.delta("text", {"type": "text_delta", "text": delta["content"]})
            for call in delta.get("tool_calls") or []:
                frames += self.tool_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason, self.matched = choice["finish_reason"], choice.get("stop_reason")
        return frames

    def start(self, upstream_id: Any = None) -> list[bytes]:
        """`message_start`, once."""
        if self.started:
            return []
        self.started = True
        usage = {"input_tokens": self.input_tokens, "output_tokens": 0, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        message = {"id": message_id(upstream_id), "type": "message", "role": "assistant", "content": [],
                   "model": self.model, "stop_reason": None, "stop_sequence": None, "usage": usage}
        return [event("message_start", {"message": message})]

    def open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        """Close the open block and start a new one of `kind`."""
        frames = self.close()
        self.block, self.kind = self.blocks, kind
        self.blocks += 1
        return [*frames, event("content_block_start", {"index": self.block, "content_block": block})]

    def close(self) -> list[bytes]:
        """`content_block_stop` of the open block (a thinking block gets its signature first)."""
        if self.block is None:
            return []
        frames = []
        if self.kind == "thinking" and self.signature:
            frames.append(event("content_block_delta", {"index": self.block, "delta": {
                "type": "signature_delta", "signature": self.signature}}))
            self.signature = ""
        frames.append(event("content_block_stop", {"index": self.block}))
        self.block = self.kind = None
        return frames

    def delta(self, kind: str, delta: dict[str, Any]) -> list[bytes]:
        """A text or thinking delta, in a block of its kind (opened when another kind is open)."""
        frames = []
        if self.kind != kind:
            empty = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "",
                                                                           "signature": ""}
            frames = self.open(kind, empty)
        return [*frames, event("content_block_delta", {"index": self.block, "delta": delta})]

    def tool_delta(self, call: Mapping[str, Any]) -> list[bytes]:
        """A tool call's start (its id and name) or a piece of its arguments, as `input_json_delta`."""
        index = int(call.get("index") or 0)
        function = call.get("function") or {}
        frames = []
        if index not in self.tool_blocks:
            block = {"type": "tool_use", "id": str(call.get("id") or new_id("toolu")),
                     "name": str(function.get("name") or ""), "input": {}}
            frames = self.open("tool_use", block)
            self.tool_blocks[index] = self.blocks - 1
        if function.get("arguments"):
            frames.append(event("content_block_delta", {"index": self.tool_blocks[index], "delta": {
                "type": "input_json_delta", "partial_json": function["arguments"]}}))
        return frames

    def finish(self) -> list[bytes]:
        """The last events: the open block's stop, `message_delta` and `message_stop`."""
        if self.stopped:
            return []
        frames = [*self.start(), *self.close()]
        self.stopped = True
        stop_reason, stop_sequence = stop_of(self.finish_reason, self.matched, self.stop_sequences)
        usage = anthropic_usage(self.usage) if self.usage else {"output_tokens": 0}
        frames.append(event("message_delta", {"delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                              "usage": usage}))
        return [*frames, event("message_stop", {})]


def messages_events(chat_sse: Iterator[bytes], encoder: MessagesStreamEncoder) -> Iterator[bytes]:
    """The relay's chat SSE (OpenRouter's framing, whose error chunk carries the status) as Messages events.

    A keep-alive comment becomes `ping`, `[DONE]` (sent once the charge is durable) the closing events,
    and an error chunk the `error` event; closing this generator closes the relay's, which settles.
    """
    decoder = SseDecoder()
    try:
        for frame in chat_sse:
            if frame.startswith(b":"):
                yield from encoder.start()  # message_start comes first, even before a ping
                yield ping()
                continue
            for sse_event in decoder.feed(frame):
                if sse_event.data.strip() == "[DONE]":
                    yield from encoder.finish()
                    continue
                data = json.loads(sse_event.data)
                if isinstance(data.get("error"), dict):
                    yield from encoder.start()
                    yield error_event(failure_of(data["error"]))
                    return
                yield from encoder.feed(data)
    finally:
        close = getattr(chat_sse, "close", None)
        if close is not None:
            close()


def failure_of(error: Mapping[str, Any]) -> Failure:
    """The failure an OpenRouter error chunk describes (its `code` is the HTTP status)."""
    status = error.get("code") if isinstance(error.get("code"), int) else 500
    return Failure(str(error.get("message") or "Upstream failed."), status, str(error.get("type") or "api_error"))
