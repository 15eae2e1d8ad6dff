"""Built-in MCP discovery: configured servers with availability, and each server's tools."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from gateway import services
from gateway.accounting.keys import current_caller
from gateway.mcp.toolset import listed_tool

bp = Blueprint("mcp", __name__)


@bp.get("/mcp/servers")
def list_servers() -> Response:
    """Every configured built-in server and its state (an empty list when none)."""
    current_caller()
    return jsonify({"object": "list", "data": services.mcp().servers.statuses()})


@bp.get("/mcp/servers/<label>/tools")
def list_tools(label: str) -> Response:
    """A server's tools: 404 unknown label, 409 unavailable, 503 runtime unreachable."""
    current_caller()
    tools = services.mcp().servers.tools(label)
    return jsonify({"object": "list", "server_label": label, "data": [listed_tool(tool) for tool in tools]})
