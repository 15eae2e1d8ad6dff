"""Responses WebSocket mode: `response.create` text frames in, one JSON text frame per event out.

The upgrade (`GET /v1/responses`) is authenticated like any request; every turn re-checks the key.
A turn is admitted exactly like `POST /v1/responses` and rendered by the same event generator as
SSE (`responses_render.response_events`), so billing, rate limits, MCP tools, approvals, storage
and the run's one finish are shared; a client that leaves mid-turn ends it `client_disconnected`.

One turn at a time: frames that arrive meanwhile wait their turn. An error before a turn starts
(bad JSON, validation, 402, 429, an unknown previous response, an upstream 4xx rejection) is one
`{"type": "error", "status", "error": {"type", "code", "message", "param"}}` frame; the socket stays
open. The connection keeps its latest finished response's history in memory, so `store: false`
turns can continue with `previous_response_id`; a failed continuation evicts the id it continued.

Sockets come from simple-websocket (wsproto underneath), which runs on gunicorn's gthread workers
and on werkzeug's server: an open socket holds one of the worker's `[server] threads` for its whole
life, plus one reader thread of simple-websocket's own; `websocket_max_connections` caps them per
worker so sockets cannot starve HTTP requests, and an open socket counts as one stream of its key
and account (gateway.accounting.streams: `max_streams` of the key and account, the tenant share; 429 past them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import simple_websocket
from flask import Flask, Response, current_app, request
from wsproto.utilities import RemoteProtocolError

from gateway import services
from gateway.accounting import streams
from gateway.accounting.keys import cached_caller, current_caller, presented_key
from gateway.accounting.meter import refusals_recorded
from gateway.api import guarded, responses_render
from gateway.api.http import attribute
from gateway.config import Settings
from gateway.db import database, own_connection
from gateway.errors import GatewayError, InvalidRequest, ServiceUnavailable
from gateway.responses import admission, store
from gateway.responses.assembly import ResponseAssembly
from gateway.serving.body import parse_body

log = logging.getLogger(__name__)
SLOTS = "gateway.responses.websockets"
RESPONSE_CREATE = "response.create"
IMPLIED_FIELDS = ("stream", "stream_options")  # every WebSocket turn streams
FINISHED = ("completed", "incomplete")
UPGRADE_REQUIRED = 426
NORMAL_CLOSURE = 1000
CLOSE_WAIT_S = 1.0


class LimitReached(InvalidRequest):
    code = "websocket_connection_limit_reached"


class IdleTimeout(InvalidRequest):
    status = 408
    code = "websocket_idle_timeout"


class Slots:
    """Counts one worker's open sockets and refuses more than `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit, self.open = limit, 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self.open >= self.limit:
                raise ServiceUnavailable(f"This worker already holds {self.limit} WebSockets; retry later.")
            self.open += 1
        try:
            yield
        finally:
            with self._lock:
                self.open -= 1


def slots() -> Slots:
    """This worker's socket counter."""
    return current_app.extensions[SLOTS]


def init_app(app: Flask, settings: Settings) -> None:
    """Give the app its socket counter (`websocket_max_connections`, default half the threads)."""
    limit = settings.responses.websocket_max_connections or max(1, settings.server.threads // 2)
    app.extensions[SLOTS] = Slots(limit)


class LockedSocket:
    """The raw socket with serialised, whole writes: simple-websocket's reader thread answers pings on it too."""

    def __init__(self, sock: Any) -> None:
        self._sock, self._lock = sock, threading.Lock()

    def send(self, data: bytes) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def accept(settings: Settings) -> simple_websocket.Server:
    """Complete the handshake on this request's socket (werkzeug's or gunicorn's)."""
    environ = dict(request.environ)
    for key in ("werkzeug.socket", "gunicorn.socket"):
        if key in environ:
            environ[key] = LockedSocket(environ[key])
            break
    try:
        return simple_websocket.Server(
            environ,
            ping_interval=settings.responses.websocket_ping_interval_s,
            max_message_size=settings.server.max_body_bytes,
        )
    except (simple_websocket.ConnectionError, RemoteProtocolError):
        raise InvalidRequest("Invalid WebSocket handshake.", code="invalid_websocket_handshake") from None


def serve(upgrade_id: str, profile_servers: Sequence[str] = ()) -> Response:
    """Run the socket until it closes; the view's answer once it has (the connection is taken over).

    On a profile route, `profile_servers` are offered to every turn as built-in `mcp` tools.
    """
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise InvalidRequest("GET /v1/responses is the Responses WebSocket endpoint: send a WebSocket "
                             "upgrade, or POST to create a response.", status=UPGRADE_REQUIRED,
                             code="websocket_upgrade_required")
    settings = services.settings()
    with slots().held(), held_stream():
        socket = accept(settings)
        database.close()  # no pooled connection is held while the socket waits; each turn takes its own
        try:
            Session(socket, presented_key(request.headers) or "", upgrade_id, settings, tuple(profile_servers)).run()
        except (simple_websocket.ConnectionClosed, OSError):
            pass  # the client left, or stopped reading for `[server] send_timeout_s`: its turn is settled
        finally:
            with contextlib.suppress(Exception):
                socket.close(NORMAL_CLOSURE)
            socket.thread.join(CLOSE_WAIT_S)  # the reader thread ends on the client's close frame
    return taken_over(socket)


@contextlib.contextmanager
def held_stream() -> Iterator[None]:
    """Count the open socket as one stream of its key and account (gateway.accounting.streams, else 429)."""
    caller = current_caller()
    release = streams.acquire_stream(caller)
    try:
        yield
    finally:
        release()


def taken_over(socket: simple_websocket.Server) -> Response:
    """What the WSGI server gets back: nothing more to write on gunicorn, an unused answer on werkzeug."""

    class TakenOver(Response):
        def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
            if socket.mode == "gunicorn":
                raise StopIteration  # gunicorn's gthread worker closes the connection without writing
            return super().__call__(environ, start_response)

    return TakenOver()


@dataclass
class Session:
    """One socket's turns, its deadlines and its in-memory chain (the latest finished response)."""

    socket: simple_websocket.Server
    secret: str
    upgrade_id: str
    settings: Settings
    profile_servers: tuple[str, ...] = ()
    opened_at: float = field(default_factory=time.monotonic)
    turns: int = 0
    latest: dict[str, store.History] = field(default_factory=dict)

    def run(self) -> None:
        """Serve turns until the client leaves, idles too long, or the connection's age runs out."""
        limits = self.settings.responses
        closes_at = self.opened_at + limits.websocket_max_age_s
        while True:
            wait = min(limits.websocket_idle_timeout_s, closes_at - time.monotonic())
            message = self.socket.receive(timeout=max(wait, 0))
            if message is None or time.monotonic() >= closes_at:
                self.refuse_more(closes_at)
                return
            with own_connection():
                self.turn(message)

    def refuse_more(self, closes_at: float) -> None:
        """The connection's last frame: its age limit or its idle timeout."""
        if time.monotonic() >= closes_at:
            minutes = self.settings.responses.websocket_max_age_s / 60
            self.send_error(LimitReached(f"Responses WebSocket connection limit reached ({minutes:g} minutes); "
                                         "open a new connection to continue."))
        else:
            self.send_error(IdleTimeout("No response.create arrived in time; the connection is closed."))

    def turn(self, message: str | bytes) -> None:
        """One `response.create`: admitted like POST /v1/responses, its events sent as frames."""
        self.turns += 1
        previous = None
        try:
            body = create_body(message)
            attribute(body)  # this turn's tags and end user, on the connection's record
            previous = body.get("previous_response_id") if isinstance(body.get("previous_response_id"), str) else None
            caller = cached_caller(self.secret)
            request_id = f"{self.upgrade_id[:48]}.{self.turns}"
            body = guarded.checked_input("responses", body, body.get("model"), caller, request_id)
            with refusals_recorded(caller, "responses", body.get("model"), request_id):
                response = admission.admit_response(body, caller, request_id, self.latest, self.profile_servers)
            events = responses_render.started(response)
        except GatewayError as error:
            self.forget(previous)
            self.send_error(error)
            return
        except Exception:
            log.exception("WebSocket turn %s.%d could not start", self.upgrade_id, self.turns)
            self.forget(previous)
            self.send_error(GatewayError("Internal error while starting the response."))
            return
        deadline = time.monotonic() + self.settings.responses.websocket_turn_timeout_s
        self.send_events(responses_render.response_events(response, events, deadline))
        self.remember(response, previous)

    def send_events(self, events: Iterator[dict[str, Any] | None]) -> None:
        """Send each event as a text frame; at a silence, notice a client that left."""
        with contextlib.closing(events):
            for event in events:
                if event is not None:
                    self.socket.send(json.dumps(event, separators=(",", ":")))
                elif not self.socket.connected:
                    raise simple_websocket.ConnectionClosed()

    def remember(self, response: ResponseAssembly, previous: str | None) -> None:
        """Keep a finished response's history; a failed continuation evicts what it continued."""
        outcome = response.run.outcome
        if outcome is not None and outcome.status in FINISHED:
            self.latest = {response.response_id: response.chain()}
        else:
            self.forget(previous)

    def forget(self, response_id: str | None) -> None:
        self.latest.pop(response_id or "", None)

    def send_error(self, error: GatewayError) -> None:
        self.socket.send(json.dumps(error_envelope(error), separators=(",", ":")))


def create_body(message: str | bytes) -> dict[str, Any]:
    """A `response.create` frame as a POST /v1/responses body (streaming implied, background refused).

    The frame passes the same body gate as an HTTP body (gateway.serving.body): strict UTF-8, depth,
    no NaN or Infinity, 64-bit integers, no lone surrogates.
    """
    raw = message.encode("utf-8", "surrogatepass") if isinstance(message, str) else message
    body = parse_body(raw)  # a text frame's lone surrogate stays one, and the gate refuses it
    kind = body.pop("type", None)
    if kind != RESPONSE_CREATE:
        raise InvalidRequest(f"Unsupported message type {kind!r}; send {RESPONSE_CREATE!r}.", param="type",
                             code="unsupported_event_type")
    if body.pop("background", None):
        raise InvalidRequest("Background responses are not available over WebSocket; POST them instead.",
                             param="background")
    for name in IMPLIED_FIELDS:
        body.pop(name, None)
    return body


def error_envelope(error: GatewayError) -> dict[str, Any]:
    """The WebSocket error frame: `status` plus the error's `type`, `code`, `message` and `param`.

    OpenAI's fields on both base paths: the protocol wants `code` as a string.
    """
    payload = error.body()["error"]
    payload["code"] = payload["code"] or error.type
    return {"type": "error", "status": error.status, "error": payload}
