"""Hub `tools/call` requests bounded like streams: per key, per account and per worker (429 in JSON-RPC form).

A tool call holds its request thread until the tool answers or `[mcp] tool_timeout_s` passes, so
a key's calls to a slow tool could otherwise hold every thread of a worker and stall every other
tenant. A POST carrying a `tools/call` counts as one held call of its key and account under the
rules of gateway.accounting.streams (their `max_streams`, the tenant share), and all keys'
calls together may hold at most `[mcp] hub_thread_share` of the worker's threads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

from gateway.accounting.keys import Caller
from gateway.accounting.streams import StreamSlots, current_caps
from gateway.errors import MCP, RateLimited, render_error
from gateway.observability import metrics

EXTENSION = "gateway.mcp_hub.calls"


def tool_call_ids(body: bytes) -> list[Any] | None:
    """The JSON-RPC ids of the `tools/call` requests in a POST body (None: it carries none)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None  # the SDK's transport answers the parse error
    messages = parsed if isinstance(parsed, list) else [parsed]
    ids = [message.get("id") for message in messages
           if isinstance(message, dict) and message.get("method") == "tools/call"]
    return ids or None


def hold_tool_calls(caller: Caller) -> Callable[[], None] | Response:
    """Count this POST as one held tool call of its caller: its release, or the 429 to answer (a JSON-RPC error)."""
    ids = tool_call_ids(request.get_data())
    if ids is None:
        return lambda: None
    slots: StreamSlots = current_app.extensions[EXTENSION]
    try:
        return slots.acquire(caller.key.id, caller.account.id, current_caps(caller))
    except RateLimited as exc:
        metrics.refused("rate_limited")
        return refusal(exc, ids)


def refusal(exc: RateLimited, ids: list[Any]) -> Response:
    """HTTP 429 with the hub's JSON-RPC error (gateway.errors' `mcp` dialect) answering each refused call's id."""
    errors = [{**render_error(exc, MCP), "id": call_id} for call_id in ids]
    response = jsonify(errors[0] if len(errors) == 1 else errors)
    response.status_code = 429
    response.headers.update(exc.headers)
    return response


def init_app(app: Flask) -> None:
    """Give the app its counter of held hub tool calls (one per worker process)."""
    app.extensions[EXTENSION] = StreamSlots.for_hub_calls(app.extensions["gateway.settings"])
