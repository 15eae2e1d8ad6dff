"""Chat completions, legacy completions and embeddings, relayed upstream."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from gateway import proxy, routing, services
from gateway.api.http import event_stream, json_object, request_id
from gateway.auth import current_caller
from gateway.metering import Meter

bp = Blueprint("chat", __name__)


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """OpenAI chat completions, JSON or SSE."""
    body = json_object()
    if body.get("tools") == "auto":
        body = {key: value for key, value in body.items() if key not in ("tools", "tool_choice")}
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
    """Authenticate, route, relay upstream and record usage."""
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
