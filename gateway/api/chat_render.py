"""Chat completions whose tools the gateway runs (`tools: "auto"`): the loop as chat JSON or chunks."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting.meter import Meter
from gateway.accounting.output_cap import output_cap
from gateway.errors import GatewayError, InvalidRequest
from gateway.loop.events import KeepAlive, LoopEvent, LoopFinished, McpCallStarted, TextDelta
from gateway.loop.run import Run
from gateway.loop.tool_loop import LoopPlan
from gateway.mcp.naming import tool_function_name
from gateway.upstream import sse
from gateway.upstream.dialect import OPENAI_STREAMS, StreamDialect
from gateway.upstream.relay import with_answer_fields, with_cost
from gateway.upstream.routing import Route

log = logging.getLogger(__name__)
LOOP_OWNED = ("tools", "stream", "stream_options", "max_tokens", "max_completion_tokens", "max_output_tokens",
              "messages", "model", "models", "n")


def loop_plan(body: dict[str, Any], route: Route, toolset: Any) -> LoopPlan:
    """The loop plan of a chat request; the profile's MCP tools replace `tools: "auto"`."""
    if not isinstance(body.get("messages"), list):
        raise InvalidRequest("`messages` must be a list.", param="messages")
    params = {key: value for key, value in body.items() if key not in LOOP_OWNED}
    return LoopPlan(route, list(body["messages"]), params, toolset,
                    max_output_tokens=output_cap(body, route.settings, "chat/completions"))


@dataclass
class ChatRender:
    """Accumulates loop events into one chat completion."""

    route: Route
    meter: Meter
    created: int = field(default_factory=lambda: int(time.time()))
    text: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The completion's id: the request's generation id."""
        return self.meter.generation_id

    def take(self, event: LoopEvent) -> None:
        if isinstance(event, TextDelta):
            self.text += event.text
        elif isinstance(event, McpCallStarted):
            name = tool_function_name(event.server_label, event.name)
            self.calls.append({"id": event.item_id, "type": "function",
                               "function": {"name": name, "arguments": event.arguments}})

    def usage(self, done: LoopFinished) -> dict[str, Any]:
        return with_cost(None, self.meter, done.usage, self.route)

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.calls:
            message["tool_calls"] = self.calls
        return message

    def completion(self, done: LoopFinished) -> dict[str, Any]:
        return with_answer_fields({
            "id": self.id, "object": "chat.completion", "created": self.created,
            "choices": [{"index": 0, "message": self.message(), "finish_reason": done.finish_reason, "logprobs": None}],
            "usage": self.usage(done)}, self.route, self.id)

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return with_answer_fields({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}, self.route,
                                  self.id)


def complete(run: Run) -> dict[str, Any]:
    """Run the loop to the end and answer one chat completion (HTTP error if it failed)."""
    render = ChatRender(run.plan.route, run.meter)
    with run:
        for event in run.events():
            render.take(event)
    if run.outcome.failure is not None:
        raise run.outcome.failure.error()
    return render.completion(run.outcome)


def stream(run: Run, wants_usage: bool, dialect: StreamDialect = OPENAI_STREAMS) -> Iterator[bytes]:
    """The loop as chat chunks: the answer streams; executed calls are listed before the finish."""
    render = ChatRender(run.plan.route, run.meter)
    try:
        with run:
            yield sse.encode(render.chunk({"role": "assistant", "content": ""}))
            for event in run.events():
                render.take(event)
                if isinstance(event, KeepAlive):
                    yield dialect.keepalive()
                elif isinstance(event, TextDelta):
                    yield sse.encode(render.chunk({"content": event.text}))
            run.finish(run.outcome_after(None))  # the charge is durable before the last byte
            yield from _stream_end(render, run.outcome, wants_usage, dialect)
    except Exception:
        log.exception("chat stream of request %s failed", run.meter.request_id)
        yield dialect.error_event(GatewayError("Internal error while streaming the response."), render.chunk({}))


def _stream_end(render: ChatRender, done: LoopFinished, wants_usage: bool, dialect: StreamDialect) -> Iterator[bytes]:
    if done.failure is not None:
        yield dialect.error_event(done.failure, render.chunk({}))
        return
    if render.calls:
        calls = [{**call, "index": index} for index, call in enumerate(render.calls)]
        yield sse.encode(render.chunk({"tool_calls": calls}))
    yield sse.encode(render.chunk({}, done.finish_reason))
    if wants_usage:
        yield sse.encode({**render.chunk({}), "choices": [], "usage": render.usage(done)})
    yield sse.DONE
