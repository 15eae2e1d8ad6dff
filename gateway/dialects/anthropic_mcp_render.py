"""A tool loop run (MCP servers beside the client's tools) as Anthropic's `message` or its stream events.

The stream is the one rendering: text, thinking and the client's `tool_use` blocks go through
gateway.dialects.anthropic_stream's encoder as chat chunks, and each executed call opens and closes
an `mcp_tool_use` block, then an `mcp_tool_result` block, where it happened. The JSON `message` is
those same events accumulated as the Anthropic SDK accumulates them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from gateway.accounting.usage import Usage
from gateway.dialects.anthropic_mcp import tool_result_block, tool_use_block
from gateway.dialects.anthropic_replies import error_event, ping
from gateway.dialects.anthropic_stream import MessagesStreamEncoder
from gateway.loop.events import (
    FunctionCallDelta,
    KeepAlive,
    LoopEvent,
    LoopFinished,
    McpCallFinished,
    McpCallStarted,
    ReasoningDelta,
    TextDelta,
)
from gateway.loop.failure import Failure
from gateway.loop.run import Run
from gateway.upstream.sse import SseDecoder

log = logging.getLogger(__name__)


class McpMessageRender:
    """Turns loop events into Messages stream events; `server_names` maps a loop label to the client's name."""

    def __init__(self, model: str, server_names: dict[str, str], stop_sequences: Iterable[str] = ()) -> None:
        self.encoder = MessagesStreamEncoder(model, 0, stop_sequences)
        self.server_names = server_names
        self.client_calls = False

    def take(self, event: LoopEvent) -> list[bytes]:
        """The stream events of one loop event."""
        if isinstance(event, TextDelta):
            return self.encoder.feed(chunk({"content": event.text}))
        if isinstance(event, ReasoningDelta):
            return self.encoder.feed(chunk({"reasoning": event.text}))
        if isinstance(event, FunctionCallDelta):
            self.client_calls = True
            call = {"index": event.index, "id": event.call_id,
                    "function": {"name": event.name, "arguments": event.arguments}}
            return self.encoder.feed(chunk({"tool_calls": [call]}))
        if isinstance(event, McpCallStarted):
            name = self.server_names.get(event.server_label, event.server_label)
            return self.block(tool_use_block(event.item_id, event.name, name, event.arguments))
        if isinstance(event, McpCallFinished):
            return self.block(tool_result_block(event.item_id, event.output, event.error))
        return []

    def block(self, content_block: dict[str, Any]) -> list[bytes]:
        """A whole block: started with its content, stopped at once."""
        return [*self.encoder.open(content_block["type"], content_block), *self.encoder.close()]

    def end(self, done: LoopFinished) -> list[bytes]:
        """The closing events: `tool_use` when the client has calls to run, else the loop's reason."""
        reason = "tool_calls" if self.client_calls and done.status == "completed" else done.finish_reason
        return [*self.encoder.feed({"choices": [{"delta": {}, "finish_reason": reason}],
                                    "usage": chat_usage(done.usage)}), *self.encoder.finish()]


def chunk(delta: dict[str, Any]) -> dict[str, Any]:
    """A chat chunk carrying one delta."""
    return {"choices": [{"index": 0, "delta": delta}]}


def chat_usage(usage: Usage) -> dict[str, Any]:
    """The loop's usage in chat's words (what anthropic_usage reads)."""
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens,
                                      "cache_write_tokens": usage.cache_write_tokens}}


def complete(run: Run, render: McpMessageRender) -> dict[str, Any]:
    """Run the loop to the end and answer one `message` (an HTTP error if it failed)."""
    frames = render.encoder.start()
    with run:
        for event in run.events():
            frames += render.take(event)
    if run.outcome.failure is not None:
        raise run.outcome.failure.error()
    return accumulated(frames + render.end(run.outcome))


def stream(run: Run, render: McpMessageRender) -> Iterator[bytes]:
    """The loop as Messages stream events; a keep-alive is a `ping`, a failure the `error` event."""
    try:
        with run:
            yield from render.encoder.start()
            for event in run.events():
                yield from (ping(),) if isinstance(event, KeepAlive) else render.take(event)
            run.finish(run.outcome_after(None))  # the charge is durable before the last byte
            failure = run.outcome.failure
            yield from [error_event(failure)] if failure is not None else render.end(run.outcome)
    except Exception:
        log.exception("messages stream of request %s failed", run.meter.request_id)
        yield error_event(Failure("Internal error while streaming the response."))


def accumulated(frames: list[bytes]) -> dict[str, Any]:
    """The `message` that a stream's events build, as the SDK's accumulator builds it."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for sse_event in SseDecoder().feed(b"".join(frames)):
        data = json.loads(sse_event.data)
        kind = data["type"]
        if kind == "message_start":
            message = data["message"]
        elif kind == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif kind == "content_block_delta":
            add_delta(message["content"][data["index"]], data["delta"], partial, data["index"])
        elif kind == "message_delta":
            message.update(data["delta"])
            message["usage"] = {**message["usage"], **data["usage"]}
    for index, text in partial.items():
        message["content"][index]["input"] = json.loads(text or "{}")
    return message


def add_delta(block: dict[str, Any], delta: dict[str, Any], partial: dict[int, str], index: int) -> None:
    """One content_block_delta into its block (tool input JSON is parsed once whole)."""
    kind = delta["type"]
    if kind == "text_delta":
        block["text"] += delta["text"]
    elif kind == "thinking_delta":
        block["thinking"] += delta["thinking"]
    elif kind == "signature_delta":
        block["signature"] = delta["signature"]
    elif kind == "input_json_delta":
        partial[index] = partial.get(index, "") + delta["partial_json"]
