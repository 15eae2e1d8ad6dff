"""Chat completions whose tools the gateway runs: the loop as chat JSON or chunks.

Executed MCP calls are always listed in the message's `mcp_calls` (Responses `mcp_call` items,
streamed as `delta.mcp_calls` when each call ends). In the seed's form (`tool_calls`) they are
also listed in `message.tool_calls` with `finish_reason: "stop"`; in the agents' form
(`mcp_calls`) `tool_calls` holds only the calls to the client's own function tools, which end
the answer with `finish_reason: "tool_calls"` for the client to run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting.meter import Meter
from gateway.accounting.output_cap import output_cap
from gateway.errors import BadInput, GatewayError, InvalidRequest
from gateway.loop.events import (
    FunctionCallDelta,
    KeepAlive,
    LoopEvent,
    LoopFinished,
    McpCallFinished,
    McpCallStarted,
    TextDelta,
)
from gateway.loop.run import Run
from gateway.loop.tool_loop import LoopPlan
from gateway.mcp.naming import PREFIX, is_reserved, tool_function_name
from gateway.upstream import sse
from gateway.upstream.dialect import OPENAI_STREAMS, StreamDialect
from gateway.upstream.relay import with_answer_fields, with_cost
from gateway.upstream.routing import Route

log = logging.getLogger(__name__)
SEED_FORM, AGENTS_FORM = "tool_calls", "mcp_calls"  # where executed calls are listed (module docstring)
LOOP_OWNED = ("tools", "stream", "stream_options", "max_tokens", "max_completion_tokens", "max_output_tokens",
              "messages", "model", "models", "n")


def loop_plan(body: dict[str, Any], route: Route, toolset: Any) -> LoopPlan:
    """The loop plan of a chat request: the profile's MCP tools beside the client's function tools (if any)."""
    if not isinstance(body.get("messages"), list):
        raise InvalidRequest("`messages` must be a list.", param="messages")
    params = {key: value for key, value in body.items() if key not in LOOP_OWNED}
    if isinstance(body.get("tools"), list) and body["tools"]:
        params["tools"] = check_client_tools(body["tools"])
    return LoopPlan(route, list(body["messages"]), params, toolset,
                    max_output_tokens=output_cap(body, route.settings, "chat/completions"))


def check_client_tools(tools: list[Any]) -> list[Any]:
    """Client function tools beside the gateway's: names with the reserved MCP prefix are a 422."""
    for index, tool in enumerate(tools):
        name = str(((tool or {}).get("function") or {}).get("name", "")) if isinstance(tool, dict) else ""
        if is_reserved(name):
            raise BadInput(f"Function tool names starting with '{PREFIX}' are reserved.",
                           param=f"tools[{index}].function.name")
    return tools


@dataclass
class ChatRender:
    """Accumulates loop events into one chat completion."""

    route: Route
    meter: Meter
    form: str = SEED_FORM
    created: int = field(default_factory=lambda: int(time.time()))
    text: str = ""
    mcp_calls: dict[str, dict[str, Any]] = field(default_factory=dict)  # executed calls as mcp_call items, by id
    client_calls: dict[int, dict[str, Any]] = field(default_factory=dict)  # calls for the client, by turn index

    @property
    def id(self) -> str:
        """The completion's id: the request's generation id."""
        return self.meter.generation_id

    def take(self, event: LoopEvent) -> dict[str, Any] | None:
        """Record one loop event; the chunk delta it streams as, if any."""
        if isinstance(event, TextDelta):
            self.text += event.text
            return {"content": event.text}
        if isinstance(event, FunctionCallDelta):
            return {"tool_calls": [self.client_call(event)]}
        if isinstance(event, McpCallStarted):
            self.mcp_calls[event.item_id] = {"id": event.item_id, "type": "mcp_call",
                                             "server_label": event.server_label, "name": event.name,
                                             "arguments": event.arguments, "output": None, "error": None}
        elif isinstance(event, McpCallFinished) and event.item_id in self.mcp_calls:
            item = self.mcp_calls[event.item_id]
            item.update(output=event.output, error=event.error)
            return {"mcp_calls": [item]}
        return None

    def client_call(self, event: FunctionCallDelta) -> dict[str, Any]:
        """Record part of a call to a client tool; the part as a streamed `tool_calls` entry."""
        known = self.client_calls.get(event.index)
        if known is None:
            call_id = event.call_id or f"call_{event.index}"
            known = self.client_calls[event.index] = {"id": call_id, "type": "function",
                                                      "function": {"name": event.name, "arguments": ""}}
            part = {"index": len(self.client_calls) - 1, **known,
                    "function": {"name": event.name, "arguments": event.arguments}}
        else:
            part = {"index": list(self.client_calls).index(event.index), "function": {"arguments": event.arguments}}
        known["function"]["arguments"] += event.arguments
        return part

    def finish_reason(self, done: LoopFinished) -> str | None:
        """OpenAI's rule: `tool_calls` when the client has calls to run, else the loop's reason."""
        return "tool_calls" if self.client_calls and done.status == "completed" else done.finish_reason

    def usage(self, done: LoopFinished) -> dict[str, Any]:
        return with_cost(None, self.meter, done.usage, self.route)

    def executed_as_tool_calls(self) -> list[dict[str, Any]]:
        """The executed calls as chat tool calls, under the names the model called (the seed's form)."""
        return [{"id": item["id"], "type": "function", "function": {
            "name": tool_function_name(item["server_label"], item["name"]), "arguments": item["arguments"]}}
            for item in self.mcp_calls.values()]

    def tool_calls(self) -> list[dict[str, Any]]:
        """The message's `tool_calls`: the client's calls, after the executed ones in the seed's form."""
        executed = self.executed_as_tool_calls() if self.form == SEED_FORM else []
        return executed + list(self.client_calls.values())

    def message(self) -> dict[str, Any]:
        tool_calls = self.tool_calls()
        message: dict[str, Any] = {"role": "assistant", "content": self.text or (None if tool_calls else "")}
        if tool_calls:
            message["tool_calls"] = tool_calls
        if self.mcp_calls:
            message["mcp_calls"] = list(self.mcp_calls.values())
        return message

    def completion(self, done: LoopFinished) -> dict[str, Any]:
        return with_answer_fields({
            "id": self.id, "object": "chat.completion", "created": self.created,
            "choices": [{"index": 0, "message": self.message(), "finish_reason": self.finish_reason(done),
                         "logprobs": None}],
            "usage": self.usage(done)}, self.route, self.id)

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return with_answer_fields({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}, self.route,
                                  self.id)


def complete(run: Run, form: str = SEED_FORM) -> dict[str, Any]:
    """Run the loop to the end and answer one chat completion (HTTP error if it failed)."""
    render = ChatRender(run.plan.route, run.meter, form)
    with run:
        for event in run.events():
            render.take(event)
    if run.outcome.failure is not None:
        raise run.outcome.failure.error()
    return render.completion(run.outcome)


def stream(
    run: Run, wants_usage: bool, dialect: StreamDialect = OPENAI_STREAMS, form: str = SEED_FORM
) -> Iterator[bytes]:
    """The loop as chat chunks: the answer, client calls and executed calls stream as they come."""
    render = ChatRender(run.plan.route, run.meter, form)
    try:
        with run:
            yield sse.encode(render.chunk({"role": "assistant", "content": ""}))
            for event in run.events():
                delta = render.take(event)
                if isinstance(event, KeepAlive):
                    yield dialect.keepalive()
                elif delta is not None:
                    yield sse.encode(render.chunk(delta))
            run.finish(run.outcome_after(None))  # the charge is durable before the last byte
            yield from _stream_end(render, run.outcome, wants_usage, dialect)
    except Exception:
        log.exception("chat stream of request %s failed", run.meter.request_id)
        yield dialect.error_event(GatewayError("Internal error while streaming the response."), render.chunk({}))


def _stream_end(render: ChatRender, done: LoopFinished, wants_usage: bool, dialect: StreamDialect) -> Iterator[bytes]:
    if done.failure is not None:
        yield dialect.error_event(done.failure, render.chunk({}))
        return
    if render.mcp_calls and render.form == SEED_FORM:
        calls = [{**call, "index": index} for index, call in enumerate(render.executed_as_tool_calls())]
        yield sse.encode(render.chunk({"tool_calls": calls}))
    yield sse.encode(render.chunk({}, render.finish_reason(done)))
    if wants_usage:
        yield sse.encode({**render.chunk({}), "choices": [], "usage": render.usage(done)})
    yield sse.DONE
