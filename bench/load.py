"""The load generator: C threads, each on its own keep-alive connection, timing every request."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field

REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Target:
    """One scenario's request: where it goes and what it sends."""

    name: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str]
    stream: bool = False
    host: str = "127.0.0.1"


def chat_target(name: str, port: int, path: str, model: str, key: str | None, stream: bool = False) -> Target:
    """A small chat completion for `model` (`key` None: no auth header, e.g. the bare upstream)."""
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
    if stream:
        body["stream"] = True
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    return Target(name, port, path, json.dumps(body).encode(), headers, stream)


@dataclass(frozen=True)
class Sample:
    """One request: total latency, time to first body byte (streams), and whether it succeeded."""

    latency_s: float
    ttfb_s: float | None
    ok: bool


@dataclass
class Block:
    """What one block of requests produced."""

    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0


def timed_request(conn: http.client.HTTPConnection, target: Target) -> Sample:
    """Send one request on an open connection and read the whole answer."""
    started = time.perf_counter()
    conn.request("POST", target.path, body=target.body, headers=target.headers)
    response = conn.getresponse()
    ttfb = None
    if target.stream:
        first = response.read1(65536)
        ttfb = time.perf_counter() - started
        data = first + response.read()
        ok = response.status == 200 and b"data: [DONE]" in data and b'"error"' not in data
    else:
        data = response.read()
        ok = response.status == 200 and b'"choices"' in data
    return Sample(time.perf_counter() - started, ttfb, ok)


def _worker(target: Target, count: int, start: threading.Barrier, deadline: float, out: list[Sample]) -> None:
    conn = http.client.HTTPConnection(target.host, target.port, timeout=REQUEST_TIMEOUT_S)
    try:
        try:
            conn.connect()  # outside the timed loop: every timed request runs on a warm connection
        except OSError:
            pass  # the first request reconnects, and records the failure if it fails again
        start.wait(REQUEST_TIMEOUT_S)
        for _ in range(count):
            if time.monotonic() > deadline:
                return
            try:
                out.append(timed_request(conn, target))
            except (OSError, http.client.HTTPException):
                out.append(Sample(0.0, None, False))
                conn.close()
                conn = http.client.HTTPConnection(target.host, target.port, timeout=REQUEST_TIMEOUT_S)
    finally:
        conn.close()


def shares(count: int, concurrency: int) -> list[int]:
    """Split `count` requests over `concurrency` workers as evenly as possible."""
    base, extra = divmod(count, concurrency)
    return [base + (1 if index < extra else 0) for index in range(concurrency) if base or index < extra]


def run_block(target: Target, count: int, concurrency: int, deadline: float) -> Block:
    """Run `count` requests at `concurrency` (all workers start together); stop at `deadline`."""
    counts = shares(count, concurrency)
    start = threading.Barrier(len(counts) + 1)
    outputs: list[list[Sample]] = [[] for _ in counts]
    threads = [
        threading.Thread(target=_worker, args=(target, n, start, deadline, out), daemon=True)
        for n, out in zip(counts, outputs, strict=True)
    ]
    for thread in threads:
        thread.start()
    start.wait(REQUEST_TIMEOUT_S)
    began = time.perf_counter()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT_S * (max(counts) + 1))
    block = Block(wall_s=time.perf_counter() - began)
    for out in outputs:
        block.samples.extend(out)
    return block
