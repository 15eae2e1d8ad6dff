"""A stdio MCP server whose tools fail the ways real servers do: it dies mid-call, hangs, or answers garbage."""

from __future__ import annotations

import json
import os

import anyio
from mcp.server import stdio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("faulty", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged (the call that shows the server is back)."""
    return text


@server.tool()
def crash() -> str:
    """Kill this server process in the middle of the call."""
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Never answer (far past any tool timeout)."""
    await anyio.sleep(3600)
    return "never"


@server.tool()
def garbage(ctx: Context) -> str:
    """Write a line that is not JSON-RPC, then a result of the wrong shape for this very call."""
    # The SDK diverts fd 1 and writes the protocol to a private duplicate: write there.
    claim = stdio._claims.get(1)
    wire = claim.private_fd if claim and claim.private_fd is not None else 1
    os.write(wire, b"\x00<html>this is not JSON-RPC</html>\n")
    wrong = {"jsonrpc": "2.0", "id": ctx.request_id, "result": {"content": "not a list", "isError": "maybe"}}
    os.write(wire, json.dumps(wrong).encode() + b"\n")
    return "the real answer, after the garbage"


if __name__ == "__main__":
    server.run()
