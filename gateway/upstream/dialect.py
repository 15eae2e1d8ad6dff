"""How each base path's dialect frames a stream's keep-alives and mid-stream errors.

OpenAI clients (`/v1`) get `: keep-alive` comments and a final `data: {"error": {...}}` event;
OpenRouter clients (`/api/v1`) get OpenRouter's `: OPENROUTER PROCESSING` comments and an error
chunk: a `chat.completion.chunk` with a top-level `error` and `finish_reason: "error"`.
"""

from __future__ import annotations

from collections.abc import Callable
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
        return sse.encode(STREAM_ERRORS[self.name](error, last_chunk or {}))


def openai_stream_error(error: ErrorFields, last_chunk: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's last event: the error body itself."""
    return render_error(error, OPENAI)


def openrouter_stream_error(error: ErrorFields, last_chunk: dict[str, Any]) -> dict[str, Any]:
    """OpenRouter's last event: a chunk (the stream's id and model) with a top-level `error`, finish `error`."""
    head = {key: last_chunk[key] for key in CHUNK_FIELDS if key in last_chunk}
    choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
    return {"object": "chat.completion.chunk", **head, **render_error(error, OPENROUTER), "choices": [choice]}


StreamError = Callable[[ErrorFields, dict[str, Any]], dict[str, Any]]
STREAM_ERRORS: dict[str, StreamError] = {OPENAI: openai_stream_error, OPENROUTER: openrouter_stream_error}
# a new dialect adds its keep-alive comment and its last event here


OPENAI_STREAMS = StreamDialect(OPENAI)
