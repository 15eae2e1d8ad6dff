"""The WSGI middleware: one record per HTTP request, filled as it runs, written out (metrics, access log, span) at its end.

A WSGI wrapper opens the record when a request arrives and closes it when the server closes the
response, after the last byte of a stream, so latency and the charge settled while streaming are
in it. The record is found through a context variable: the request's thread sets it, and a
stream's generator runs on that same thread after Flask's own request context is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from flask import Flask, Response, g, request

from gateway.observability import access_log, metrics, tracing
from gateway.observability.request_record import RequestRecord
from gateway.serving.trusted_proxies import client_of

CURRENT: ContextVar[RequestRecord | None] = ContextVar("gateway_request_record", default=None)
REFUSALS = {402: "insufficient_balance", 429: "rate_limited"}
WEBSOCKET_TAKEN_OVER = 101


def current() -> RequestRecord | None:
    """The record of the request this thread is answering, if any."""
    return CURRENT.get()


# -- what the rest of the gateway calls ------------------------------------------------------


def request_settled(model: str, provider: str | None, input_tokens: int, output_tokens: int, credits: float) -> None:
    """A meter settled (called by gateway.accounting.meter): tokens and the credits charged."""
    metrics.observe_charge(model, input_tokens, output_tokens, credits)
    record = current()
    if record is not None:
        record.model, record.provider = model, provider or record.provider
        record.input_tokens += input_tokens
        record.output_tokens += output_tokens
        record.cost += credits


def first_token(model: str) -> None:
    """A stream produced its first generated token (text, reasoning or a tool call)."""
    record = current()
    if record is None or record.first_token_s is not None or not record.streamed:
        return
    record.first_token_s = record.elapsed()
    metrics.observe_first_token(model, record.first_token_s)


def fallback_taken(from_model: str, to_model: str) -> None:
    """A request moved on from a failing model to its next one."""
    metrics.fallback_taken(from_model, to_model)
    record = current()
    if record is not None:
        record.fallbacks.append(from_model)


# -- the WSGI wrapper ------------------------------------------------------------------------


class ObservedApp:
    """Opens a record (and a server span) per request; closes it when the response is closed."""

    def __init__(self, app: Flask, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        address = client_of(self.app, environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"))
        record = RequestRecord(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
                               address, environ.get("HTTP_USER_AGENT", "")[:200])
        CURRENT.set(record)
        record.span = tracing.server_span(self.app, environ, record.method)

        def observed_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            record.status = int(status[:3])
            streamed = any(name.lower() == "content-type" and value.startswith("text/event-stream")
                           for name, value in headers)
            if streamed and not record.streamed:  # (start_response may be called again, with an error)
                metrics.stream_opened()
            elif record.streamed and not streamed:
                metrics.stream_closed()
            record.streamed = streamed
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        try:
            body = self.wsgi_app(environ, observed_start)
        except StopIteration:  # a WebSocket that took the connection over (gateway.api.responses_ws)
            record.status = WEBSOCKET_TAKEN_OVER
            self.finish(record)
            raise
        except BaseException:
            record.status = record.status or 500
            self.finish(record)
            raise
        return ObservedBody(body, record, self.finish)

    def finish(self, record: RequestRecord) -> None:
        """Write the record out: metrics, the access-log line, the span."""
        CURRENT.set(None)
        record.duration_s = record.elapsed()
        model = record.model or ""
        metrics.observe_request(record.route, record.method, record.status, model, record.duration_s)
        if record.streamed:
            metrics.stream_closed()
        if record.status in REFUSALS:
            metrics.refused(REFUSALS[record.status])
        access_log.of(self.app).write(record)
        tracing.end_server_span(record)


class ObservedBody:
    """The response body as the server iterates it: notes the first byte, finishes the record on close."""

    def __init__(self, body: Iterable[bytes], record: RequestRecord, finish: Callable[[RequestRecord], None]) -> None:
        self._body = body
        self._record = record
        self._finish = finish
        self._finished = False

    def __iter__(self) -> Iterator[bytes]:
        record = self._record
        for chunk in self._body:
            if chunk and record.first_byte_s is None:
                record.first_byte_s = record.elapsed()
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()  # Flask's close callbacks: a run's finish and its settlement come first
        finally:
            if not self._finished:
                self._finished = True
                self._finish(self._record)


def init_app(app: Flask) -> None:
    """Wrap the app; fill each record with what only Flask knows (route, request id, caller)."""
    app.wsgi_app = ObservedApp(app, app.wsgi_app)

    @app.before_request
    def _note_request_id() -> None:
        record = current()
        if record is not None:
            record.request_id = g.get("request_id", "")

    @app.after_request
    def _note_request(response: Response) -> Response:
        record = current()
        if record is not None:
            record.request_id = g.get("request_id", record.request_id)
            record.route = request.url_rule.rule if request.url_rule else "unmatched"
            caller = g.get("caller")
            if caller is not None:
                record.account_id, record.key_id = caller.account.id, caller.key.id
        return response
