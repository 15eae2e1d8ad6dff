"""OpenRouter's generation stats: GET /api/v1/generation?id= for the caller's own account."""

from __future__ import annotations

from flask import Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from gateway.accounting.generations import find_generation
from gateway.accounting.keys import current_caller
from gateway.api.http import authenticated_blueprint, parse_model
from gateway.api.openrouter_objects import generation_object
from gateway.errors import NotFound

bp = authenticated_blueprint("generations", __name__)


class GenerationQuery(BaseModel):
    """Query parameters of GET /api/v1/generation (unknown ones ignored)."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)


@bp.get("/api/v1/generation")
def get_generation() -> Response:
    """A generation's tokens, cost, latency, model and provider; 404 for an id of another account."""
    generation_id = parse_model(GenerationQuery, request.args.to_dict()).id
    row = find_generation(generation_id, current_caller().account.id)
    if row is None:
        raise NotFound(f"Generation {generation_id!r} not found.", code="generation_not_found")
    return jsonify({"data": generation_object(row)})
