"""The Responses API: create (JSON, SSE, WebSocket or background), compact, retrieve, delete, input items, cancel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from flask import Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from gateway.accounting.keys import current_caller
from gateway.accounting.meter import refusals_recorded
from gateway.accounting.streams import hold_stream_slot
from gateway.api import responses_render, responses_ws
from gateway.api.http import (
    authenticated_blueprint,
    event_stream,
    json_object,
    parse_model,
    with_headers,
)
from gateway.responses import admission, background, compaction, store
from gateway.serving.http_conventions import request_id

bp = authenticated_blueprint("responses", __name__)


class InputItemsQuery(BaseModel):
    """Query parameters of GET /responses/{id}/input_items (strings coerced, unknown ones ignored)."""

    model_config = ConfigDict(extra="ignore")
    limit: int = Field(20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None


@bp.post("/responses")
def create_response() -> Response:
    """Create a response: JSON, an SSE stream, or a queued background response."""
    return create(json_object())


def create(body: dict[str, Any], profile_servers: Sequence[str] = ()) -> Response:
    """Admit and render one create request (a profile route offers its servers as `mcp` tools)."""
    caller = current_caller()
    with refusals_recorded(caller, "responses", body.get("model"), request_id()):
        if body.get("stream") is True and not body.get("background"):
            hold_stream_slot()
        response = admission.admit_response(body, caller, request_id(), profile_servers=profile_servers)
    meter = response.run.meter
    if response.req.background:
        return with_headers(jsonify(background.start(response)), meter)
    if response.req.stream:
        return with_headers(event_stream(responses_render.stream(response), response.run), meter)
    return with_headers(jsonify(responses_render.complete(response)), meter)


@bp.get("/responses", websocket=True)
@bp.get("/responses")  # a plain GET is answered 426 (the upgrade is what this route is for)
def responses_socket() -> Response:
    """WebSocket mode: `response.create` messages in, the streaming events out, one turn at a time."""
    return responses_ws.serve(request_id())


@bp.post("/responses/compact")
def compact_response() -> Response:
    """Compact a conversation into user messages plus one sealed compaction item."""
    body, caller = json_object(), current_caller()
    with refusals_recorded(caller, "responses/compact", body.get("model"), request_id()):
        return jsonify(compaction.compact_response(body, caller, request_id()))


@bp.get("/responses/<response_id>")
def get_response(response_id: str) -> Response:
    """A stored response of the caller's account."""
    return jsonify(store.load(response_id, current_caller().account.id))


@bp.delete("/responses/<response_id>")
def delete_response(response_id: str) -> Response:
    """Delete a stored response (a background run of it stops)."""
    return jsonify(background.delete_response(current_caller(), response_id))


@bp.get("/responses/<response_id>/input_items")
def list_input_items(response_id: str) -> Response:
    """One page of a stored response's own input items."""
    query = parse_model(InputItemsQuery, request.args.to_dict())
    page = store.input_page(response_id, current_caller().account.id, query.limit, query.order, query.after)
    return jsonify(page)


@bp.post("/responses/<response_id>/cancel")
def cancel_response(response_id: str) -> Response:
    """Cancel a queued or running background response."""
    return jsonify(background.cancel_response(current_caller(), response_id))
