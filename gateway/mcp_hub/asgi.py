"""Serve one WSGI request with an ASGI app driven on the worker's MCP bridge loop, streaming its answer back.

The request thread builds the ASGI scope, submits the app's coroutine to the bridge and
waits (bounded) for the response start; the body is a generator that hands each
`http.response.body` message to the WSGI server as it arrives, so nothing is buffered.
Closing the body early (the client left) cancels the ASGI task.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import GatewayError, UpstreamTimeout
from gateway.mcp.bridge import McpBridge

log = logging.getLogger(__name__)

AsgiApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
                   Awaitable[None]]
_DONE = object()
HIDDEN_HEADERS = frozenset({"authorization", "x-api-key", "cookie"})  # consumed by the view: never handed on


@dataclass
class AsgiAnswer:
    """The ASGI app's response: status, headers, and the body as it streams."""

    status: int
    headers: list[tuple[str, str]]
    body: Iterator[bytes]


def http_scope(environ: Mapping[str, Any], path: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """An ASGI HTTP scope for a WSGI request; credentials are left out, `extra` entries added."""
    headers = [(name[5:].replace("_", "-").lower(), value) for name, value in environ.items()
               if name.startswith("HTTP_")]
    for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(name):
            headers.append((name.replace("_", "-").lower(), environ[name]))
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": environ.get("REQUEST_METHOD", "GET"), "scheme": environ.get("wsgi.url_scheme", "http"),
        "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "headers": [(name.encode("latin-1"), str(value).encode("latin-1")) for name, value in headers
                    if name not in HIDDEN_HEADERS],
        "client": (environ.get("REMOTE_ADDR") or "", 0),
        "server": (environ.get("SERVER_NAME", ""), int(environ.get("SERVER_PORT") or 0)),
        **extra,
    }


def serve(bridge: McpBridge, app: AsgiApp, scope: dict[str, Any], body: bytes, timeout: float) -> AsgiAnswer:
    """Run `app` for one request on the bridge; 504 when it starts no response within `timeout` seconds."""
    messages: queue.SimpleQueue[Any] = queue.SimpleQueue()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no more body; a disconnect arrives as the task's cancellation
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.put(message)

    future = bridge.submit(app(scope, receive, send))
    future.add_done_callback(lambda _: messages.put(_DONE))
    start = _next_message(messages, timeout)
    if start is None or start is _DONE or start.get("type") != "http.response.start":
        future.cancel()
        if start is None:
            raise UpstreamTimeout(f"The MCP hub did not answer within {timeout:g}s.")
        _raise_failure(future)
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in start.get("headers", [])]
    return AsgiAnswer(start["status"], headers, _body(messages, future, timeout))


def _next_message(messages: queue.SimpleQueue[Any], timeout: float) -> Any:
    """The next message from the app, or None after `timeout` seconds."""
    try:
        return messages.get(timeout=timeout)
    except queue.Empty:
        return None


def _body(messages: queue.SimpleQueue[Any], future: Any, timeout: float) -> Iterator[bytes]:
    """The response body, chunk by chunk; at most `timeout` seconds of silence; cancels the app when closed."""
    try:
        while True:
            message = _next_message(messages, timeout)
            if message is None or message is _DONE:
                return
            if message.get("type") == "http.response.body":
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    return
    finally:
        future.cancel()


def _raise_failure(future: Any) -> None:
    """The app ended without a response: its failure, logged, as a 500 without details."""
    try:
        error = None if future.cancelled() else future.exception(timeout=0)
    except Exception as exc:  # noqa: BLE001 - still running or cancelled: nothing more to report
        error = exc
    if isinstance(error, GatewayError):
        raise error
    log.error("MCP hub request failed without a response", exc_info=error)
    raise GatewayError("Internal server error in the MCP hub.")
