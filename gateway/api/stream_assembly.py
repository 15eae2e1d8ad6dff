"""Streamed answers assembled into the JSON form the same request gets unstreamed (the response cache stores it).

Pure: fed the stream's chunks or events in order, each assembler builds a `chat.completion`, a
`text_completion` or an Anthropic `message`, and says whether the stream ended normally (every
choice finished; `message_stop` came and no `error` event). It copies what it reads, so a relay may
change a chunk after feeding it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CHAT_TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")  # delta strings that add up
HEAD_FIELDS = ("created", "system_fingerprint", "service_tier")


def chunk_choices(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    """The choices of a chunk that are objects (an upstream may send anything)."""
    choices = chunk.get("choices")
    return [choice for choice in choices if isinstance(choice, dict)] if isinstance(choices, list) else []


@dataclass
class ChatAssembly:
    """`chat.completion.chunk`s in, one `chat.completion` out."""

    head: dict[str, Any] = field(default_factory=dict)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)  # by choice index
    calls: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)  # choice -> call index -> call
    reasons: dict[int, str] = field(default_factory=dict)
    usage: dict[str, Any] | None = None

    def feed(self, chunk: dict[str, Any]) -> None:
        """Add one chunk."""
        for name in HEAD_FIELDS:
            if chunk.get(name) is not None:
                self.head.setdefault(name, chunk[name])
        if isinstance(chunk.get("usage"), dict):
            self.usage = dict(chunk["usage"])
        for choice in chunk_choices(chunk):
            index = int(choice.get("index") or 0)
            message = self.messages.setdefault(index, {"role": "assistant"})
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            self.add_delta(index, message, delta)
            if isinstance(choice.get("finish_reason"), str):
                self.reasons[index] = choice["finish_reason"]

    def add_delta(self, index: int, message: dict[str, Any], delta: dict[str, Any]) -> None:
        """One choice's delta: strings add up, reasoning details and tool calls accumulate."""
        if isinstance(delta.get("role"), str):
            message["role"] = delta["role"]
        for name in CHAT_TEXT_FIELDS:
            if isinstance(delta.get(name), str):
                message[name] = message.get(name, "") + delta[name]
        if isinstance(delta.get("reasoning_details"), list):
            message.setdefault("reasoning_details", []).extend(delta["reasoning_details"])
        for part in delta.get("tool_calls") or []:
            if isinstance(part, dict):
                self.add_call(index, part)

    def add_call(self, index: int, part: dict[str, Any]) -> None:
        """A tool call's first part (id, type, name) or a piece of its arguments."""
        calls = self.calls.setdefault(index, {})
        call = calls.setdefault(int(part.get("index") or 0), {"id": None, "type": "function",
                                                              "function": {"name": "", "arguments": ""}})
        if part.get("id"):
            call["id"] = part["id"]
        if part.get("type"):
            call["type"] = part["type"]
        function = part.get("function") if isinstance(part.get("function"), dict) else {}
        for name in ("name", "arguments"):
            if isinstance(function.get(name), str):
                call["function"][name] += function[name]

    @property
    def finished(self) -> bool:
        """Whether every choice reported its finish reason."""
        return bool(self.messages) and set(self.messages) <= set(self.reasons)

    def answer(self, generation_id: str, model: str, provider: str) -> dict[str, Any]:
        """The `chat.completion` of the chunks fed so far."""
        choices = []
        for index in sorted(self.messages):
            message = dict(self.messages[index])
            calls = self.calls.get(index)
            if calls:
                message["tool_calls"] = [calls[position] for position in sorted(calls)]
                message["content"] = message.get("content") or None  # as an unstreamed answer with only calls
            message.setdefault("content", "")
            choices.append({"index": index, "message": message, "logprobs": None,
                            "finish_reason": self.reasons.get(index)})
        answer = {"id": generation_id, "object": "chat.completion", "created": self.head.get("created", 0),
                  "model": model, "provider": provider, "system_fingerprint": self.head.get("system_fingerprint"),
                  "choices": choices}
        if self.head.get("service_tier") is not None:
            answer["service_tier"] = self.head["service_tier"]
        return {**answer, "usage": self.usage} if self.usage is not None else answer


@dataclass
class CompletionAssembly:
    """Legacy `text_completion` chunks in, one `text_completion` out."""

    created: int = 0
    texts: dict[int, str] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    usage: dict[str, Any] | None = None

    def feed(self, chunk: dict[str, Any]) -> None:
        """Add one chunk."""
        self.created = self.created or int(chunk.get("created") or 0)
        if isinstance(chunk.get("usage"), dict):
            self.usage = dict(chunk["usage"])
        for choice in chunk_choices(chunk):
            index = int(choice.get("index") or 0)
            text = choice.get("text")
            self.texts[index] = self.texts.get(index, "") + (text if isinstance(text, str) else "")
            if isinstance(choice.get("finish_reason"), str):
                self.reasons[index] = choice["finish_reason"]

    @property
    def finished(self) -> bool:
        """Whether every choice reported its finish reason."""
        return bool(self.texts) and set(self.texts) <= set(self.reasons)

    def answer(self, generation_id: str, model: str, provider: str) -> dict[str, Any]:
        """The `text_completion` of the chunks fed so far."""
        choices = [{"index": index, "text": self.texts[index], "logprobs": None,
                    "finish_reason": self.reasons.get(index)} for index in sorted(self.texts)]
        answer = {"id": generation_id, "object": "text_completion", "created": self.created, "model": model,
                  "provider": provider, "system_fingerprint": None, "choices": choices}
        return {**answer, "usage": self.usage} if self.usage is not None else answer


@dataclass
class MessageAssembly:
    """Anthropic Messages stream events in (as their JSON payloads), one `message` out."""

    message: dict[str, Any] = field(default_factory=dict)
    blocks: dict[int, dict[str, Any]] = field(default_factory=dict)
    partial_json: dict[int, str] = field(default_factory=dict)  # tool input JSON by block index, until its stop
    stopped: bool = False
    failed: bool = False

    def feed(self, payload: dict[str, Any]) -> None:
        """Add one event."""
        kind = payload.get("type")
        if kind == "message_start" and isinstance(payload.get("message"), dict):
            self.message = {**payload["message"], "usage": dict(payload["message"].get("usage") or {})}
        elif kind == "content_block_start" and isinstance(payload.get("content_block"), dict):
            self.blocks[int(payload.get("index") or 0)] = dict(payload["content_block"])
        elif kind == "content_block_delta" and isinstance(payload.get("delta"), dict):
            self.add_delta(int(payload.get("index") or 0), payload["delta"])
        elif kind == "content_block_stop":
            self.close_block(int(payload.get("index") or 0))
        elif kind == "message_delta":
            self.message.update({name: value for name, value in (payload.get("delta") or {}).items()})
            self.message.setdefault("usage", {}).update(
                {name: value for name, value in (payload.get("usage") or {}).items() if value is not None})
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            self.failed = True

    def add_delta(self, index: int, delta: dict[str, Any]) -> None:
        """Text, thinking, a signature, citations or a piece of tool input JSON."""
        block = self.blocks.setdefault(index, {})
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + str(delta.get("text") or "")
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta.get("thinking") or "")
        elif kind == "signature_delta":
            block["signature"] = str(delta.get("signature") or "")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))
        elif kind == "input_json_delta":
            self.partial_json[index] = self.partial_json.get(index, "") + str(delta.get("partial_json") or "")

    def close_block(self, index: int) -> None:
        """A block's stop: its tool input JSON is parsed (a broken one fails the assembly)."""
        text = self.partial_json.pop(index, None)
        if text is None:
            return
        try:
            self.blocks.setdefault(index, {})["input"] = json.loads(text) if text.strip() else {}
        except ValueError:
            self.failed = True

    @property
    def finished(self) -> bool:
        """Whether the stream reached `message_stop` without an error."""
        return self.stopped and not self.failed and bool(self.message)

    def answer(self) -> dict[str, Any]:
        """The `message` of the events fed so far."""
        return {**self.message, "content": [self.blocks[index] for index in sorted(self.blocks)]}
