"""The one reader of an upstream completions stream: parsed chunks in order, typed errors when broken.

The plain relay and the tool loop both read upstream SSE through `read_chunks`, so the rules are
the same everywhere: `[DONE]` ends the stream, an `error` event or a chunk that is not a JSON
object raises UpstreamStreamBroken, and so does a stream that ends before any choice finished.
Silences come through as None, so callers can send keep-alives.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from gateway.errors import UpstreamStreamBroken
from gateway.upstream.sse import SseEvent


def read_chunks(events: Iterable[SseEvent | None]) -> Iterator[dict[str, Any] | None]:
    """Chunks of one upstream stream (None for a silence); raises UpstreamStreamBroken."""
    finished = False
    for event in events:
        if event is None:
            yield None
            continue
        if event.data.strip() == "[DONE]":
            break
        chunk = parse_chunk(event.data)
        finished = finished or any(choice.get("finish_reason") for choice in chunk.get("choices") or [])
        yield chunk
    if not finished:
        raise UpstreamStreamBroken("Upstream closed the stream before it finished.")


def parse_chunk(data: str) -> dict[str, Any]:
    """One event's JSON object; an upstream error event or malformed data raises."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise UpstreamStreamBroken("Upstream sent a malformed stream event.") from None
    if not isinstance(chunk, dict):
        raise UpstreamStreamBroken("Upstream sent a stream event that is not a JSON object.")
    if "error" in chunk:
        raise UpstreamStreamBroken(f"Upstream failed mid-stream: {error_message(chunk['error'])}")
    return chunk


def error_message(error: Any) -> str:
    """The message of an upstream error object (or whatever it sent instead)."""
    return str(error.get("message") if isinstance(error, dict) else error)
