"""HTTP clients for request-declared remote MCP servers: policy-checked and DNS-pinned."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Self

import httpcore2
import httpx2

from gateway.errors import BadInput
from gateway.mcp.policy import (
    RemoteTarget,
    check_remote_host,
    check_remote_url,
    check_resolved_addresses,
    remote_headers,
)
from gateway.mcp.transports import DEFAULT_HTTP_TIMEOUT, http_timeout

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve `host` with the running event loop's getaddrinfo; unique addresses, in order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    return addresses


class PinnedAddresses:
    """Resolves each host once per client, checks every address, and remembers them."""

    def __init__(self, resolver: Resolver, timeout_s: float, param: str | None) -> None:
        self._resolver = resolver
        self._timeout_s = timeout_s
        self._param = param
        self._pins: dict[str, list[str]] = {}
        self._lock = asyncio.Lock()

    async def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses of `host`; resolves only the first time it is asked."""
        name = check_remote_host(host, self._param)
        async with self._lock:
            if name not in self._pins:
                self._pins[name] = await self._resolve(name, port)
            return self._pins[name]

    async def _resolve(self, name: str, port: int) -> list[str]:
        try:
            async with asyncio.timeout(self._timeout_s):
                found = await self._resolver(name, port)
        except (OSError, TimeoutError) as exc:
            label = self._param or "server_url"
            message = f"{label} host {name!r} could not be resolved"
            raise BadInput(message, param=self._param) from exc
        return check_resolved_addresses(name, found, self._param)


class PinnedNetworkBackend(httpcore2.AsyncNetworkBackend):
    """Dials only addresses the policy checked; TLS SNI and Host stay the host name."""

    def __init__(self, pins: PinnedAddresses, dialer: httpcore2.AsyncNetworkBackend | None) -> None:
        self._pins = pins
        self._dialer = dialer or httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        """Connect to the first checked address of `host` that accepts."""
        failure: Exception = httpcore2.ConnectError(f"no address to connect to for {host}")
        for address in await self._pins.addresses(host, port):
            try:
                return await self._dialer.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        """Refused: a remote MCP server is never a local socket."""
        raise httpcore2.ConnectError("unix sockets are not allowed for remote MCP")

    async def sleep(self, seconds: float) -> None:
        """Delegate retry back-off sleeps to the real backend."""
        await self._dialer.sleep(seconds)


# httpcore2 failures as the httpx2 errors callers catch; most specific first.
_ERRORS: tuple[tuple[type[Exception], type[httpx2.TransportError]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.TimeoutException, httpx2.TimeoutException),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.NetworkError, httpx2.NetworkError),
    (httpcore2.ProxyError, httpx2.ProxyError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """Re-raise an httpcore2 failure as its httpx2 counterpart; anything else unchanged."""
    try:
        yield
    except Exception as exc:
        for core_error, httpx_error in _ERRORS:
            if isinstance(exc, core_error):
                raise httpx_error(str(exc)) from exc
        raise


class _ResponseBody(httpx2.AsyncByteStream):
    """An httpcore2 response body seen as an httpx2 stream, with httpx2 errors."""

    def __init__(self, body: AsyncIterable[bytes]) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield the body's chunks as they arrive."""
        with _as_httpx_errors():
            async for chunk in self._body:
                yield chunk

    async def aclose(self) -> None:
        """Release the connection the body is read from."""
        aclose = getattr(self._body, "aclose", None)
        if aclose is not None:
            with _as_httpx_errors():
                await aclose()


class PolicyTransport(httpx2.AsyncBaseTransport):
    """Re-checks every request URL (each redirect hop too) and dials pinned addresses."""

    def __init__(
        self,
        pins: PinnedAddresses,
        dialer: httpcore2.AsyncNetworkBackend | None,
        verify: ssl.SSLContext | bool,
        param: str | None,
    ) -> None:
        self._param = param
        # httpx2's own transport takes no network backend, so this one owns an
        # httpcore2 pool that dials through the pinning backend.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(verify=verify, trust_env=False),
            max_connections=10,
            keepalive_expiry=5.0,
            network_backend=PinnedNetworkBackend(pins, dialer),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` only if its URL passes the policy."""
        check_remote_url(str(request.url), self._param)
        with _as_httpx_errors():
            sent = await self._pool.handle_async_request(_core_request(request))
        if not isinstance(sent.stream, AsyncIterable):
            raise TypeError("httpcore2 returned a synchronous body to an async transport")
        return httpx2.Response(
            status_code=sent.status,
            headers=sent.headers,
            stream=_ResponseBody(sent.stream),
            extensions=sent.extensions,
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        with _as_httpx_errors():
            await self._pool.aclose()


def _core_request(request: httpx2.Request) -> httpcore2.Request:
    """The httpcore2 form of `request`; its extensions carry the timeouts."""
    url = httpcore2.URL(
        scheme=request.url.raw_scheme,
        host=request.url.raw_host,
        port=request.url.port,
        target=request.url.raw_path,
    )
    return httpcore2.Request(
        method=request.method,
        url=url,
        headers=request.headers.raw,
        content=request.stream,
        extensions=request.extensions,
    )


class RemoteClient(httpx2.AsyncClient):
    """An httpx2 client whose `async with` resolves and checks the host first."""

    def __init__(self, target: RemoteTarget, pins: PinnedAddresses, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._target = target
        self._pins = pins

    async def __aenter__(self) -> Self:
        """Refuse an off-policy host (BadInput) before any connection is opened."""
        await self._pins.addresses(self._target.host, self._target.port)
        return await super().__aenter__()


def remote_http_client(
    url: str,
    headers: dict[str, str] | None,
    authorization: str | None,
    url_checks: bool,
    timeout_s: float = DEFAULT_HTTP_TIMEOUT.connect,
    *,
    read_timeout_s: float = DEFAULT_HTTP_TIMEOUT.read,
    param: str | None = "server_url",
    resolver: Resolver | None = None,
    dialer: httpcore2.AsyncNetworkBackend | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx2.AsyncClient:
    """An httpx2 client for one remote MCP server; raises BadInput for an off-policy URL.

    resolver, dialer and verify replace DNS, the TCP dialer and TLS trust (tests).
    """
    sent = remote_headers(headers, authorization)
    timeout = http_timeout(timeout_s, read_timeout_s)
    if not url_checks:
        _require_http_url(url, param)
        return httpx2.AsyncClient(headers=sent, timeout=timeout, verify=verify, trust_env=False)
    target = check_remote_url(url, param)
    pins = PinnedAddresses(resolver or system_resolver, timeout_s, param)
    return RemoteClient(
        target,
        pins,
        headers=sent,
        timeout=timeout,
        transport=PolicyTransport(pins, dialer, verify, param),
        trust_env=False,
    )


def _require_http_url(url: str, param: str | None) -> None:
    """With checks off any http(s) URL is accepted, but nothing else."""
    label = param or "server_url"
    try:
        scheme = httpx2.URL(url).scheme
    except (httpx2.InvalidURL, TypeError) as exc:
        raise BadInput(f"{label} is not a valid URL", param=param) from exc
    if scheme not in ("http", "https"):
        raise BadInput(f"{label} must use http or https", param=param)
