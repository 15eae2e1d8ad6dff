"""Streaming clients on raw asyncio sockets: back-to-back streams on one connection, and N at once.

Time to first byte (TTFB) is measured from sending the request to the arrival of the first body
chunk holding an SSE `data:` line; chunks are the `data:` events received (`[DONE]` not counted).
Every wait is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class StreamRequest:
    """One streamed POST: where it goes, its bytes, and the marker that proves the stream finished."""

    port: int
    path: str
    body: bytes
    headers: dict[str, str]
    done_marker: bytes

    def encode(self) -> bytes:
        lines = [f"POST {self.path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}",
                 "Content-Type: application/json", "Accept: text/event-stream",
                 f"Content-Length: {len(self.body)}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def stream_request(port: int, path: str, body: dict, headers: dict[str, str], done_marker: bytes) -> StreamRequest:
    """A StreamRequest from a JSON body."""
    return StreamRequest(port, path, json.dumps(body).encode(), headers, done_marker)


@dataclass(frozen=True)
class StreamSample:
    """One stream: finished properly or not, TTFB and total time (s), events received."""

    ok: bool
    ttfb_s: float | None
    total_s: float
    events: int
    error: str = ""


class Body:
    """Accumulates a response body and notes when the first SSE data arrived."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.parts: list[bytes] = []
        self.ttfb_s: float | None = None

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        if self.ttfb_s is None and b"data:" in data:
            self.ttfb_s = time.perf_counter() - self.started

    def bytes(self) -> bytes:
        return b"".join(self.parts)


async def read_response(reader: asyncio.StreamReader, body: Body) -> tuple[int, bool]:
    """Read one HTTP/1.1 response into `body`; returns (status, connection reusable)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body.add((await reader.readexactly(size + 2))[:size])
    elif "content-length" in headers:
        body.add(await reader.readexactly(int(headers["content-length"])))
    else:
        while data := await reader.read(65536):
            body.add(data)
        return status, False
    return status, headers.get("connection") != "close"


async def one_stream(request: StreamRequest, connection: tuple | None) -> tuple[StreamSample, tuple | None]:
    """Send one stream on `connection` (or a new one); returns the sample and the connection to reuse."""
    started = time.perf_counter()
    body = Body(started)
    try:
        reader, writer = connection or await asyncio.open_connection("127.0.0.1", request.port)
    except OSError as exc:
        return StreamSample(False, None, time.perf_counter() - started, 0, f"connect: {exc}"), None
    try:
        writer.write(request.encode())
        await writer.drain()
        status, reusable = await read_response(reader, body)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        writer.close()
        return StreamSample(False, body.ttfb_s, time.perf_counter() - started, 0, type(exc).__name__), None
    data = body.bytes()
    events = data.count(b"data:") - data.count(b"data: [DONE]")
    ok = status == 200 and request.done_marker in data
    sample = StreamSample(ok, body.ttfb_s, time.perf_counter() - started, events, "" if ok else f"status {status}")
    if not reusable:
        writer.close()
        return sample, None
    return sample, (reader, writer)


async def _series(request: StreamRequest, seconds: float, max_count: int, timeout_s: float) -> list[StreamSample]:
    samples: list[StreamSample] = []
    connection = None
    stop = time.monotonic() + seconds
    while time.monotonic() < stop and len(samples) < max_count:
        try:
            sample, connection = await asyncio.wait_for(one_stream(request, connection), timeout_s)
        except TimeoutError:
            sample, connection = StreamSample(False, None, timeout_s, 0, "timeout"), None
        samples.append(sample)
    if connection is not None:
        connection[1].close()
    return samples


def series(request: StreamRequest, seconds: float, max_count: int = 100_000, timeout_s: float = 30.0
           ) -> tuple[list[StreamSample], float]:
    """Streams back to back on one keep-alive connection for `seconds`; returns them and the wall time."""
    began = time.perf_counter()
    samples = asyncio.run(_series(request, seconds, max_count, timeout_s))
    return samples, time.perf_counter() - began


async def _concurrent(request: StreamRequest, count: int, timeout_s: float) -> list[StreamSample]:
    async def bounded() -> StreamSample:
        try:
            sample, connection = await asyncio.wait_for(one_stream(request, None), timeout_s)
        except TimeoutError:
            return StreamSample(False, None, timeout_s, 0, "timeout")
        if connection is not None:
            connection[1].close()
        return sample

    return list(await asyncio.gather(*(bounded() for _ in range(count))))


def concurrent(request: StreamRequest, count: int, timeout_s: float) -> tuple[list[StreamSample], float]:
    """`count` streams at once, each on its own connection, each bounded by `timeout_s`."""
    began = time.perf_counter()
    samples = asyncio.run(_concurrent(request, count, timeout_s))
    return samples, time.perf_counter() - began
