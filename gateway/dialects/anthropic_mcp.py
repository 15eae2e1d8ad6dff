"""Anthropic's MCP connector (`mcp_servers`, `mcp_toolset` tools) as the gateway's MCP declarations.

Both beta versions are read: `mcp-client-2025-04-04` (a server's `tool_configuration` with `enabled`
and `allowed_tools`) and the current `mcp-client-2025-11-20` (an `mcp_toolset` entry in `tools` per
server, with `default_config.enabled` and per-tool `configs`). A server entry is remote by its `url`
(run through the gateway's remote MCP code and URL policy, `authorization_token` as the bearer), or
one of the gateway's built-in servers: `url: "gateway:<label>"`, or no `url` and a `name` that is
a built-in label. `mcp_tool_use` / `mcp_tool_result` are the blocks an executed call answers with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.dialects.anthropic_messages import invalid
from gateway.dialects.anthropic_replies import tool_input
from gateway.mcp.naming import tool_function_name

BUILTIN_SCHEME = "gateway:"  # `url: "gateway:time"` names the built-in server `time`
TOOLSET = "mcp_toolset"


@dataclass(frozen=True)
class ToolSwitches:
    """Which tools of a server are enabled: a default and per-tool overrides (`in` asks)."""

    default: bool = True
    overrides: dict[str, bool] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return self.overrides.get(str(name), self.default)


@dataclass(frozen=True)
class ToolFilter:
    """allowed_tools in the shape gateway.mcp.assemble.tool_allowed reads (names, read_only)."""

    tool_names: Any
    read_only: bool | None = None


@dataclass
class McpServer:
    """One `mcp_servers` entry as a declaration gateway.mcp.assemble.declared_toolset opens."""

    name: str  # the client's name: `server_name` in the answer's blocks
    server_label: str  # the built-in label, or the name of a remote server
    server_url: str | None
    authorization: str | None = field(default=None, repr=False)
    allowed_tools: Any = None
    headers: dict[str, str] | None = None
    require_approval: Any = None
    index: int = 0  # its place in `mcp_servers`, for errors


def mcp_request(body: dict[str, Any]) -> tuple[list[McpServer], dict[str, Any]]:
    """The enabled MCP servers of a Messages body, and the body without them (nor its `mcp_toolset` tools)."""
    entries = body.get("mcp_servers")
    if not isinstance(entries, list):
        raise invalid("mcp_servers", "must be a list of servers.")
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    toolsets = {tool.get("mcp_server_name"): (index, tool) for index, tool in enumerate(tools)
                if isinstance(tool, dict) and tool.get("type") == TOOLSET}
    servers = [server_of(entry, index, toolsets) for index, entry in enumerate(entries)]
    names = [server.name for server in servers]
    for index, tool in toolsets.values():
        if tool.get("mcp_server_name") not in names:
            raise invalid(f"tools[{index}].mcp_server_name", "names no server of mcp_servers.")
    for label in {server.server_label for server in servers}:
        if [server.server_label for server in servers].count(label) > 1:
            raise invalid("mcp_servers", f"two servers are named (or are) {label!r}.")
    rest = {key: value for key, value in body.items() if key != "mcp_servers"}
    if isinstance(body.get("messages"), list):
        labels = {server.name: server.server_label for server in servers}
        rest["messages"] = [turn for message in body["messages"] for turn in replayed(message, labels)]
    if "tools" in body:
        rest["tools"] = [tool for tool in tools if not (isinstance(tool, dict) and tool.get("type") == TOOLSET)]
    return [server for server in servers if server.allowed_tools is not False], rest


def server_of(entry: Any, index: int, toolsets: dict[Any, tuple[int, dict[str, Any]]]) -> McpServer:
    """One `mcp_servers[index]` entry (its allowed_tools is False when it is disabled)."""
    param = f"mcp_servers[{index}]"
    if not isinstance(entry, dict) or entry.get("type", "url") != "url":
        raise invalid(f"{param}.type", "must be 'url'.")
    name, url, token = entry.get("name"), entry.get("url"), entry.get("authorization_token")
    if not isinstance(name, str) or not name:
        raise invalid(f"{param}.name", "Field required.")
    if not isinstance(url, str | None) or not isinstance(token, str | None):
        raise invalid(param, "url and authorization_token must be strings.")
    label, remote = name, url or None
    if url and url.startswith(BUILTIN_SCHEME):
        label, remote = url.removeprefix(BUILTIN_SCHEME), None
    allowed = configured_tools(entry.get("tool_configuration"), f"{param}.tool_configuration")
    if name in toolsets:
        allowed = toolset_tools(*toolsets[name])
    return McpServer(name, label, remote, token or None, allowed, index=index)


def configured_tools(config: Any, param: str) -> Any:
    """The 2025-04-04 `tool_configuration`: False when disabled, else its allowed_tools (None: all)."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise invalid(param, "must be an object.")
    if config.get("enabled") is False:
        return False
    allowed = config.get("allowed_tools")
    if allowed is not None and not (isinstance(allowed, list) and all(isinstance(name, str) for name in allowed)):
        raise invalid(f"{param}.allowed_tools", "must be a list of tool names.")
    return allowed


def toolset_tools(index: int, toolset: dict[str, Any]) -> ToolFilter:
    """The 2025-11-20 `mcp_toolset`: `default_config.enabled` and per-tool `configs[name].enabled`."""
    default = toolset.get("default_config") or {}
    configs = toolset.get("configs") or {}
    if not isinstance(default, dict) or not isinstance(configs, dict):
        raise invalid(f"tools[{index}]", "default_config and configs must be objects.")
    overrides = {str(name): bool(config.get("enabled", True)) for name, config in configs.items()
                 if isinstance(config, dict)}
    return ToolFilter(ToolSwitches(bool(default.get("enabled", True)), overrides))


def tool_use_block(item_id: str, name: str, server_name: str, arguments: str) -> dict[str, Any]:
    """The `mcp_tool_use` block of an executed call."""
    return {"type": "mcp_tool_use", "id": item_id, "name": name, "server_name": server_name,
            "input": tool_input(arguments)}


def tool_result_block(item_id: str, output: str | None, error: str | None) -> dict[str, Any]:
    """The `mcp_tool_result` block of a call's outcome (its text, or the error's)."""
    text = output or "" if error is None else error
    return {"type": "mcp_tool_result", "tool_use_id": item_id, "is_error": error is not None,
            "content": [{"type": "text", "text": text}]}



def replayed(message: Any, labels: dict[str, str]) -> list[Any]:
    """An assistant turn sent back with executed calls, split as the loop ran them (a call, its result, the rest)."""
    content = message.get("content") if isinstance(message, dict) and message.get("role") == "assistant" else None
    if not isinstance(content, list) or not any(isinstance(block, dict) and str(block.get("type")).startswith(
            "mcp_tool_") for block in content):
        return [message]
    turns: list[dict[str, Any]] = [{"role": "assistant", "content": []}]
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "mcp_tool_result":
            turns.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.get("tool_use_id"),
                                                       "content": block.get("content"),
                                                       "is_error": bool(block.get("is_error"))}]})
            turns.append({"role": "assistant", "content": []})
            continue
        turns[-1]["content"].append(called(block, labels) if kind == "mcp_tool_use" else block)
    return [turn for turn in turns if turn["content"]]


def called(block: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """An `mcp_tool_use` block as the `tool_use` the model made (gateway.mcp.naming's name)."""
    label = labels.get(str(block.get("server_name")), str(block.get("server_name")))
    return {"type": "tool_use", "id": block.get("id"), "name": tool_function_name(label, str(block.get("name"))),
            "input": block.get("input") or {}}
