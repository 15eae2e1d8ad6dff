"""The README's remote docs server, on loopback: `python docs_server.py PORT` serves `search_docs` at /mcp.

Its answer says which tenant header and whether the bearer token `$DOCS_TOKEN` arrived, so a
test can see what the gateway sent.
"""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations

server = MCPServer("docs", log_level="WARNING")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def search_docs(query: str, ctx: Context) -> str:
    """Search the documentation."""
    headers = getattr(ctx.request_context.request, "headers", None) or {}
    authorized = headers.get("authorization") == f"Bearer {os.environ.get('DOCS_TOKEN', '')}"
    return f"3 pages match {query!r} for tenant {headers.get('x-tenant', '-')} (authorized: {authorized})"


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
