"""Built-in MCP servers from config (lifecycle, inventory, calls) and per-request remote servers.

Item-level failures (a tool error, a timeout, a crashed or unavailable server) come back
as `ToolOutcome(error=...)`, never as exceptions, so the tool loop can report them on
the call item and carry on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2

from gateway import errors
from gateway.mcp.bridge import McpBridge
from gateway.mcp.connection import McpConnection
from gateway.mcp.tools import ToolInfo, ToolOutcome, outcome_from_result, redact, tool_info
from gateway.mcp.transports import (
    DEFAULT_HTTP_TIMEOUT,
    HttpClientFactory,
    TransportOption,
    describe_error,
    http_transports,
    stdio_transports,
)
from gateway.observability.metrics import mcp_server_state

logger = logging.getLogger(__name__)

Status = Literal["starting", "available", "unavailable"]

# Extra wait on the bridge beyond an operation's own timeout, so the inner timeout reports first.
_BRIDGE_GRACE_S = 5.0
_CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServerSpec:
    """A built-in server from `[mcpServers.<label>]`: a stdio `command` or a streamable HTTP `url`."""

    label: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.command is None) == (self.url is None):
            raise ValueError(f"MCP server {self.label!r} needs exactly one of command or url")

    @property
    def transport(self) -> str:
        """Either "stdio" or "streamable_http"."""
        return "stdio" if self.command is not None else "streamable_http"

    def transports(self, http_timeout: httpx2.Timeout = DEFAULT_HTTP_TIMEOUT) -> tuple[TransportOption, ...]:
        """How to reach this server, in the order to try."""
        if self.command is not None:
            return stdio_transports(self.command, self.args, self.env, self.cwd)
        assert self.url is not None
        return http_transports(self.url, self.headers, timeout=http_timeout)

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a status or error message."""
        return (*self.env.values(), *self.headers.values())


def call_tool(
    bridge: McpBridge, connection: McpConnection, tool: str, arguments: Mapping[str, Any], timeout: float
) -> ToolOutcome:
    """Call a tool through the bridge; every failure becomes `ToolOutcome(error=...)`."""
    try:
        result = bridge.run(connection.call_tool(tool, arguments, timeout), timeout + _BRIDGE_GRACE_S)
    except TimeoutError:
        return ToolOutcome(error=f"tool {tool!r} timed out after {timeout:g}s")
    except errors.GatewayError as exc:
        return ToolOutcome(error=exc.message)
    except Exception as exc:  # noqa: BLE001 - any failure of the call is an item-level error
        return ToolOutcome(error=f"tool {tool!r} failed: {describe_error(exc)}")
    return outcome_from_result(result)


@dataclass
class _Slot:
    """Runtime state of one built-in server; written on the bridge loop, read from any thread."""

    spec: ServerSpec
    status: Status = "starting"
    connection: McpConnection | None = None
    error: str | None = None
    restarts: int = 0

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "status":
            mcp_server_state(self.spec.label, value)  # the gateway_mcp_server_up gauge


class BuiltinServers:
    """The configured MCP servers: connected in the background, restarted with backoff."""

    def __init__(
        self,
        specs: Sequence[ServerSpec],
        bridge: McpBridge,
        call_timeout_s: float = 60.0,
        connect_timeout_s: float = 30.0,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        http_timeout: httpx2.Timeout = DEFAULT_HTTP_TIMEOUT,
    ) -> None:
        self._slots = {spec.label: _Slot(spec) for spec in specs}
        self._bridge = bridge
        self._call_timeout_s = call_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._http_timeout = http_timeout
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._supervisors: list[concurrent.futures.Future[None]] = []

    @property
    def labels(self) -> list[str]:
        """Configured labels, in config order."""
        return list(self._slots)

    def start(self) -> None:
        """Begin connecting every server in the background; idempotent and non-blocking."""
        with self._lock:
            if self._started or self._closed or not self._slots:
                return
            self._started = True
            self._supervisors = [self._bridge.submit(self._supervise(slot)) for slot in self._slots.values()]

    def statuses(self) -> list[dict[str, Any]]:
        """Inventory with availability: label, transport, status, tool_count, last_error, restarts."""
        runtime_up = not self._closed and self._bridge.available
        if runtime_up:
            self.start()
        return [_status_of(slot, runtime_up) for slot in self._slots.values()]

    def tools(self, label: str) -> list[ToolInfo]:
        """A server's tools; NotFound (unknown), Conflict (unavailable), ServiceUnavailable (no runtime)."""
        return [tool_info(tool) for tool in self.connection(label).tools]

    def connection(self, label: str) -> McpConnection:
        """A server's live connection (for the MCP hub); raises as `tools` does."""
        slot = self._slot(label)
        self._require_runtime()
        self.start()
        connection = slot.connection
        if slot.status != "available" or connection is None:
            raise errors.Conflict(f"MCP server {label!r} is {slot.status}", param="server_label")
        return connection

    def secrets(self, label: str) -> tuple[str, ...]:
        """Values of a server's config that must never appear in a message (its env and headers)."""
        return self._slot(label).spec.secrets()

    def wait_started(self, label: str, timeout: float) -> None:
        """Wait (bounded) while a server is still `starting`, so a first request finds it ready."""
        slot = self._slot(label)
        self.start()
        deadline = time.monotonic() + timeout
        while slot.status == "starting" and time.monotonic() < deadline and not self._closed:
            time.sleep(0.05)

    def call(
        self, label: str, tool: str, arguments: Mapping[str, Any], timeout: float | None = None
    ) -> ToolOutcome:
        """Call a tool on a built-in server; failures are outcomes, only an unknown label raises."""
        slot = self._slot(label)
        if self._closed or not self._bridge.available:
            return ToolOutcome(error="the MCP runtime is unavailable")
        self.start()
        connection = slot.connection
        if slot.status != "available" or connection is None:
            return ToolOutcome(error=f"MCP server {label!r} is {slot.status}")
        outcome = call_tool(self._bridge, connection, tool, arguments, timeout or self._call_timeout_s)
        if outcome.error is None:
            return outcome
        return ToolOutcome(error=redact(outcome.error, slot.spec.secrets()))

    def close(self) -> None:
        """Stop supervising and disconnect every server (bounded); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if not started or not self._bridge.available:
            return
        for supervisor in self._supervisors:
            supervisor.cancel()
        try:
            self._bridge.run(self._disconnect_all(), 3 * _CLOSE_TIMEOUT_S + _BRIDGE_GRACE_S)
        except errors.GatewayError as exc:
            logger.warning("closing MCP servers: %s", exc.message)

    def _slot(self, label: str) -> _Slot:
        """The slot for `label`, or NotFound."""
        slot = self._slots.get(label)
        if slot is None:
            raise errors.NotFound(f"unknown MCP server label {label!r}", param="server_label")
        return slot

    def _require_runtime(self) -> None:
        """ServiceUnavailable when the MCP runtime is closed or its thread has died."""
        if self._closed or not self._bridge.available:
            raise errors.ServiceUnavailable("the MCP runtime is unavailable")

    async def _supervise(self, slot: _Slot) -> None:
        """Keep one server connected: connect, wait for the end, back off, reconnect."""
        initial, ceiling = self._backoff
        delay = initial
        while True:
            slot.status = "starting"
            connection = McpConnection(
                slot.spec.transports(self._http_timeout), connect_timeout_s=self._connect_timeout_s,
                name=slot.spec.label,
            )
            slot.connection = connection
            try:
                await connection.start()
            except Exception as exc:  # noqa: BLE001 - a failed start is retried after the backoff
                slot.error = redact(describe_error(exc), slot.spec.secrets())
            else:
                slot.status, delay = "available", initial
                await connection.wait_ended()
                slot.error = redact(
                    connection.error or "the server closed the connection", slot.spec.secrets()
                )
            slot.status = "unavailable"
            logger.warning("MCP server %s unavailable: %s", slot.spec.label, slot.error)
            await connection.aclose(_CLOSE_TIMEOUT_S)
            await asyncio.sleep(delay)
            delay = min(delay * 2, ceiling)
            slot.restarts += 1

    async def _disconnect_all(self) -> None:
        """Close every slot's connection concurrently."""
        await asyncio.sleep(0)  # let the supervisors' cancellations land first
        connections = [slot.connection for slot in self._slots.values() if slot.connection is not None]
        await asyncio.gather(*(c.aclose(_CLOSE_TIMEOUT_S) for c in connections))
        for slot in self._slots.values():
            slot.status, slot.connection = "unavailable", None


def _status_of(slot: _Slot, runtime_up: bool) -> dict[str, Any]:
    """One row of `statuses()`; every server is unavailable once the runtime is down."""
    connection = slot.connection
    status = slot.status if runtime_up else "unavailable"
    return {
        "label": slot.spec.label,
        "transport": slot.spec.transport,
        "status": status,
        "tool_count": len(connection.tools) if status == "available" and connection else 0,
        "last_error": slot.error if runtime_up else "the MCP runtime is unavailable",
        "restarts": slot.restarts,
    }


def open_remote(
    bridge: McpBridge,
    url: str,
    headers: Mapping[str, str],
    client_factory: HttpClientFactory | None = None,
    timeout: float = 30.0,
    *,
    secrets: Sequence[str] = (),
) -> McpConnection:
    """Connect to a request-declared server and list its tools; BadInput (redacted) on failure.

    A `client_factory` (e.g. a partial of remote.remote_http_client) builds the HTTP client
    with its own headers and URL policy; `headers` are sent only without one. Header values
    and `secrets` (the authorization token) are redacted from error messages either way.
    """

    async def connect() -> McpConnection:
        transports = http_transports(url, headers, client_factory)
        connection = McpConnection(transports, connect_timeout_s=timeout, name="remote")
        await connection.start()
        return connection

    try:
        return bridge.run(connect(), timeout + _BRIDGE_GRACE_S)
    except (errors.ServiceUnavailable, errors.BadInput):
        raise
    except Exception as exc:  # noqa: BLE001 - any discovery failure is the request's bad input
        message = redact(describe_error(exc), (*headers.values(), *secrets))
        raise errors.BadInput(f"could not list the remote MCP server's tools: {message}") from None


def remote_tools(connection: McpConnection) -> list[ToolInfo]:
    """The tools a remote connection listed when it opened (or since, if it announced changes)."""
    return [tool_info(tool) for tool in connection.tools]


def close_remote(bridge: McpBridge, connection: McpConnection, timeout: float = _CLOSE_TIMEOUT_S) -> None:
    """Disconnect a remote server; never raises."""
    try:
        bridge.run(connection.aclose(timeout), 3 * timeout + _BRIDGE_GRACE_S)
    except errors.GatewayError as exc:
        logger.warning("closing remote MCP connection: %s", exc.message)
