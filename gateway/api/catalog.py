"""The model list in OpenAI's list shape."""

from __future__ import annotations

from flask import Response, current_app, jsonify

from gateway import services
from gateway.accounting.keys import current_caller
from gateway.api.http import authenticated_blueprint

bp = authenticated_blueprint("catalog", __name__)


@bp.get("/models")
def list_models() -> Response:
    """Every configured public model id."""
    current_caller()
    created = current_app.extensions["gateway.started_at"]
    data = [
        {"id": model_id, "object": "model", "created": created, "owned_by": model.provider}
        for model_id, model in services.settings().models.items()
    ]
    return jsonify({"object": "list", "data": data})
