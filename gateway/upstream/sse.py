"""Pure Server-Sent Events framing and incremental parsing (no Flask)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class SseEvent:
    """One parsed event: its `event:` name (or None) and its joined `data:` lines."""

    data: str
    event: str | None = None


def encode(data: Any, event: str | None = None) -> bytes:
    """Frame one event with `\\n` line endings; dicts become compact JSON."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    body = "".join(f"data: {line}\n" for line in payload.split("\n"))
    return (head + body + "\n").encode()


def comment(text: str = "keep-alive") -> bytes:
    """An SSE comment line; clients ignore it, proxies see traffic."""
    return f": {text}\n\n".encode()


class SseDecoder:
    """Feed bytes as they arrive; get back the complete events."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event: str | None = None

    def feed(self, chunk: bytes) -> Iterator[SseEvent]:
        """Yield every event completed by `chunk`."""
        self._buffer += chunk
        while True:
            line, newline, rest = self._buffer.partition(b"\n")
            if not newline:
                return
            self._buffer = rest
            event = self._line(line.rstrip(b"\r").decode("utf-8", "replace"))
            if event is not None:
                yield event

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            event = SseEvent("\n".join(self._data), self._event)
            self._data, self._event = [], None
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        return None
