"""Anthropic's MCP connector on `/v1/messages`: the gateway runs the servers in its tool loop, on any model.

A body with `mcp_servers` (gateway.dialects.anthropic_mcp) is translated to chat, admitted and run as
chat's `tools: "auto"` is (gateway.api.chat.loop_run: each turn held before it is sent, usage rows
`endpoint = "messages"`). Remote servers go through the remote MCP code and its URL policy; built-in
ones through the key's allow-list (gateway.mcp.access.may_use). Executed calls come back as
`mcp_tool_use` / `mcp_tool_result` blocks (gateway.dialects.anthropic_mcp_render); the client's own
tools as `tool_use` blocks with `stop_reason: "tool_use"`. A server the gateway refuses is a 400.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Response, jsonify

from gateway import services
from gateway.accounting.keys import Caller
from gateway.api.chat import loop_run
from gateway.api.http import event_stream, with_headers
from gateway.dialects import anthropic_mcp_render
from gateway.dialects.anthropic_mcp import McpServer, mcp_request
from gateway.dialects.anthropic_messages import chat_request
from gateway.errors import BadInput, InvalidRequest
from gateway.mcp.assemble import declared_toolset
from gateway.mcp.toolset import Toolset

DECLARATION_PARAM = re.compile(r"tools\[(\d+)\]\.(server_label|server_url|allowed_tools)")
PARAM_NAMES = {"server_label": "name", "server_url": "url", "allowed_tools": "tool_configuration"}


def create(body: dict[str, Any], endpoint: str, dropped_header: str) -> Response:
    """A Messages call with `mcp_servers`, JSON or streamed."""
    servers, rest = mcp_request(body)
    translated = chat_request(rest)
    chat = translated.body
    run = loop_run(chat, lambda caller: opened(servers, caller), endpoint)
    names = {server.server_label: server.name for server in servers}
    render = anthropic_mcp_render.McpMessageRender(chat["model"], names, chat.get("stop") or [])
    if chat.get("stream"):
        response = event_stream(anthropic_mcp_render.stream(run, render), run)
    else:
        response = jsonify(anthropic_mcp_render.complete(run, render))
    if translated.dropped:
        response.headers[dropped_header] = ", ".join(translated.dropped)
    return with_headers(response, run.meter)


def opened(servers: list[McpServer], caller: Caller) -> Toolset | None:
    """The servers' toolset (refusals are 400s naming the `mcp_servers` entry)."""
    with messages_params(servers):
        return declared_toolset(services.mcp(), servers, set(), None, caller.account.scope, caller.mcp_allow_list)


@contextmanager
def messages_params(servers: list[McpServer]) -> Iterator[None]:
    """Turn the assembler's 422 about `tools[i].server_url` into a 400 about `mcp_servers[j].url`."""
    try:
        yield
    except BadInput as error:
        found = DECLARATION_PARAM.search(f"{error.param} {error.message}")
        if found is None:
            raise InvalidRequest(error.message, param="mcp_servers") from None
        server = servers[int(found.group(1))]
        param = f"mcp_servers[{server.index}].{PARAM_NAMES[found.group(2)]}"
        message = DECLARATION_PARAM.sub(param, error.message)
        raise InvalidRequest(message if param in message else f"{param}: {message}", param=param) from None
