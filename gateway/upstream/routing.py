"""Public model ids -> provider + upstream model, and OpenRouter-style fallback lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config import ModelSettings, Settings
from gateway.errors import InvalidRequest, ModelNotFound


@dataclass(frozen=True)
class Route:
    """Where a public model id is served."""

    model_id: str
    provider: str
    upstream_model: str
    settings: ModelSettings


def resolve(settings: Settings, model_id: Any, param: str = "model") -> Route:
    """The route for one public model id, or 404 model_not_found."""
    if not isinstance(model_id, str) or not model_id:
        raise InvalidRequest("`model` must be a non-empty string.", param=param, code="missing_model")
    model = settings.models.get(model_id)
    if model is None:
        raise ModelNotFound(f"The model {model_id!r} does not exist.", param=param)
    return Route(model_id, model.provider, model.upstream_model or model_id, model)


def candidates(settings: Settings, body: dict[str, Any]) -> list[Route]:
    """`model` then each of `models` (deduplicated), resolved up front; ids not served here are skipped.

    As with OpenRouter, a fallback list may name models this gateway does not serve; 404 only when
    it serves none of them.
    """
    fallbacks = body.get("models")
    if fallbacks is None:
        return [resolve(settings, body.get("model"))]
    if not isinstance(fallbacks, list) or not fallbacks:
        raise InvalidRequest("`models` must be a non-empty list of model ids.", param="models")
    ordered = ([body["model"]] if body.get("model") else []) + fallbacks
    unique = list(dict.fromkeys(ordered))
    served = [model_id for model_id in unique if isinstance(model_id, str) and model_id in settings.models]
    return [resolve(settings, model_id, param="models") for model_id in served or unique[:1]]
