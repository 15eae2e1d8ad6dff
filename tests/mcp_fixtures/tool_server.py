"""A small MCP server for tests: `python tool_server.py stdio | http PORT | sse PORT`."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp_types import CallToolResult, TextContent, ToolAnnotations

server = MCPServer("fixture", log_level="WARNING")

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(24)


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(name="get.time")
def get_time() -> str:
    """A tool whose MCP name has a character chat function names may not have."""
    return "12:00"


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer (a hanging tool when `seconds` is large)."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


_arrivals: dict[str, int] = {}
_all_arrived: dict[str, anyio.Event] = {}


@server.tool()
async def rendezvous(group: str, count: int) -> str:
    """Wait (at most 20s) until `count` calls of `group` are in flight at once."""
    _arrivals[group] = _arrivals.get(group, 0) + 1
    event = _all_arrived.setdefault(group, anyio.Event())
    if _arrivals[group] >= count:
        event.set()
    with anyio.move_on_after(20):
        await event.wait()
    if not event.is_set():
        raise ToolError(f"only {_arrivals[group]} of {count} calls arrived together")
    return "met"


@server.tool()
def fail(message: str) -> str:
    """Raise a tool error carrying `message`."""
    raise ToolError(message)


@server.tool()
def structured() -> CallToolResult:
    """Structured content only, with no text block."""
    return CallToolResult(content=[], structured_content={"city": "Paris", "temps": [12, 14]})


@server.tool()
def picture() -> list[Any]:
    """A caption and a small PNG."""
    return [
        TextContent(type="text", text="a picture"),
        Image(data=PNG_BYTES, format="png").to_image_content(),
    ]


@server.tool()
def crash() -> str:
    """Kill this server process in the middle of the call."""
    os._exit(3)


@server.tool()
def header(name: str, ctx: Context) -> str:
    """The value of an HTTP request header (empty over stdio)."""
    request = ctx.request_context.request
    headers = getattr(request, "headers", None) or {}
    return headers.get(name, "")


@server.tool()
async def grow(ctx: Context) -> str:
    """Register a new tool `added` and announce that the tool list changed."""
    if "added" not in {tool.name for tool in await server.list_tools()}:
        server.add_tool(lambda: "added", name="added", description="Added at run time.")
    await ctx.notify_tools_changed()  # 2026-era sessions: subscriptions/listen
    with contextlib.suppress(Exception):  # legacy sessions; absent on 2026-era ones
        await ctx.request_context.session.send_tool_list_changed()
    return "grown"


def main(argv: list[str]) -> None:
    """Run over stdio, streamable HTTP or legacy SSE on 127.0.0.1:PORT."""
    mode = argv[1] if len(argv) > 1 else "stdio"
    if mode == "stdio":
        server.run()
    elif mode == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(argv[2]))
    elif mode == "sse":
        server.run("sse", host="127.0.0.1", port=int(argv[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
