"""The MCP tools one run offers the model, named `mcp__{label}__{tool}`, and how calls reach them."""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from gateway.mcp.naming import is_reserved, raw_function_name, tool_function_name
from gateway.mcp.tools import ToolInfo, ToolOutcome
from gateway.observability.outgoing import observed_tool_call

ToolCaller = Callable[[str, dict[str, Any]], ToolOutcome]


@dataclass(frozen=True)
class OfferedTool:
    """One MCP tool as offered to the model."""

    function_name: str
    server_label: str
    tool: ToolInfo
    needs_approval: bool = False

    def chat_function(self) -> dict[str, Any]:
        """The chat-completions tool definition."""
        schema = self.tool.input_schema or {"type": "object", "properties": {}}
        definition = {"name": self.function_name, "parameters": schema}
        if self.tool.description:
            definition["description"] = self.tool.description
        return {"type": "function", "function": definition}


@dataclass
class ServerTools:
    """One server's part of a run: its tools, how to call it, whether to list it, how to close it."""

    label: str
    tools: list[ToolInfo]
    caller: ToolCaller
    announce: bool = True
    close: Callable[[], None] = lambda: None
    approval: Callable[[ToolInfo], bool] = lambda tool: False


@dataclass
class Toolset:
    """Every MCP tool of a run; executes calls on the app's task pool."""

    servers: list[ServerTools]
    executor: Executor
    offered: dict[str, OfferedTool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for server in self.servers:
            for tool in server.tools:
                name = tool_function_name(server.label, tool.name)
                self.offered[name] = OfferedTool(name, server.label, tool, server.approval(tool))

    def functions(self) -> list[dict[str, Any]]:
        """Chat tool definitions for every offered tool."""
        return [tool.chat_function() for tool in self.offered.values()]

    def owns(self, name: str) -> bool:
        """Whether a called function is one of these MCP tools (or claims the reserved prefix)."""
        return name in self.offered or is_reserved(name)

    def lookup(self, name: str) -> OfferedTool | None:
        """The offered tool called `name` (its offered name, or `mcp__{label}__{tool}` as written)."""
        return self.offered.get(name) or next(
            (tool for tool in self.offered.values() if raw_function_name(tool.server_label, tool.tool.name) == name),
            None,
        )

    def function_for(self, server_label: str, tool_name: str) -> str | None:
        """The offered function name of a server's tool, if offered."""
        name = tool_function_name(server_label, tool_name)
        return name if name in self.offered else None

    def listings(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """The servers not yet listed in this chain, with their tools as `mcp_list_tools` shows them."""
        return [
            (server.label, [listed_tool(tool) for tool in server.tools])
            for server in self.servers
            if server.announce
        ]

    def start_call(self, server_label: str, tool_name: str, arguments: str) -> Future[ToolOutcome]:
        """Run one call on the task pool; bad JSON arguments fail the call, not the run."""
        server = next(server for server in self.servers if server.label == server_label)
        try:
            parsed = json.loads(arguments or "{}")
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            failed: Future[ToolOutcome] = Future()
            failed.set_result(ToolOutcome(error="arguments must be a JSON object"))
            return failed
        return self.executor.submit(contextvars.copy_context().run, observed_tool_call, server.label, tool_name,
                                    server.caller, tool_name, parsed)  # counted, and traced in the request's trace

    def close(self) -> None:
        """Disconnect per-request (remote) servers."""
        for server in self.servers:
            server.close()


def listed_tool(tool: ToolInfo) -> dict[str, Any]:
    """A tool as an `mcp_list_tools` item shows it."""
    annotations = {"read_only": True} if tool.read_only else None
    return {"name": tool.name, "description": tool.description, "input_schema": tool.input_schema,
            "annotations": annotations}
