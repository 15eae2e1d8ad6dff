"""The model list: OpenAI's list shape on /v1, OpenRouter's model objects on /api/v1."""

from __future__ import annotations

from flask import Response, current_app, jsonify, request

from gateway import services
from gateway.accounting.keys import current_caller
from gateway.api.http import authenticated_blueprint
from gateway.api.openrouter_objects import model_object, models_list
from gateway.errors import OPENROUTER, dialect_of

bp = authenticated_blueprint("catalog", __name__)


@bp.get("/models")
def list_models() -> Response:
    """Every configured public model: OpenAI's list on /v1, OpenRouter's model schema on /api/v1."""
    current_caller()
    created = current_app.extensions["gateway.started_at"]
    models = services.settings().models.items()
    if dialect_of(request.path) == OPENROUTER:
        return jsonify(models_list([model_object(model_id, model, created) for model_id, model in models]))
    data = [{"id": model_id, "object": "model", "created": created, "owned_by": model.provider}
            for model_id, model in models]
    return jsonify({"object": "list", "data": data})
