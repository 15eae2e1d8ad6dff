"""One MCP client session, owned by one long-lived task on the bridge loop.

The SDK requires a session's `async with` to be entered and exited in the same task,
so `McpConnection` runs an owner task that connects, serves requests sent to it through
an asyncio.Queue (each in its own child task, so calls run concurrently) and finally
disconnects. Every public coroutine must run on the bridge loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from mcp import Client

from gateway.mcp.transports import TransportOption, describe_error, root_error, watch_end

logger = logging.getLogger(__name__)

_MAX_TOOL_PAGES = 100
_CLIENT_INFO = types.Implementation(name="gateway", version="1")


class ConnectionClosed(Exception):
    """The connection's session has ended (or never started); the request was not served."""


@dataclass
class _Request:
    operation: Callable[[Client], Awaitable[Any]]
    future: asyncio.Future[Any]


_STOP, _ENDED, _REFRESH = "stop", "ended", "refresh"


class McpConnection:
    """A client session to one MCP server, usable from any task on the bridge loop."""

    def __init__(
        self, transports: Sequence[TransportOption], *, connect_timeout_s: float, name: str = "mcp"
    ) -> None:
        self.name = name
        self._transports = tuple(transports)
        self._connect_timeout_s = connect_timeout_s
        self._queue: asyncio.Queue[_Request | str] = asyncio.Queue()
        self._tools: tuple[types.Tool, ...] = ()
        self._transport_kind: str | None = None
        self._error: str | None = None
        self._failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._ended = asyncio.Event()
        self._scope: anyio.CancelScope | None = None
        self._abort_requested = False

    @property
    def tools(self) -> tuple[types.Tool, ...]:
        """The server's tool inventory, refreshed on `notifications/tools/list_changed`."""
        return self._tools

    @property
    def transport_kind(self) -> str | None:
        """Which transport connected: "stdio", "streamable_http" or "sse"."""
        return self._transport_kind

    @property
    def error(self) -> str | None:
        """Why the connection failed or ended, if it did."""
        return self._error

    @property
    def ended(self) -> bool:
        """Whether the session has ended (or failed to start)."""
        return self._ended.is_set()

    async def start(self) -> None:
        """Connect, initialize and list tools; raise the failure (bounded by the connect timeout)."""
        if self._task is not None:
            raise RuntimeError("McpConnection.start() called twice")
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._own(), name=f"mcp:{self.name}")
        try:
            await asyncio.shield(self._ready)
        except asyncio.CancelledError:
            self._ready.add_done_callback(_observe)  # nobody is left to read a connect failure
            self._abort()
            raise

    async def list_tools(self, timeout: float) -> tuple[types.Tool, ...]:
        """Fetch the tool inventory again and return it."""
        return await self._submit(lambda client: self._fetch_tools(client, timeout))

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any], timeout: float
    ) -> types.CallToolResult:
        """Call a tool; raises TimeoutError after `timeout` seconds, MCPError, or ConnectionClosed."""

        async def call(client: Client) -> types.CallToolResult:
            with anyio.fail_after(timeout):
                return await client.call_tool(name, dict(arguments))

        return await self._submit(call)

    async def wait_ended(self) -> None:
        """Return once the session has ended for any reason."""
        await self._ended.wait()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Disconnect gracefully, escalating every `timeout` seconds (at most 3 waits); never hangs."""
        task = self._task
        if task is None:
            self._ended.set()
            return
        self._queue.put_nowait(_STOP)
        if self._ready is not None and not self._ready.done():
            self._abort()
        for escalate in (self._abort, task.cancel, None):
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if done or escalate is None:
                return
            escalate()

    async def _submit(self, operation: Callable[[Client], Awaitable[Any]]) -> Any:
        """Hand an operation to the owner task and wait for its result."""
        if self._task is None:
            raise ConnectionClosed("connection not started")
        if self.ended:
            raise ConnectionClosed(self._error or "connection closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(operation, future))
        return await future

    def _abort(self) -> None:
        """Cancel the owner's scope: it unwinds its `async with` blocks in its own task."""
        self._abort_requested = True
        if self._scope is not None:
            self._scope.cancel()

    async def _own(self) -> None:
        """Owner task body: connect, serve requests until stopped or disconnected, clean up."""
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                if self._abort_requested:
                    scope.cancel()
                scope.deadline = anyio.current_time() + self._connect_timeout_s
                async with AsyncExitStack() as stack:
                    client = await self._connect(stack)
                    self._tools = await self._fetch_tools(client, self._connect_timeout_s)
                    scope.deadline = math.inf
                    assert self._ready is not None
                    self._ready.set_result(None)
                    await self._serve(client)
            if scope.cancelled_caught and self._ready is not None and not self._ready.done():
                self._failure = (
                    ConnectionClosed("closed while connecting")
                    if self._abort_requested
                    else TimeoutError(f"connecting timed out after {self._connect_timeout_s:g}s")
                )
                self._error = str(self._failure)
        except Exception as exc:  # noqa: BLE001 - the owner task is the session's outermost boundary
            self._failure = root_error(exc)
            self._error = describe_error(exc)
            logger.info("MCP connection %s ended: %s", self.name, self._error)
        finally:
            self._finish()

    async def _connect(self, stack: AsyncExitStack) -> Client:
        """Enter the first transport option that initializes; raise the first failure if none does."""
        first_error: Exception | None = None
        for option in self._transports:
            client = Client(
                watch_end(option.open, lambda kind=option.kind: self._on_stream_end(kind)),
                message_handler=self._on_message,
                client_info=_CLIENT_INFO,
                cache=None,
            )
            try:
                await stack.enter_async_context(client)
            except Exception as exc:  # noqa: BLE001 - any failure moves on to the next transport
                logger.info("MCP %s: %s transport failed: %s", self.name, option.kind, describe_error(exc))
                first_error = first_error or exc
                continue
            self._transport_kind = option.kind
            return client
        raise first_error or ConnectionClosed("no transport configured")

    async def _serve(self, client: Client) -> None:
        """Run each queued request in its own child task until told to stop or the stream ends."""
        async with anyio.create_task_group() as group:
            if _announces_tool_changes(client):
                group.start_soon(self._listen_for_tool_changes, client)
            while True:
                request = await self._queue.get()
                if request is _STOP:
                    break
                if request is _ENDED:
                    raise ConnectionClosed("server closed the connection")
                if request is _REFRESH:
                    group.start_soon(self._refresh_tools, client)
                elif isinstance(request, _Request):
                    group.start_soon(_serve_one, client, request)
            group.cancel_scope.cancel()

    async def _fetch_tools(self, client: Client, timeout: float) -> tuple[types.Tool, ...]:
        """List every page of tools (bounded) and cache the result."""
        tools: list[types.Tool] = []
        cursor: str | None = None
        with anyio.fail_after(timeout):
            for _ in range(_MAX_TOOL_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
        self._tools = tuple(tools)
        return self._tools

    async def _refresh_tools(self, client: Client) -> None:
        """Background refresh after a list-changed signal; keeps the old list on failure."""
        try:
            await self._fetch_tools(client, self._connect_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a failed refresh keeps the previous list
            logger.warning("MCP %s: refreshing tools failed: %s", self.name, describe_error(exc))

    async def _listen_for_tool_changes(self, client: Client) -> None:
        """On 2026-era sessions, list-changed arrives on a `subscriptions/listen` stream."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    await self._refresh_tools(client)
        except Exception as exc:  # noqa: BLE001 - legacy session, or no listen support
            logger.debug("MCP %s: no tool-change subscription: %s", self.name, describe_error(exc))

    async def _on_message(self, message: Any) -> None:
        """Session message handler: a legacy list-changed notification triggers a refresh."""
        if isinstance(message, types.ToolListChangedNotification):
            self._queue.put_nowait(_REFRESH)
        elif isinstance(message, Exception):
            logger.debug("MCP %s: transport reported %s", self.name, describe_error(message))

    def _on_stream_end(self, kind: str) -> None:
        """The live transport's stream ended (process exit, dropped connection): wake the owner."""
        if kind == self._transport_kind:  # not a failed attempt during transport fallback
            self._queue.put_nowait(_ENDED)

    def _finish(self) -> None:
        """Fail whatever is still waiting and mark the connection ended."""
        self._scope = None
        error = ConnectionClosed(self._error or "connection closed")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(self._failure or error)
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if isinstance(request, _Request) and not request.future.done():
                request.future.set_exception(error)
        self._ended.set()


async def _serve_one(client: Client, request: _Request) -> None:
    """Run one request; a caller that gives up (cancels its future) cancels the MCP call."""
    future = request.future
    if future.done():
        return
    with anyio.CancelScope() as scope:
        future.add_done_callback(scope_canceller := lambda _: scope.cancel())
        try:
            result = await request.operation(client)
        except Exception as exc:  # noqa: BLE001 - handed to the caller through its future
            _settle(future, scope_canceller, exception=exc)
        except BaseException:  # cancelled: the caller gave up or the session is closing
            _settle(
                future, scope_canceller, exception=ConnectionClosed("connection closed during the request")
            )
            raise
        else:
            _settle(future, scope_canceller, result=result)


def _settle(
    future: asyncio.Future[Any],
    callback: Callable[[Any], None],
    *,
    result: Any = None,
    exception: BaseException | None = None,
) -> None:
    """Resolve a request's future unless its caller already gave up on it."""
    future.remove_done_callback(callback)
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


def _observe(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved, so asyncio does not warn about it."""
    if not future.cancelled():
        future.exception()


def _announces_tool_changes(client: Client) -> bool:
    """Whether the server declared `tools.listChanged`."""
    tools = client.server_capabilities.tools
    return bool(tools and tools.list_changed)
