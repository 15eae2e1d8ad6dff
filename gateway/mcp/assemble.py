"""Build a run's Toolset: from a profile's built-in servers (chat) or from Responses declarations."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from gateway.config import Settings
from gateway.errors import BadInput, Conflict, GatewayError, ServiceUnavailable
from gateway.mcp.access import may_use
from gateway.mcp.bridge import McpBridge
from gateway.mcp.policy import check_remote_url
from gateway.mcp.remote import remote_http_client
from gateway.mcp.servers import BuiltinServers, call_tool, close_remote, open_remote, remote_tools
from gateway.mcp.tools import ToolInfo
from gateway.mcp.toolset import ServerTools, Toolset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class McpRuntime:
    """The worker's MCP services, as the assemblers need them."""

    settings: Settings
    servers: BuiltinServers
    bridge: McpBridge
    executor: Executor


def profile_toolset(
    runtime: McpRuntime, labels: Iterable[str], scope: str | None, allow_list: list[str] | None,
) -> Toolset | None:
    """Every tool of a profile's servers this key may use (unavailable ones are skipped and logged)."""
    parts = []
    for label in labels:
        if not may_use(runtime.settings, label, scope, allow_list):
            continue
        try:
            runtime.servers.wait_started(label, runtime.settings.mcp.connect_timeout_s)
            tools = runtime.servers.tools(label)
        except (Conflict, ServiceUnavailable) as exc:
            log.warning("profile server %s skipped: %s", label, exc.message)
            continue
        caller = functools.partial(runtime.servers.call, label)
        parts.append(ServerTools(label, tools, caller, announce=False))
    return Toolset(parts, runtime.executor) if parts else None


def declared_toolset(
    runtime: McpRuntime, declarations: list[Any], already_listed: set[str],
    allowed_targets: dict[str, set[str] | None] | None, scope: str | None, allow_list: list[str] | None,
) -> Toolset | None:
    """Resolve Responses `{"type": "mcp"}` declarations; 422 bad_input for every rule they break."""
    parts: list[ServerTools] = []
    try:
        for index, declaration in enumerate(declarations):
            server = open_declared(runtime, declaration, index, scope, allow_list)
            parts.append(server)
            server.tools = select_tools(server.tools, declaration.allowed_tools, allowed_targets, declaration, index)
            server.announce = declaration.server_label not in already_listed
            server.approval = functools.partial(needs_approval, declaration.require_approval)
    except GatewayError:
        for server in parts:
            server.close()
        raise
    return Toolset(parts, runtime.executor) if parts else None


def open_declared(
    runtime: McpRuntime, declaration: Any, index: int, scope: str | None, allow_list: list[str] | None,
) -> ServerTools:
    """Connect a built-in label (one this key may use) or a remote server_url and read its tools."""
    label = declaration.server_label
    if declaration.server_url is None:
        if not may_use(runtime.settings, label, scope, allow_list):
            raise BadInput(f"MCP server_label {label!r} is not a configured built-in server.",
                           param=f"tools[{index}].server_label")
        try:
            runtime.servers.wait_started(label, runtime.settings.mcp.connect_timeout_s)
            tools = runtime.servers.tools(label)
        except (Conflict, ServiceUnavailable) as exc:
            raise BadInput(f"MCP server {label!r} is unavailable: {exc.message}",
                           param=f"tools[{index}].server_label") from None
        return ServerTools(label, tools, functools.partial(runtime.servers.call, label))
    return open_remote_declared(runtime, declaration, index)


def open_remote_declared(runtime: McpRuntime, declaration: Any, index: int) -> ServerTools:
    """A request-declared remote server, connected through the URL policy, listed before the run."""
    mcp = runtime.settings.mcp
    if not mcp.remote_enabled:
        raise BadInput("Remote MCP servers are disabled on this gateway.", param=f"tools[{index}].server_url")
    url = declaration.server_url
    if mcp.remote_url_checks:
        check_remote_url(url, param=f"tools[{index}].server_url")
    factory = functools.partial(remote_http_client, url, declaration.headers or {}, declaration.authorization,
                                mcp.remote_url_checks, mcp.http_timeout_s, read_timeout_s=mcp.http_read_timeout_s,
                                param=f"tools[{index}].server_url")
    secrets = [value for value in (declaration.authorization, *(declaration.headers or {}).values()) if value]
    connection = open_remote(runtime.bridge, url, {}, factory, mcp.connect_timeout_s, secrets=secrets)
    caller = functools.partial(_call_remote, runtime, connection, mcp.tool_timeout_s)
    return ServerTools(declaration.server_label, [tool for tool in remote_tools(connection)], caller,
                       close=functools.partial(close_remote, runtime.bridge, connection))


def _call_remote(runtime: McpRuntime, connection: Any, timeout: float, tool: str, arguments: dict) -> Any:
    return call_tool(runtime.bridge, connection, tool, arguments, timeout)


def select_tools(
    tools: list[ToolInfo], allowed: Any, targets: dict[str, set[str] | None] | None, declaration: Any, index: int
) -> list[ToolInfo]:
    """Apply the declaration's allowed_tools and the tool_choice's allowed set; empty is a 422."""
    selected = [tool for tool in tools if tool_allowed(tool, allowed)]
    if targets is not None:
        names = targets.get(declaration.server_label, set())
        selected = [tool for tool in selected if names is None or tool.name in names]
    if not selected:
        raise BadInput(f"No tools of MCP server {declaration.server_label!r} are left after allowed_tools.",
                       param=f"tools[{index}].allowed_tools")
    return selected


def tool_allowed(tool: ToolInfo, allowed: Any) -> bool:
    """allowed_tools as a list of names, or a filter {tool_names, read_only}."""
    if allowed is None:
        return True
    if isinstance(allowed, list):
        return tool.name in allowed
    if allowed.tool_names is not None and tool.name not in allowed.tool_names:
        return False
    return allowed.read_only is None or tool.read_only == allowed.read_only


def needs_approval(policy: Any, tool: ToolInfo) -> bool:
    """require_approval: "never" (the default here), "always", or {always: filter, never: filter}."""
    if policy is None or policy == "never":
        return False
    if policy == "always":
        return True
    if policy.always is not None and _matches(policy.always, tool):
        return True
    return not (policy.never is not None and _matches(policy.never, tool))


def _matches(selection: Any, tool: ToolInfo) -> bool:
    if selection.tool_names is not None and tool.name not in selection.tool_names:
        return False
    return selection.read_only is None or tool.read_only == selection.read_only
