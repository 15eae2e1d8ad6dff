"""Built-in MCP discovery: configured servers with availability, and each server's tools."""

from __future__ import annotations

from flask import Response, jsonify

from gateway import services
from gateway.accounting.keys import current_caller
from gateway.api.http import authenticated_blueprint
from gateway.errors import NotFound
from gateway.mcp.access import may_use
from gateway.mcp.toolset import listed_tool

bp = authenticated_blueprint("mcp", __name__)


@bp.get("/mcp/servers")
def list_servers() -> Response:
    """Every configured built-in server and its state (an empty list when none)."""
    caller, settings = current_caller(), services.settings()
    statuses = [status for status in services.mcp().servers.statuses()
                if may_use(settings, status["label"], caller.account.scope, caller.mcp_allow_list)]
    return jsonify({"object": "list", "data": statuses})


@bp.get("/mcp/servers/<label>/tools")
def list_tools(label: str) -> Response:
    """A server's tools: 404 unknown label, 409 unavailable, 503 runtime unreachable."""
    caller, settings = current_caller(), services.settings()
    if label in settings.mcpServers and not may_use(settings, label, caller.account.scope, caller.mcp_allow_list):
        raise NotFound(f"No built-in MCP server labelled {label!r}.", param="server_label")
    tools = services.mcp().servers.tools(label)
    return jsonify({"object": "list", "server_label": label, "data": [listed_tool(tool) for tool in tools]})
