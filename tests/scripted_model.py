"""A scripted model for the fake upstream: it calls tools, then answers with what they returned."""

from __future__ import annotations

import json
from typing import Any

from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, chat_completion


def tool_call_chunks(calls: list[tuple[str, dict[str, Any]]]) -> list[tuple[float, Any]]:
    """Stream chunks of a turn that calls these functions (name, arguments)."""
    events: list[tuple[float, Any]] = [(0, chat_chunk(role="assistant", content=None))]
    for index, (name, arguments) in enumerate(calls):
        encoded = json.dumps(arguments)
        head = {"index": index, "id": f"call_{index}", "type": "function",
                "function": {"name": name, "arguments": ""}}
        events.append((0, chat_chunk(tool_calls=[head])))
        for piece in (encoded[: len(encoded) // 2], encoded[len(encoded) // 2 :]):
            events.append((0, chat_chunk(tool_calls=[{"index": index, "function": {"arguments": piece}}])))
    events.append((0, chat_chunk(finish="tool_calls")))
    return events


def answer_chunks(text: str) -> list[tuple[float, Any]]:
    """Stream chunks of a plain answer, word by word."""
    words = text.split(" ")
    pieces = [word if index == 0 else " " + word for index, word in enumerate(words)]
    return [(0, chat_chunk(piece)) for piece in pieces] + [(0, chat_chunk(finish="stop"))]


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"id": "u", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


class ScriptedModel:
    """Turn 1 calls `calls`; once tool results are in, answers "Tools said: <results>"."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]], report_usage: bool = True) -> None:
        self.calls = calls
        self.report_usage = report_usage
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, path: str, body: dict[str, Any]) -> StreamReply | JsonReply:
        self.bodies.append(body)
        results = [m["content"] for m in body.get("messages", []) if m.get("role") == "tool"]
        if not body.get("stream"):
            return JsonReply(chat_completion("Tools said: " + " | ".join(results)))
        offered = {tool["function"]["name"] for tool in body.get("tools") or []}
        if not results and self.calls and all(name in offered for name, _ in self.calls):
            events = tool_call_chunks(self.calls)
        else:
            events = answer_chunks("Tools said: " + " | ".join(results) if results else "No tools.")
        if self.report_usage:
            events.append((0, usage(20, 5)))
        return StreamReply(events)
