"""The tools one hub caller sees and how a call reaches the built-in server behind it (runs on the bridge loop).

Tools are named `{label}__{tool}`: the tool loop's rule without its reserved `mcp__` prefix
(gateway.mcp.naming.hub_tool_name), so two servers may both have a `search`. The list is read from each connection's live inventory,
which the connection refreshes when its server announces `list_changed`: every `tools/list`
answers the current tools. Servers that are not connected right now are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import anyio
import mcp_types as types

from gateway.errors import Conflict, GatewayError, ServiceUnavailable
from gateway.mcp.naming import hub_tool_name
from gateway.mcp.servers import BuiltinServers
from gateway.mcp.tools import redact
from gateway.mcp.transports import describe_error

log = logging.getLogger(__name__)

# Extra wait beyond a call's own timeout, so the connection's timeout reports first.
_GRACE_S = 5.0


def listed(servers: BuiltinServers, labels: Iterable[str]) -> Iterator[tuple[str, str, types.Tool]]:
    """(hub name, server label, upstream tool) for every tool of the connected servers among `labels`."""
    for label in labels:
        try:
            connection = servers.connection(label)
        except (Conflict, ServiceUnavailable) as exc:
            log.info("MCP hub: server %s left out: %s", label, exc.message)
            continue
        for tool in connection.tools:
            yield hub_tool_name(label, tool.name), label, tool


def hub_tools(servers: BuiltinServers, labels: Iterable[str]) -> list[types.Tool]:
    """The tools as the hub lists them: the upstream definitions under their namespaced names."""
    return [tool.model_copy(update={"name": name}) for name, _, tool in listed(servers, labels)]


def find(servers: BuiltinServers, labels: Iterable[str], name: str) -> tuple[str, types.Tool] | None:
    """The server label and upstream tool a hub name stands for, among the caller's servers."""
    return next(((label, tool) for hub_name, label, tool in listed(servers, labels) if hub_name == name), None)


def down_server(servers: BuiltinServers, labels: Iterable[str], name: str) -> str | None:
    """Why the caller's server that a hub name belongs to (`label__...`) cannot be reached now, if it cannot."""
    for label in labels:
        if name.startswith(f"{label}__"):
            try:
                servers.connection(label)
            except (Conflict, ServiceUnavailable) as exc:
                return exc.message
    return None


def error_result(message: str) -> types.CallToolResult:
    """A tool error (`isError`) carrying `message`: what the hub answers for every failed call."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


async def call_upstream(
    servers: BuiltinServers, label: str, tool: str, arguments: Mapping[str, Any], timeout: float
) -> types.CallToolResult:
    """Call the tool on its server; a failure, crash or timeout becomes a tool error within `timeout`."""
    try:
        connection = servers.connection(label)
        with anyio.fail_after(timeout + _GRACE_S):
            return await connection.call_tool(tool, arguments, timeout)
    except TimeoutError:
        return error_result(f"tool {tool!r} timed out after {timeout:g}s")
    except GatewayError as exc:
        return error_result(exc.message)
    except Exception as exc:  # noqa: BLE001 - any failure of the call is the caller's tool error
        return error_result(redact(f"tool {tool!r} failed: {describe_error(exc)}", servers.secrets(label)))
