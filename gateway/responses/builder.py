"""Turn the loop's events into the Responses object and its SSE event dicts (OpenResponses order).

Raw upstream reasoning is exposed as a `reasoning` item whose `content` holds one `reasoning_text`
part, streamed with the spec's `response.reasoning.delta/done` events; `summary` stays empty.
MCP items follow OpenAI's shapes (mcp_list_tools, mcp_call, mcp_approval_request) plus a `status`.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from gateway.ids import new_id
from gateway.loop.events import (
    FunctionCallDelta,
    KeepAlive,
    LoopEvent,
    LoopFinished,
    McpApprovalRequested,
    McpCallFinished,
    McpCallStarted,
    McpToolsListed,
    ReasoningDelta,
    TextDelta,
    TurnFinished,
)
from gateway.loop.failure import Failure
from gateway.responses.echo import usage_dict

TRUNCATED_FINISH_REASONS = {"length", "content_filter"}
TERMINAL_EVENTS = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}


class ResponseBuilder:
    """Accumulates one response; every method returns the events to send, in order."""

    def __init__(self, response_id: str, echo: dict[str, Any], created_at: int, model: str) -> None:
        self._response: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "completed_at": None,
            "status": "in_progress",
            "incomplete_details": None,
            "model": model,
            "output": [],
            "error": None,
            "usage": None,
            **echo,
        }
        self._sequence = 0
        self._open: int | None = None
        self._calls: dict[int, int] = {}
        self._pending_calls: dict[int, dict[str, Any]] = {}
        self._finished = False

    @property
    def _output(self) -> list[dict[str, Any]]:
        """The live output items (not a copy)."""
        return self._response["output"]

    def response(self) -> dict[str, Any]:
        """A copy of the full response object as it stands."""
        return copy.deepcopy(self._response)

    def start(self) -> list[dict[str, Any]]:
        """`response.created` then `response.in_progress`."""
        return [
            self._event("response.created", response=self.response()),
            self._event("response.in_progress", response=self.response()),
        ]

    def feed(self, event: LoopEvent) -> list[dict[str, Any]]:
        """The events one loop event produces (none for KeepAlive)."""
        if isinstance(event, KeepAlive):
            return []
        if self._finished:
            raise RuntimeError("the response is already finished")
        if isinstance(event, LoopFinished):
            return self.finish(event)
        handlers = {
            TextDelta: self._on_text,
            ReasoningDelta: self._on_reasoning,
            FunctionCallDelta: self._on_function_call,
            TurnFinished: self._on_turn_finished,
            McpToolsListed: self._on_tools_listed,
            McpCallStarted: self._on_mcp_call_started,
            McpCallFinished: self._on_mcp_call_finished,
            McpApprovalRequested: self._on_approval_requested,
        }
        return handlers[type(event)](event)

    def finish(self, done: LoopFinished, completed_at: int | None = None) -> list[dict[str, Any]]:
        """Close open items, then exactly one of response.completed / incomplete / failed."""
        if self._finished:
            raise RuntimeError("the response is already finished")
        item_status = "completed" if done.status == "completed" else "incomplete"
        events = self._flush_pending_calls() + self._close_open(item_status)
        self._finished = True
        self._response.update(status=done.status, usage=usage_dict(done.usage))
        if done.status == "completed":
            self._response["completed_at"] = completed_at or int(time.time())
        elif done.status == "incomplete":
            reason = done.incomplete_reason or "max_output_tokens"
            self._response["incomplete_details"] = {"reason": reason}
        else:
            self._response["error"] = done.failure.summary() if done.failure else None
        return [*events, self._event(TERMINAL_EVENTS[done.status], response=self.response())]

    def error_event(self, failure: Failure) -> dict[str, Any]:
        """The mid-stream `error` event of a run's failure (spec's nested `error` plus OpenAI's flat fields)."""
        error = {**failure.summary(), "param": failure.param}
        return self._event("error", code=error["code"], message=failure.message, param=failure.param, error=error)

    def _event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        event = {"type": event_type, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _add_item(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self._output.append(item)
        index = len(self._output) - 1
        return [self._event("response.output_item.added", output_index=index, item=copy.deepcopy(item))]

    def _item_done(self, index: int, status: str) -> dict[str, Any]:
        item = self._output[index]
        item["status"] = status
        return self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item))

    def _refs(self, index: int) -> dict[str, Any]:
        return {"item_id": self._output[index]["id"], "output_index": index}

    def _open_item(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close_open("completed") + self._add_item(item)
        self._open = len(self._output) - 1
        return events

    def _open_text_item(self, kind: str) -> tuple[int, list[dict[str, Any]]]:
        """The open message/reasoning item, opening one with its single content part if needed."""
        if self._open is not None and self._output[self._open]["type"] == kind:
            return self._open, []
        if kind == "message":
            item = {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant"}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        else:
            item = {"id": new_id("rs"), "type": "reasoning", "status": "in_progress", "summary": []}
            part = {"type": "reasoning_text", "text": ""}
        events = self._open_item({**item, "content": []})
        self._output[self._open]["content"].append(part)
        refs = {**self._refs(self._open), "content_index": 0}
        events.append(self._event("response.content_part.added", **refs, part=copy.deepcopy(part)))
        return self._open, events

    def _on_text(self, event: TextDelta) -> list[dict[str, Any]]:
        if not event.text:
            return []
        index, events = self._open_text_item("message")
        self._output[index]["content"][0]["text"] += event.text
        refs = {**self._refs(index), "content_index": 0}
        return [*events, self._event("response.output_text.delta", **refs, delta=event.text, logprobs=[])]

    def _on_reasoning(self, event: ReasoningDelta) -> list[dict[str, Any]]:
        if not event.text:
            return []
        index, events = self._open_text_item("reasoning")
        self._output[index]["content"][0]["text"] += event.text
        refs = {**self._refs(index), "content_index": 0}
        return [*events, self._event("response.reasoning.delta", **refs, delta=event.text)]

    def _on_function_call(self, event: FunctionCallDelta) -> list[dict[str, Any]]:
        if event.index in self._calls:
            index = self._calls[event.index]
            self._output[index]["arguments"] += event.arguments
            if index != self._open or not event.arguments:
                return []  # a late delta for an already closed call only updates the item
            return [
                self._event(
                    "response.function_call_arguments.delta", **self._refs(index), delta=event.arguments
                )
            ]
        pending = self._pending_calls.setdefault(event.index, {"call_id": None, "name": "", "arguments": ""})
        pending["call_id"] = event.call_id or pending["call_id"]
        pending["name"] = event.name or pending["name"]
        pending["arguments"] += event.arguments
        return self._open_call(event.index) if pending["name"] else []

    def _open_call(self, call_index: int) -> list[dict[str, Any]]:
        pending = self._pending_calls.pop(call_index)
        item = {
            "id": new_id("fc"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": pending["call_id"] or new_id("call"),
            "name": pending["name"],
            "arguments": "",
        }
        events = self._open_item(item)
        self._calls[call_index] = self._open
        if pending["arguments"]:
            self._output[self._open]["arguments"] = pending["arguments"]
            refs = self._refs(self._open)
            events.append(
                self._event("response.function_call_arguments.delta", **refs, delta=pending["arguments"])
            )
        return events

    def _flush_pending_calls(self) -> list[dict[str, Any]]:
        """Calls whose name never arrived are still reported, so no call is lost silently."""
        events: list[dict[str, Any]] = []
        for call_index in sorted(self._pending_calls):
            events += self._open_call(call_index)
        return events

    def _on_turn_finished(self, event: TurnFinished) -> list[dict[str, Any]]:
        status = "incomplete" if event.finish_reason in TRUNCATED_FINISH_REASONS else "completed"
        events = self._flush_pending_calls() + self._close_open(status)
        self._calls = {}
        return events

    def _on_tools_listed(self, event: McpToolsListed) -> list[dict[str, Any]]:
        item = {
            "id": new_id("mcpl"),
            "type": "mcp_list_tools",
            "status": "in_progress",
            "server_label": event.server_label,
            "tools": [],
        }  # `error` only when listing failed: the Vercel AI SDK refuses `"error": null` here
        events = self._close_open("completed") + self._add_item(item)
        index = len(self._output) - 1
        events.append(self._event("response.mcp_list_tools.in_progress", **self._refs(index)))
        item["tools"] = [_listed_tool(tool) for tool in event.tools]
        if event.error is not None:
            item["error"] = event.error
        outcome = "failed" if event.error is not None else "completed"
        events.append(self._event(f"response.mcp_list_tools.{outcome}", **self._refs(index)))
        return [*events, self._item_done(index, outcome)]

    def _on_mcp_call_started(self, event: McpCallStarted) -> list[dict[str, Any]]:
        item = {
            "id": event.item_id,
            "type": "mcp_call",
            "status": "in_progress",
            "server_label": event.server_label,
            "name": event.name,
            "arguments": "",
            "output": None,
            "error": None,
            "approval_request_id": None,
        }
        events = self._open_item(item)
        refs = self._refs(self._open)
        events.append(self._event("response.mcp_call.in_progress", **refs))
        item["arguments"] = event.arguments
        if event.arguments:
            events.append(self._event("response.mcp_call_arguments.delta", **refs, delta=event.arguments))
        events.append(self._event("response.mcp_call_arguments.done", **refs, arguments=event.arguments))
        return events

    def _on_mcp_call_finished(self, event: McpCallFinished) -> list[dict[str, Any]]:
        index = next(
            (
                i
                for i, item in enumerate(self._output)
                if item["id"] == event.item_id and item["type"] == "mcp_call"
            ),
            None,
        )
        if index is None or self._output[index]["status"] != "in_progress":
            raise ValueError(f"no MCP call in progress with id {event.item_id!r}")
        outcome = "failed" if event.error is not None else "completed"
        self._output[index].update(output=event.output, error=event.error)
        if index == self._open:
            self._open = None
        return [
            self._event(f"response.mcp_call.{outcome}", **self._refs(index)),
            self._item_done(index, outcome),
        ]

    def _on_approval_requested(self, event: McpApprovalRequested) -> list[dict[str, Any]]:
        item = {
            "id": event.item_id,
            "type": "mcp_approval_request",
            "status": "in_progress",
            "server_label": event.server_label,
            "name": event.name,
            "arguments": event.arguments,
        }
        events = self._close_open("completed") + self._add_item(item)
        return [*events, self._item_done(len(self._output) - 1, "completed")]

    def _close_open(self, status: str) -> list[dict[str, Any]]:
        """Finish the open item's content and send output_item.done."""
        index, self._open = self._open, None
        if index is None:
            return []
        item = self._output[index]
        refs = self._refs(index)
        events: list[dict[str, Any]] = []
        if item["type"] in ("message", "reasoning"):
            part = item["content"][0]
            done_type = (
                "response.output_text.done" if item["type"] == "message" else "response.reasoning.done"
            )
            extra = {"logprobs": []} if item["type"] == "message" else {}
            events.append(self._event(done_type, **refs, content_index=0, text=part["text"], **extra))
            events.append(
                self._event("response.content_part.done", **refs, content_index=0, part=copy.deepcopy(part))
            )
        elif item["type"] == "function_call":
            events.append(
                self._event("response.function_call_arguments.done", **refs, arguments=item["arguments"])
            )
        elif item["type"] == "mcp_call":
            status = "incomplete"  # closed without a result: the run ended while the tool ran
        return [*events, self._item_done(index, status)]


def _listed_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """An MCP tool as OpenAI lists it: name, description, input_schema, annotations."""
    return {
        "name": tool["name"],
        "description": tool.get("description"),
        "input_schema": tool.get("input_schema", tool.get("inputSchema", {})),
        "annotations": tool.get("annotations"),
    }
