"""HTTP clients for request-declared remote MCP servers: policy-checked and DNS-pinned."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
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

Resolver = Callable[[str, int], Awaitable[list[str]]]

# A server may hold a response stream open between events; the mcp SDK uses the same.
SSE_READ_TIMEOUT_S = 300.0


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


class PolicyTransport(httpx2.AsyncHTTPTransport):
    """Re-checks every request URL (each redirect hop too) and dials pinned addresses."""

    def __init__(
        self,
        pins: PinnedAddresses,
        dialer: httpcore2.AsyncNetworkBackend | None,
        verify: ssl.SSLContext | bool,
        param: str | None,
    ) -> None:
        super().__init__(verify=verify, trust_env=False)
        self._param = param
        # httpx2's transport takes no network backend, so its pool is replaced by one
        # that dials through the pinning backend; the rest of the transport is reused.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(verify=verify, trust_env=False),
            max_connections=10,
            keepalive_expiry=5.0,
            network_backend=PinnedNetworkBackend(pins, dialer),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` only if its URL passes the policy."""
        check_remote_url(str(request.url), self._param)
        return await super().handle_async_request(request)


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
    timeout_s: float = 30.0,
    *,
    param: str | None = "server_url",
    resolver: Resolver | None = None,
    dialer: httpcore2.AsyncNetworkBackend | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx2.AsyncClient:
    """An httpx2 client for one remote MCP server; raises BadInput for an off-policy URL.

    resolver, dialer and verify replace DNS, the TCP dialer and TLS trust (tests).
    """
    sent = remote_headers(headers, authorization)
    timeout = httpx2.Timeout(timeout_s, read=max(timeout_s, SSE_READ_TIMEOUT_S))
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
