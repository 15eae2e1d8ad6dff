"""Pure reading of one model turn: chat.completion.chunk dicts -> loop events + the finished turn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting.tokens import usage_from_openai
from gateway.accounting.usage import Usage
from gateway.loop.events import FunctionCallDelta, LoopEvent, ReasoningDelta, TextDelta


def completion_as_chunk(completion: dict[str, Any]) -> dict[str, Any]:
    """A whole chat.completion as one equivalent chunk (for turns fetched without streaming)."""
    choices = []
    for choice in completion.get("choices") or []:
        delta = dict(choice.get("message") or {})
        delta["tool_calls"] = [{**call, "index": index} for index, call in enumerate(delta.get("tool_calls") or [])]
        choices.append({"index": choice.get("index", 0), "delta": delta, "finish_reason": choice.get("finish_reason")})
    return {"model": completion.get("model"), "choices": choices, "usage": completion.get("usage")}


@dataclass
class ToolCall:
    """One tool call the model made in a turn, assembled from its deltas."""

    index: int
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    announced: bool = False  # a FunctionCallDelta with its name has been yielded

    def as_message_part(self) -> dict[str, Any]:
        """The call as an assistant message's `tool_calls` entry."""
        return {"id": self.call_id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments or "{}"}}


def merge_name(known: str, piece: str) -> str:
    """OpenAI sends a call's name once; llama.cpp repeats it in every delta. Accept both."""
    if not known or piece.startswith(known):
        return piece or known
    return known + piece


@dataclass
class TurnReader:
    """Feed chunks in order; read text, reasoning, tool calls, finish reason and usage."""

    is_gateway_tool: Callable[[str], bool] = lambda name: False
    text: str = ""
    reasoning: str = ""
    calls: dict[int, ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str = ""

    def feed(self, chunk: dict[str, Any]) -> list[LoopEvent]:
        """Events for one chunk; calls to gateway-run tools are kept back (never shown as deltas)."""
        self.usage = usage_from_openai(chunk.get("usage")) or self.usage
        self.model = chunk.get("model") or self.model
        events: list[LoopEvent] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            events += self._delta(choice.get("delta") or {})
        return events

    def _delta(self, delta: dict[str, Any]) -> list[LoopEvent]:
        events: list[LoopEvent] = []
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thought, str) and thought:
            self.reasoning += thought
            events.append(ReasoningDelta(thought))
        if isinstance(delta.get("content"), str) and delta["content"]:
            self.text += delta["content"]
            events.append(TextDelta(delta["content"]))
        for part in delta.get("tool_calls") or []:
            events += self._tool_call(part)
        return events

    def _tool_call(self, part: dict[str, Any]) -> list[LoopEvent]:
        index = part.get("index", len(self.calls))
        call = self.calls.setdefault(index, ToolCall(index))
        function = part.get("function") or {}
        call.call_id = part.get("id") or call.call_id
        call.name = merge_name(call.name, function.get("name") or "")
        piece = function.get("arguments") or ""
        call.arguments += piece
        if not call.name or self.is_gateway_tool(call.name):
            return []
        if not call.announced:
            call.announced = True
            return [FunctionCallDelta(index, call.call_id or None, call.name, call.arguments)]
        return [FunctionCallDelta(index, arguments=piece)] if piece else []

    def tool_calls(self) -> list[ToolCall]:
        """The turn's calls in index order, each with an id."""
        calls = [self.calls[index] for index in sorted(self.calls)]
        for call in calls:
            call.call_id = call.call_id or f"call_{call.index}"
        return calls

    def generated_text(self) -> str:
        """Every character the model generated in this turn, for estimates."""
        return self.text + self.reasoning + "".join(call.name + call.arguments for call in self.calls.values())

    def assistant_message(self) -> dict[str, Any]:
        """The turn as the assistant message to send back on the next turn."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.calls:
            message["tool_calls"] = [call.as_message_part() for call in self.tool_calls()]
        return message
