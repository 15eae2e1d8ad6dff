"""How each base path's dialect frames a stream's keep-alives and mid-stream errors.

OpenAI clients (`/v1`) get `: keep-alive` comments and a final `data: {"error": {...}}` event;
OpenRouter clients (`/api/v1`) get OpenRouter's `: OPENROUTER PROCESSING` comments and an error
chunk: a `chat.completion.chunk` with a top-level `error` and `finish_reason: "error"`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import OPENAI, OPENROUTER, ErrorFields, render_error
from gateway.upstream import sse

KEEPALIVE_COMMENTS = {OPENAI: "keep-alive", OPENROUTER: "OPENROUTER PROCESSING"}
CHUNK_FIELDS = ("id", "object", "created", "model")


@dataclass(frozen=True)
class StreamDialect:
    """One dialect's stream framing."""

    name: str = OPENAI

    def keepalive(self) -> bytes:
        """The comment sent during silences."""
        return sse.comment(KEEPALIVE_COMMENTS[self.name])

    def error_event(self, error: ErrorFields, last_chunk: dict[str, Any] | None = None) -> bytes:
        """The event that ends a stream with this error or run failure (`last_chunk` gives OpenRouter's id and model)."""
        if self.name != OPENROUTER:
            return sse.encode(render_error(error, self.name))
        head = {key: (last_chunk or {})[key] for key in CHUNK_FIELDS if key in (last_chunk or {})}
        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        return sse.encode({"object": "chat.completion.chunk", **head, **render_error(error, OPENROUTER),
                           "choices": [choice]})


OPENAI_STREAMS = StreamDialect(OPENAI)
