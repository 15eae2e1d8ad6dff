"""An upstream on a raw loopback socket, for faults an HTTP server library will not produce.

Each connection reads one request, then plays the scripted reply: bytes written in order, with
an optional pause before each, and then either a clean close or a TCP reset (SO_LINGER 0).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Self


@dataclass
class RawReply:
    """What a connection answers: (seconds to wait first, bytes) pieces, then a close or a reset."""

    pieces: list[tuple[float, bytes]]
    reset: bool = False


def json_head(length: int, status: str = "200 OK") -> bytes:
    """Response headers of a JSON body of `length` bytes."""
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
            "Connection: close\r\n\r\n").encode()


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
SSE_END = b"0\r\n\r\n"
READ_S = 0.2  # a pause before a reset, so the reader has taken what was sent (Linux drops unread data on RST)


def sse_event(data: str) -> bytes:
    """One `data:` event as one HTTP chunk."""
    frame = f"data: {data}\n\n".encode()
    return f"{len(frame):x}\r\n".encode() + frame + b"\r\n"


def raw_body(body: bytes) -> RawReply:
    """A 200 `application/json` answer whose body is exactly these bytes."""
    return RawReply([(0, json_head(len(body)) + body)])


def sse_then_reset(events: list[str], pause_s: float = 0.05) -> RawReply:
    """A chunked SSE answer with these `data:` payloads, then a reset instead of an end."""
    pieces = [(0.0, SSE_HEAD)] + [(pause_s, sse_event(data)) for data in events]
    return RawReply([*pieces, (READ_S, b"")], reset=True)


@dataclass
class RawUpstream:
    """Serves `reply` to every connection on 127.0.0.1; counts the requests it read."""

    reply: RawReply = field(default_factory=lambda: raw_body(b"{}"))
    requests: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        reply = self.reply
        with connection:
            connection.settimeout(5)
            if not read_request(connection):
                return
            self.requests += 1
            try:
                for pause, data in reply.pieces:
                    time.sleep(pause)
                    connection.sendall(data)
            except OSError:
                return
            if reply.reset:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def read_request(connection: socket.socket) -> bool:
    """Read one request's head and Content-Length body; False if the client went away first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True
