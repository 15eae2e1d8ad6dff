"""The hub's MCP server: the SDK's low-level `Server` behind its streamable-HTTP session manager, per worker.

The manager runs **stateless** with JSON responses: every POST is answered on its own (no
`Mcp-Session-Id`, no server-held session), so any gunicorn worker can answer any request of a
client's session and no proxy affinity is needed. Handshake-era clients (initialize, then
requests) and 2026-era clients (`server/discover`, self-contained requests) are both served.
The manager's task group lives on the worker's MCP bridge loop, started on first use (after
the fork) and cancelled when the bridge closes. Handlers run on that loop: they read the
caller from the ASGI scope the Flask view built, await the built-in servers' connections
directly, and hand blocking accounting waits to threads.

Only tools are served. Resources and prompts of the built-in servers are not passed through:
the hub declares no such capability, and `resources/*` / `prompts/*` requests get JSON-RPC
-32601 "Method not found".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError

from gateway.accounting.keys import Caller
from gateway.accounting.money import to_micro
from gateway.accounting.ratelimit import RateLimiter
from gateway.accounting.writer import AccountingWriter
from gateway.errors import (
    CLIENT_CLOSED,
    ContentPolicyViolation,
    GatewayError,
    InsufficientBalance,
    RateLimited,
    ServiceUnavailable,
)
from gateway.guardrails import NO_GUARDRAILS, Guardrails
from gateway.mcp.assemble import McpRuntime
from gateway.mcp_hub import catalog, guarded
from gateway.mcp_hub.metering import OK, TOOL_FAILED, ToolMeter
from gateway.observability import metrics

SCOPE_KEY = "gateway.mcp_hub"  # the ASGI scope entry holding the request's HubRequest
START_TIMEOUT_S = 10.0
INSTRUCTIONS = "Tools of the LLM gateway's built-in MCP servers, named {server}__{tool}."
T = TypeVar("T")


@dataclass(frozen=True)
class HubRequest:
    """What the handlers need about one HTTP request: who called, which servers they may use."""

    caller: Caller
    labels: tuple[str, ...]
    request_id: str
    context: contextvars.Context  # the request thread's (its access-log record and trace)
    guardrails: Guardrails = NO_GUARDRAILS  # the request's (gateway.mcp_hub.guarded)

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking work (accounting waits) off the loop, in the request's context."""
        return await anyio.to_thread.run_sync(self.context.copy().run, functools.partial(function, *args))


def hub_request(ctx: Any) -> HubRequest:
    """The HubRequest the view put in the ASGI scope of this MCP request."""
    return ctx.request.scope[SCOPE_KEY]


class HubServer:
    """The worker's hub: an MCP server over the built-in servers, metered per key."""

    def __init__(self, runtime: McpRuntime, writer: AccountingWriter, limiter: RateLimiter) -> None:
        self.runtime = runtime
        self._writer = writer
        self._limiter = limiter
        self._lock = threading.Lock()
        self._manager: StreamableHTTPSessionManager | None = None
        self._pid = 0
        self._task: concurrent.futures.Future[None] | None = None

    def asgi_app(self) -> Callable[..., Any]:
        """The ASGI app to run on the bridge loop; starts the session manager on first use in this process."""
        with self._lock:
            if self._manager is None or self._pid != os.getpid() or (self._task and self._task.done()):
                self._manager, self._pid = self._start(), os.getpid()
            return self._manager.handle_request

    def _start(self) -> StreamableHTTPSessionManager:
        """A fresh manager whose task group runs on the bridge loop until the bridge closes."""
        server = Server("llm-gateway", version="1", instructions=INSTRUCTIONS,
                        on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        manager = StreamableHTTPSessionManager(server, json_response=True, stateless=True)
        started = threading.Event()

        async def run() -> None:
            async with manager.run():
                started.set()
                await asyncio.Event().wait()  # until the bridge cancels every task on close

        self._task = self.runtime.bridge.submit(run())
        if not started.wait(START_TIMEOUT_S):
            raise ServiceUnavailable("The MCP hub did not start.")
        return manager

    async def _list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        """Every tool of the caller's connected servers, namespaced (one page)."""
        hub = hub_request(ctx)
        return types.ListToolsResult(tools=catalog.hub_tools(self.runtime.servers, hub.labels))

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        """Admit (rpm, price), call the upstream tool, settle with a usage row; failures are tool errors."""
        hub = hub_request(ctx)
        found = catalog.find(self.runtime.servers, hub.labels, params.name)
        if found is None:
            down = catalog.down_server(self.runtime.servers, hub.labels, params.name)
            if down is not None:  # one of the caller's servers, restarting or unreachable
                return catalog.error_result(down)
            # another scope's tool looks exactly like one that does not exist
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        label, tool = found
        arguments = params.arguments or {}
        if hub.guardrails.active(guarded.STAGE):  # before admission: a blocked call holds nothing
            try:
                arguments = await hub.in_thread(guarded.checked_arguments, hub.guardrails, hub.caller,
                                                hub.request_id, f"{label}/{tool.name}", arguments)
            except ContentPolicyViolation as blocked:
                return catalog.error_result(blocked.message)
        try:
            meter = await self._admit(hub, label, tool.name)
        except GatewayError as exc:
            if isinstance(exc, RateLimited | InsufficientBalance):
                metrics.refused("rate_limited" if isinstance(exc, RateLimited) else "insufficient_balance")
            return catalog.error_result(exc.message)
        return await self._metered_call(hub, meter, label, tool.name, arguments)

    async def _admit(self, hub: HubRequest, label: str, tool: str) -> ToolMeter:
        """The call's admission against the key's limits and balance (a thread waits for the accounting)."""
        settings = self.runtime.settings
        price = to_micro(settings.mcpServers[label].tool_prices.get(tool, 0))
        return await hub.in_thread(ToolMeter.admit, hub.caller, self._writer, self._limiter, hub.request_id,
                                   f"{label}/{tool}", price, settings.billing.reservation_ttl_s)

    async def _metered_call(
        self, hub: HubRequest, meter: ToolMeter, label: str, tool: str, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        """Call the tool, then settle its meter whatever happened (also when the client left)."""
        started, result = time.perf_counter(), None
        try:
            result = await catalog.call_upstream(self.runtime.servers, label, tool, arguments,
                                                 self.runtime.settings.mcp.tool_timeout_s)
            return result
        finally:
            status = CLIENT_CLOSED if result is None else TOOL_FAILED if result.is_error else OK
            metrics.observe_tool_call(label, status == OK, time.perf_counter() - started)
            with anyio.CancelScope(shield=True):  # a cancelled call still gets its row (and no charge)
                await hub.in_thread(meter.finish, status)
