"""Loopback OpenAI-compatible upstreams for the routing tests, steered while the gateway sends them traffic.

A `RoutingFake` answers POST /v1/chat/completions (JSON, or SSE ending with a usage chunk when
`stream_options.include_usage` asks for it) and GET /v1/models, always with the same token counts
(PROMPT_TOKENS, COMPLETION_TOKENS), so a test can check money to the micro-credit. From the test:
`slow(seconds)` delays the first byte, `fail(status, retry_after, count)` answers errors,
`break_stream_after_first_chunk()` cuts streams short, `stop()` kills the listener and every open
connection (a crash, seen by the gateway mid-request) and `start()` serves again on the same port.
It counts the chat requests it received and answered, and the most it had in flight at once.

`routing_config` writes a gateway config with one model, ROUTED_MODEL, over several fakes: one
provider and one deployment per fake, both named after the fake (so the answer's `provider` field
and the usage row's `deployment` column name the fake that answered).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Self

from gateway.config import ModelSettings, merge
from tests.fake_upstream import FakeServer
from tests.live_gateway import toml_text, toml_value

__all__ = ["COMPLETION_TOKENS", "INPUT_PRICE", "OUTPUT_PRICE", "PROMPT_TOKENS", "ROUTED_MODEL", "RoutingFake",
           "routed_prices", "routing_config", "routing_fakes"]

PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
ROUTED_MODEL = "routed-model"
UPSTREAM_MODEL = "routed-upstream"
INPUT_PRICE = 100  # credits per million input tokens of ROUTED_MODEL (micro-credits per token)
OUTPUT_PRICE = 1000  # credits per million output tokens
STREAM_PIECES = ("Hello", " from", " a", " fake")


@dataclass
class Failure:
    """What the next chat requests get instead of an answer: `remaining` None means until cleared."""

    status: int
    retry_after: float | None
    remaining: int | None


def completion_body(fake: str, model: str) -> dict[str, Any]:
    """A whole chat.completion naming the fake in its text."""
    return {
        "id": f"chatcmpl-{fake}", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answered by {fake}"},
                     "finish_reason": "stop"}],
        "usage": usage(),
    }


def usage() -> dict[str, int]:
    """The fixed usage of every answer."""
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}


def stream_chunks(fake: str, model: str, include_usage: bool) -> list[dict[str, Any]]:
    """The chat.completion.chunk objects of one streamed answer, the usage-only chunk last when asked for."""
    base = {"id": f"chatcmpl-{fake}", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": STREAM_PIECES[0]},
                                    "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
               for piece in STREAM_PIECES[1:]]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        chunks.append({**base, "choices": [], "usage": usage()})
    return chunks


def error_body(status: int) -> dict[str, Any]:
    """An OpenAI-shaped error body for a status."""
    kind = "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": f"fake upstream answered {status}", "type": kind, "param": None, "code": None}}


class TrackingServer(FakeServer):
    """A FakeServer that keeps its open connections, so stopping it can cut them like a crash would."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Reset every open connection (a request in flight sees its connection drop)."""
        with self.connections_lock:
            open_now, self.connections = list(self.connections), set()
        for connection in open_now:
            try:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close: reset
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:  # it closed meanwhile
                pass


class RoutingFake:
    """One fake upstream on a fixed loopback port (chosen at the first start, kept across restarts)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.received = 0  # chat requests that reached it
        self.answered = 0  # chat requests it answered 200 (a broken stream counts: it answered before breaking)
        self.in_flight = 0
        self.max_in_flight = 0
        self.models_requests = 0  # GET /v1/models (active health checks)
        self.bodies: list[dict[str, Any]] = []  # chat request bodies, in arrival order
        self._delay_s = 0.0
        self._failure: Failure | None = None
        self._breaks: int | None = 0  # streams still to cut after their first chunk (None: every one)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server: TrackingServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        """Listen (again) on its port and serve until stopped."""
        assert self._server is None, f"fake {self.name} is already running"
        self._stopped.clear()
        self._server = TrackingServer(("127.0.0.1", self.port), self._handler_class())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                        name=f"routing-fake-{self.name}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a crash: refuse new connections and drop the open ones, requests in flight included."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopped.set()  # wakes a handler waiting out a delay: it sends nothing
        server.shutdown()
        server.server_close()
        server.cut_connections()

    def slow(self, seconds: float) -> None:
        """Wait this long before the first byte of each chat answer (0: answer at once)."""
        self._delay_s = seconds

    def fail(self, status: int, retry_after: float | None = None, count: int | None = None) -> None:
        """Answer chat requests with `status` (and Retry-After when given): the next `count`, or all until clear()."""
        with self._lock:
            self._failure = Failure(status, retry_after, count)

    def break_stream_after_first_chunk(self, count: int | None = None) -> None:
        """Cut the next `count` streams (None: every stream until clear()) right after their first content chunk."""
        with self._lock:
            self._breaks = count

    def clear(self) -> None:
        """Back to normal: no failure, no delay, no broken streams."""
        with self._lock:
            self._failure, self._breaks, self._delay_s = None, 0, 0.0

    def reset_counts(self) -> None:
        """Zero the request counters (between the phases of a test)."""
        with self._lock:
            self.received = self.answered = self.max_in_flight = self.models_requests = 0
            self.bodies = []

    def _begin(self, body: dict[str, Any]) -> tuple[Failure | None, bool]:
        """Count an arriving chat request; the failure it gets, if any, and whether its stream breaks."""
        with self._lock:
            self.received += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.bodies.append(body)
            failure = self._failure
            if failure is not None and failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failure = None
            breaks = bool(body.get("stream")) and failure is None and self._breaks != 0
            if breaks and self._breaks is not None:
                self._breaks -= 1
        return failure, breaks

    def _end(self, answered: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            self.answered += answered

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if not self.path.rstrip("/").endswith("/models"):
                    return self._json(404, error_body(404))
                with fake._lock:
                    fake.models_requests += 1
                self._json(200, {"object": "list", "data": [{"id": UPSTREAM_MODEL, "object": "model",
                                                             "created": 1700000000, "owned_by": fake.name}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._json(404, error_body(404))
                failure, breaks = fake._begin(body)
                answered = False
                try:
                    if fake._stopped.wait(fake._delay_s) if fake._delay_s else fake._stopped.is_set():
                        self.close_connection = True
                        return
                    answered = self._answer(body, failure, breaks)
                except OSError:  # the gateway went away, or stop() cut the connection
                    self.close_connection = True
                finally:
                    fake._end(answered)

            def _answer(self, body: dict[str, Any], failure: Failure | None, breaks: bool) -> bool:
                if failure is not None:
                    retry = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
                    self._json(failure.status, error_body(failure.status), retry)
                    return False
                model = body.get("model") or UPSTREAM_MODEL
                if not body.get("stream"):
                    self._json(200, completion_body(fake.name, model))
                    return True
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._stream(stream_chunks(fake.name, model, include_usage), breaks)
                return True

            def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, chunks: list[dict[str, Any]], breaks: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                frames = [json.dumps(chunk) for chunk in chunks] + ["[DONE]"]
                for index, frame in enumerate(frames):
                    self._chunk(f"data: {frame}\n\n".encode())
                    if breaks and index == 0:
                        self.connection.shutdown(socket.SHUT_RDWR)  # no terminating chunk: a broken stream
                        return
                self._chunk(b"")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return Handler


def routing_fakes(count: int = 3) -> list[RoutingFake]:
    """`count` started fakes named a, b, c, ... (the caller stops them)."""
    return [RoutingFake(chr(ord("a") + index)).start() for index in range(count)]


def routed_prices() -> dict[str, ModelSettings]:
    """ROUTED_MODEL's price, as tests.faults.books.audit takes prices."""
    return {ROUTED_MODEL: ModelSettings(input_price_per_mtok=INPUT_PRICE, output_price_per_mtok=OUTPUT_PRICE)}


def routing_config(database_url: str, fakes: Sequence[RoutingFake], weights: Sequence[float] | None = None,
                   strategy: str = "weighted", retries: int = 2, *, deployments: Sequence[dict[str, Any]] = (),
                   tables: dict[str, Any] | None = None) -> str:
    """A gateway config (TOML text): ROUTED_MODEL over one deployment per fake, priced INPUT/OUTPUT_PRICE.

    `weights` go to the deployments in the fakes' order (default: 1 each); `deployments` adds settings
    per deployment (priority, rpm, timeout_s, ...) in the same order; `tables` deep-merges over the
    other tables (e.g. {"routing": {"cooldown_s": 2}}, {"limits": {"backend": "redis", "url": ...}}).
    Keys are limited to a million requests a minute, so only the routing under test refuses anything.
    """
    weights = list(weights) if weights is not None else [1.0] * len(fakes)
    assert len(weights) == len(fakes), "one weight per fake"
    base: dict[str, Any] = {
        "database": {"url": database_url},
        "limits": {"rpm": 1_000_000, "tpm": 1_000_000_000},
        "providers": {fake.name: {"base_url": fake.base_url, "timeout_s": 10, "connect_timeout_s": 2}
                      for fake in fakes},
        "models": {ROUTED_MODEL: {"routing": strategy, "retries": retries, "input_price_per_mtok": INPUT_PRICE,
                                  "output_price_per_mtok": OUTPUT_PRICE}},
    }
    text = toml_text(merge(base, tables or {}))
    for index, (fake, weight) in enumerate(zip(fakes, weights, strict=True)):
        entry = {"provider": fake.name, "upstream_model": UPSTREAM_MODEL, "name": fake.name, "weight": weight,
                 **(deployments[index] if index < len(deployments) else {})}
        text += f"[[models.{json.dumps(ROUTED_MODEL)}.deployments]]\n"
        text += "".join(f"{key} = {toml_value(value)}\n" for key, value in entry.items())
    return text
