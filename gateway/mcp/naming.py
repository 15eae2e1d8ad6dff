"""The one rule that names MCP tools: `mcp__{label}__{tool}` for the upstream model (the hub drops `mcp__`)."""

from __future__ import annotations

import hashlib
import re

PREFIX = "mcp__"  # reserved: client function tools may not start with it
SEPARATOR = "__"
MAX_FUNCTION_NAME = 64
SAFE_NAME = re.compile(r"[a-zA-Z0-9_-]+")
UNSAFE_CHARACTERS = re.compile(r"[^a-zA-Z0-9_-]")
DIGEST_LENGTH = 8


def raw_function_name(server_label: str, tool_name: str) -> str:
    """`mcp__{label}__{tool}` as written, before it is made safe for the upstream."""
    return f"{PREFIX}{server_label}{SEPARATOR}{tool_name}"


def tool_function_name(server_label: str, tool_name: str) -> str:
    """The chat function name an MCP tool is offered under, deterministic and unique per tool.

    Names upstreams accept (`[a-zA-Z0-9_-]`, at most 64 characters) are kept as they are;
    any other name is made safe and ends in a short digest of the exact label and tool name,
    so `get.time` and `get_time` never meet.
    """
    plain = raw_function_name(server_label, tool_name)
    if len(plain) <= MAX_FUNCTION_NAME and SAFE_NAME.fullmatch(plain):
        return plain
    digest = hashlib.sha256(f"{server_label}\0{tool_name}".encode()).hexdigest()[:DIGEST_LENGTH]
    safe = UNSAFE_CHARACTERS.sub("_", plain)[: MAX_FUNCTION_NAME - DIGEST_LENGTH - 1]
    return f"{safe}_{digest}"


def is_reserved(function_name: str) -> bool:
    """Whether a function name claims the gateway's MCP prefix."""
    return function_name.startswith(PREFIX)


def hub_tool_name(server_label: str, tool_name: str) -> str:
    """The name the MCP hub (/mcp) lists a tool under: `tool_function_name` without the reserved prefix.

    `time__get_current_time` is unique per (label, tool) as the loop's name is, and an MCP client
    may offer it as a function tool on this gateway's own APIs, where `mcp__` names are reserved.
    """
    return tool_function_name(server_label, tool_name).removeprefix(PREFIX)
