"""A relayed stream's text through the output guardrails: chunks in, the chunks to send out.

Each choice's text (chat `delta.content`, legacy `text`) goes through its own window of an output
check (gateway.guardrails.StreamCheck, seen here only through the `OutputCheck` protocol: this floor
does not import the guardrails room). A chunk's text delta is the only field rewritten; ids, tool
calls, usage and finish reasons pass as they are. A window holds back a bounded tail (so a match
that spans chunks is caught); the tail is flushed, checked, with the chunk that finishes its choice,
or in a chunk of its own just before it, and before a usage-only chunk. A block raises the check's
ContentPolicyViolation, which ends the stream as any GatewayError does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

HEAD_FIELDS = ("id", "object", "created", "model", "system_fingerprint", "provider")


class OutputCheck(Protocol):
    """A sliding window over streamed text (gateway.guardrails.StreamCheck)."""

    def feed(self, delta: str) -> str:
        """The text safe to send now; may hold back a bounded tail; raises on block."""

    def finish(self) -> str:
        """The held-back rest, checked."""


class CheckedChunks:
    """Rewrites a chat or legacy completions stream's chunks through one output window per choice."""

    def __init__(self, new_check: Callable[[], OutputCheck]) -> None:
        self.new_check = new_check
        self.windows: dict[int, OutputCheck] = {}
        self.form: dict[str, Any] = {"delta": {}}  # a choice like the stream's (legacy: `text`), for tails

    def rewrite(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks to send for this one, in order (a tail chunk first when its choice finishes without text)."""
        choices = [choice for choice in chunk.get("choices") or [] if isinstance(choice, dict)]
        if not choices and chunk.get("usage"):
            return [*self.rest(chunk), chunk]
        tails: list[dict[str, Any]] = []
        for choice in choices:
            index = choice.get("index", 0)
            holder, field = text_field(choice)
            if holder is not None:
                self.form = {"text": ""} if field == "text" else self.form
                holder[field] = self.window(index).feed(holder[field])
            if choice.get("finish_reason") and index in self.windows:
                tail = self.windows.pop(index).finish()
                if tail and holder is not None:
                    holder[field] += tail
                elif tail:
                    tails.append(tail_choice(choice, index, tail))
        return [tail_chunk(chunk, tails), chunk] if tails else [chunk]

    def rest(self, template: dict[str, Any]) -> list[dict[str, Any]]:
        """The held tails of choices that never finished, as one chunk like `template` (none if nothing is held)."""
        tails = [tail_choice(self.form, index, text) for index, window in sorted(self.windows.items())
                 if (text := window.finish())]
        self.windows.clear()
        return [tail_chunk(template, tails)] if tails else []

    def window(self, index: int) -> OutputCheck:
        if index not in self.windows:
            self.windows[index] = self.new_check()
        return self.windows[index]


def text_field(choice: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Where a choice's text delta is: chat's `delta.content` or legacy completions' `text` (None if it has none)."""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return (delta, "content") if isinstance(delta.get("content"), str) else (None, "")
    return (choice, "text") if isinstance(choice.get("text"), str) else (None, "")


def tail_choice(like: dict[str, Any], index: int, text: str) -> dict[str, Any]:
    """A choice that carries only a held tail, in the form of `like` (chat delta or legacy text)."""
    if isinstance(like.get("delta"), dict) or "text" not in like:
        return {"index": index, "delta": {"content": text}, "finish_reason": None}
    return {"index": index, "text": text, "finish_reason": None, "logprobs": None}


def tail_chunk(like: dict[str, Any], choices: list[dict[str, Any]]) -> dict[str, Any]:
    """A chunk with `like`'s head fields (id, object, created, model) and these choices, no usage."""
    return {**{key: like[key] for key in HEAD_FIELDS if key in like}, "choices": choices}
