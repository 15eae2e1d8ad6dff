"""The loopback HTTP server under the native-provider fakes: scripted JSON and SSE replies, every request recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Self

from tests.fake_upstream import FakeServer


@dataclass
class Json:
    """Answer with one JSON body."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Events:
    """Answer with SSE: (event name or None, data) pairs, sent in order."""

    events: list[tuple[str | None, Any]]


@dataclass
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str | None:
        """A header, whatever its case."""
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), None)


Reply = Json | Events


class ProviderFake:
    """Runs on 127.0.0.1; `script` replies first, in order, then `answer(request)` decides."""

    def __init__(self, api_key: str = "test-key") -> None:
        self.api_key = api_key
        self.requests: list[Received] = []
        self.script: list[Reply] = []
        self._lock = threading.Lock()
        self._server = FakeServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        """The API root, as the provider's SDK takes it."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        """Serve on a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, request: Received) -> Reply:
        """The reply when nothing is scripted (each fake overrides it)."""
        raise NotImplementedError

    def reply_to(self, request: Received) -> Reply:
        """The next scripted reply, else the fake's own answer."""
        with self._lock:
            self.requests.append(request)
            scripted = self.script.pop(0) if self.script else None
        return scripted if scripted is not None else self.answer(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake: ProviderFake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = None
                self._send(fake.reply_to(Received("POST", self.path, dict(self.headers), body)))

            def _send(self, reply: Reply) -> None:
                if isinstance(reply, Json):
                    data = json.dumps(reply.body).encode()
                    self.send_response(reply.status)
                    for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for name, data in reply.events:
                    head = f"event: {name}\n" if name else ""
                    payload = data if isinstance(data, str) else json.dumps(data)
                    self.wfile.write(f"{head}data: {payload}\n\n".encode())
                    self.wfile.flush()
                self.close_connection = True

        return Handler


def first_error(checks: list[tuple[bool, Callable[[], Reply]]]) -> Reply | None:
    """The reply of the first failed check (None when every check passed)."""
    return next((make() for failed, make in checks if failed), None)
