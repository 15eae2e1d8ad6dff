"""Chat completions, legacy completions and embeddings: relayed upstream, or run as a tool loop."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from gateway import chat_loop, proxy, routing, services
from gateway.api.http import event_stream, json_object, request_id
from gateway.auth import current_caller
from gateway.loop import run_loop
from gateway.mcp.assemble import profile_toolset
from gateway.metering import Meter

bp = Blueprint("chat", __name__)


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """OpenAI chat completions, JSON or SSE; `tools: "auto"` runs the default profile's MCP tools."""
    body = json_object()
    if body.get("tools") == "auto":
        profile = services.settings().mcp.default_profile
        labels = services.settings().profiles[profile].mcp_servers if profile else []
        return run_with_tools(body, labels)
    return relay("chat/completions", body)


@bp.post("/completions")
def completions() -> Response:
    """Legacy text completions, JSON or SSE."""
    return relay("completions", json_object())


@bp.post("/embeddings")
def embeddings() -> Response:
    """Embeddings (never streamed)."""
    body = json_object()
    body.pop("stream", None)
    return relay("embeddings", body)


def relay(path: str, body: dict[str, Any]) -> Response:
    """Authenticate, route, meter, relay upstream."""
    caller = current_caller()
    settings = services.settings()
    routes = routing.candidates(settings, body)
    meter = Meter.admit(caller, routes, body, path, request_id(), settings, services.limiter())
    client = services.upstream()
    if body.get("stream") is True:
        route, stream = proxy.open_stream(client, settings, routes, path, body, meter)
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        keepalive = settings.server.keepalive_interval_s
        return event_stream(proxy.relay_stream(stream, route, wants_usage, meter, keepalive))
    return jsonify(proxy.relay_json(client, settings, routes, path, body, meter))


def run_with_tools(body: dict[str, Any], labels: list[str]) -> Response:
    """Run the tool loop with these built-in servers' tools; answer with the final message."""
    caller = current_caller()
    settings = services.settings()
    route = routing.resolve(settings, body.get("model"))
    meter = Meter.admit(caller, [route], body, "chat/completions", request_id(), settings, services.limiter())
    with meter.closed_on_failure():
        plan = chat_loop.loop_plan(body, route, profile_toolset(services.mcp(), labels))
    events = run_loop(plan, services.upstream(), settings, meter)
    if body.get("stream") is True:
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return event_stream(chat_loop.stream(plan, events, meter, wants_usage))
    return jsonify(chat_loop.complete(plan, events, meter))
