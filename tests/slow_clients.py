"""The probes and hostile clients of the load tests: one-shot requests, repeating probes, slow senders.

Everything is bounded: each loop has a deadline and each socket a timeout.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Self

PROBE_TIMEOUT_S = 5.0


def request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
    timeout: float = PROBE_TIMEOUT_S, source: str | None = None,
) -> int | None:
    """One request on a fresh connection; its status, or None if it failed or timed out."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        data = None if body is None else json.dumps(body).encode()
        sent = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


class Probes:
    """Threads that each repeat one request until stopped; records (status, seconds) per attempt."""

    def __init__(self, probes: list[Callable[[], int | None]], pause_s: float) -> None:
        self.results: list[tuple[int | None, float]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(probe, pause_s), daemon=True) for probe in probes]

    def _loop(self, probe: Callable[[], int | None], pause_s: float) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            status = probe()
            with self._lock:
                self.results.append((status, time.monotonic() - started))
            self._stop.wait(pause_s)

    def run_for(self, seconds: float) -> list[tuple[int | None, float]]:
        """Probe for `seconds`, then wait for the last attempts (each bounded by its timeout)."""
        for thread in self._threads:
            thread.start()
        time.sleep(seconds)
        self._stop.set()
        for thread in self._threads:
            thread.join(PROBE_TIMEOUT_S + 1)
        return self.results


def answered_ratio(results: list[tuple[int | None, float]]) -> float:
    """Share of probes answered 200 within the probe timeout."""
    return sum(1 for status, _ in results if status == 200) / max(len(results), 1)


def percentile(results: list[tuple[int | None, float]], share: float) -> float:
    """Latency at this share of all probes (a failed probe counts as infinitely slow)."""
    latencies = sorted(seconds if status == 200 else float("inf") for status, seconds in results)
    return latencies[min(int(share * len(latencies)), len(latencies) - 1)]


SLOW_HEADER = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Pad: "
SLOW_BODY = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100000\r\n\r\n")
# A whole request whose connection the server closes, then more bytes: the close has to linger.
CLOSE_THEN_TRICKLE = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


class SlowSenders:
    """`count` sockets that send `prefix`, then one byte every `interval_s`; a dropped one reconnects."""

    def __init__(self, port: int, prefix: bytes, count: int, interval_s: float = 2.0) -> None:
        self.port, self.prefix, self.count, self.interval_s = port, prefix, count, interval_s
        self.connects = 0
        self.dropped = 0
        self._sockets: list[socket.socket | None] = [None] * count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self._sockets:
            if sock is not None:
                sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for index in range(self.count):
                self._sockets[index] = self._trickle(self._sockets[index])
            self._stop.wait(self.interval_s)

    def _trickle(self, sock: socket.socket | None) -> socket.socket | None:
        """One more byte on the socket, or a fresh connection with the prefix if it was dropped."""
        try:
            if sock is not None and not answered(sock):
                sock.send(b"x")
                return sock
            if sock is not None:
                raise ConnectionAbortedError  # the server answered (408) or closed: reconnect
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            sock.sendall(self.prefix)
            self.connects += 1
            return sock
        except OSError:
            if sock is not None:
                sock.close()
                self.dropped += 1
            return None


def answered(sock: socket.socket) -> bool:
    """Whether the server sent something or closed (a slow sender expects nothing back)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True
