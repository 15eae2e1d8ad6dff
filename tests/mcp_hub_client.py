"""The `mcp` SDK's streamable-HTTP client pointed at a gateway's /mcp, for the hub tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.mcp.transports import root_error

T = TypeVar("T")
CLIENT_TIMEOUT_S = 60.0


def with_hub(url: str, key: str | None, work: Callable[[Client], Awaitable[T]], mode: str = "auto") -> T:
    """Open one MCP client session to `url` with the key as Bearer, run `work` in it, return its result."""

    async def session() -> T:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        http = httpx2.AsyncClient(headers=headers, timeout=CLIENT_TIMEOUT_S)
        async with http, Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client:
            return await work(client)

    try:
        return asyncio.run(asyncio.wait_for(session(), CLIENT_TIMEOUT_S))
    except BaseExceptionGroup as group:  # the SDK's task groups wrap what went wrong
        raise root_error(group) from group


def tool_names(url: str, key: str, mode: str = "auto") -> list[str]:
    """The tool names the hub lists for a key."""

    async def names(client: Client) -> list[str]:
        return [tool.name for tool in (await client.list_tools()).tools]

    return with_hub(url, key, names, mode)


def call(url: str, key: str, name: str, arguments: dict[str, Any], mode: str = "auto") -> Any:
    """One tools/call result (a CallToolResult) through the hub."""

    async def calling(client: Client) -> Any:
        return await client.call_tool(name, arguments)

    return with_hub(url, key, calling, mode)


def text_of(result: Any) -> str:
    """The text blocks of a tool result, joined."""
    return "\n".join(block.text for block in result.content if getattr(block, "type", None) == "text")
