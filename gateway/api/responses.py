"""The Responses API: create (JSON, SSE, WebSocket or background), compact, retrieve, delete, input items, cancel."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from flask import Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from gateway.accounting.keys import current_caller
from gateway.accounting.meter import refusals_recorded
from gateway.accounting.streams import hold_stream_slot
from gateway.api import guarded, responses_render, responses_ws
from gateway.api.http import (
    authenticated_blueprint,
    event_stream,
    json_object,
    parse_model,
    with_headers,
)
from gateway.errors import ContentPolicyViolation, GatewayError
from gateway.responses import admission, background, compaction, store
from gateway.serving.http_conventions import request_id

bp = authenticated_blueprint("responses", __name__)
ENDPOINT = "responses"


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
    try:
        body = guarded.checked_input(ENDPOINT, body, body.get("model"), caller)
    except ContentPolicyViolation as blocked:
        return blocked_response(None, body.get("model"), blocked)
    with refusals_recorded(caller, ENDPOINT, body.get("model"), request_id()):
        if body.get("stream") is True and not body.get("background"):
            hold_stream_slot()
        response = admission.admit_response(body, caller, request_id(), profile_servers=profile_servers)
    meter = response.run.meter
    if response.req.background:
        return with_headers(jsonify(background.start(response)), meter)
    if response.req.stream:
        return with_headers(event_stream(responses_render.stream(response), response.run), meter)
    try:
        answer = responses_render.complete(response)
    except GatewayError as error:
        if not guarded.is_block(error):
            raise
        return with_headers(blocked_response(response.builder.response(), body.get("model"), error), meter)
    if answer["status"] == "failed" and (answer.get("error") or {}).get("code") == ContentPolicyViolation.code:
        return with_headers(blocked_response(answer, body.get("model"), None), meter)
    return with_headers(jsonify(answer), meter)


def blocked_response(response: dict[str, Any] | None, model: Any, error: GatewayError | None) -> Response:
    """A guardrail's block on the Responses API: a 400 whose body is the `failed` response (code
    `content_policy_violation`), its `error` with OpenAI's error fields (`message`, `type`, `param`, `code`).

    `response` is the run's response object when one was admitted; `error` the block, unless the
    response already carries it.
    """
    answer = dict(response) if response is not None else {
        "id": store.new_response_id(), "object": "response", "created_at": int(time.time()), "model": model,
        "output": [], "usage": None}
    if error is not None:
        answer["error"] = error.body()["error"]
    answer["error"] = {"param": None, **answer["error"]}
    answer["status"] = "failed"
    reply = jsonify(answer)
    reply.status_code = ContentPolicyViolation.status
    return reply


@bp.get("/responses", websocket=True)
@bp.get("/responses")  # a plain GET is answered 426 (the upgrade is what this route is for)
def responses_socket() -> Response:
    """WebSocket mode: `response.create` messages in, the streaming events out, one turn at a time."""
    return responses_ws.serve(request_id())


@bp.post("/responses/compact")
def compact_response() -> Response:
    """Compact a conversation into user messages plus one sealed compaction item."""
    body, caller = json_object(), current_caller()
    body = guarded.checked_input("responses/compact", body, body.get("model"), caller)  # the model reads it too
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
