"""How to reach an MCP server: stdio and HTTP transport options, stream-end watching, error text."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
import httpx2
from mcp import StdioServerParameters
from mcp.client import Transport
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

TransportFactory = Callable[[], Transport]
HttpClientFactory = Callable[[], httpx2.AsyncClient]
Streams = tuple[Any, Any]  # the SDK's (read stream, write stream) pair


def http_timeout(timeout_s: float, read_timeout_s: float) -> httpx2.Timeout:
    """MCP HTTP timeouts: `timeout_s` to connect, write and get a pooled connection; reads wait longer."""
    # A server may hold a response stream open between events, hence the long read timeout.
    return httpx2.Timeout(timeout_s, read=max(timeout_s, read_timeout_s))


DEFAULT_HTTP_TIMEOUT = http_timeout(30.0, 300.0)  # the `[mcp]` defaults, for callers without settings


@dataclass(frozen=True)
class TransportOption:
    """One way to reach a server; a connection tries its options in order."""

    kind: str  # "stdio", "streamable_http" or "sse"
    open: TransportFactory


def stdio_transports(
    command: str, args: Sequence[str], env: Mapping[str, str], cwd: str | None
) -> tuple[TransportOption, ...]:
    """Launch `command` as a subprocess and speak MCP over its stdin/stdout."""
    params = StdioServerParameters(command=command, args=list(args), env=dict(env) or None, cwd=cwd)
    return (TransportOption("stdio", lambda: stdio_client(params)),)


def http_transports(
    url: str,
    headers: Mapping[str, str],
    client_factory: HttpClientFactory | None = None,
    timeout: httpx2.Timeout = DEFAULT_HTTP_TIMEOUT,
) -> tuple[TransportOption, ...]:
    """Streamable HTTP at `url`, then legacy SSE if that fails; `headers` and `timeout` apply without a factory."""
    new_client = functools.partial(_new_http_client, headers, timeout, client_factory)
    return (
        TransportOption("streamable_http", lambda: _streamable_http(url, new_client)),
        TransportOption("sse", lambda: _sse(url, new_client)),
    )


@asynccontextmanager
async def _streamable_http(
    url: str, new_client: Callable[[], Awaitable[httpx2.AsyncClient]]
) -> AsyncIterator[Streams]:
    """Streamable HTTP over a client this function owns (the SDK leaves a given one open)."""
    client = await new_client()
    async with client, streamable_http_client(url, http_client=client) as streams:
        yield streams


@asynccontextmanager
async def _sse(
    url: str, new_client: Callable[[], Awaitable[httpx2.AsyncClient]]
) -> AsyncIterator[Streams]:
    """Legacy HTTP+SSE; the SDK enters and closes the client it gets from the factory."""
    client = await new_client()
    async with sse_client(url, httpx_client_factory=lambda **_: client) as streams:
        yield streams


async def _new_http_client(
    headers: Mapping[str, str], timeout: httpx2.Timeout, client_factory: HttpClientFactory | None
) -> httpx2.AsyncClient:
    """A client sending `headers`, or the factory's own client (it owns headers, timeouts and policy)."""
    if client_factory is None:
        return httpx2.AsyncClient(headers=dict(headers), timeout=timeout)
    # Off the loop: building a client may load TLS certificates from disk.
    return await asyncio.get_running_loop().run_in_executor(None, client_factory)


def root_error(exc: BaseException) -> BaseException:
    """The first leaf of (nested) task-group exception groups, or `exc` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe_error(exc: BaseException) -> str:
    """A one-line description of an exception, unwrapping task-group exception groups."""
    exc = root_error(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@asynccontextmanager
async def watch_end(open_transport: TransportFactory, on_end: Callable[[], None]) -> AsyncIterator[Streams]:
    """Wrap a transport so the end of its read stream is reported to `on_end`."""
    async with open_transport() as (read_stream, write_stream):
        yield _EndWatchingStream(read_stream, on_end), write_stream


class _EndWatchingStream:
    """A read stream that calls `on_end` once when the underlying stream ends."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end: Callable[[], None] | None = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._report_end()
            raise

    def __aiter__(self) -> _EndWatchingStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _report_end(self) -> None:
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end()
