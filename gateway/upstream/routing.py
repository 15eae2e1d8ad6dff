"""Public model ids -> their deployments (provider + upstream model), and OpenRouter-style fallback lists."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from gateway.config import DeploymentSettings, ModelSettings, Settings, deployment_names, model_deployments
from gateway.errors import InvalidRequest, ModelNotFound


@dataclass(frozen=True)
class Deployment:
    """One place a model is served: its name (metrics, usage rows, shared health), provider and settings."""

    name: str
    provider: str
    upstream_model: str
    settings: DeploymentSettings


@dataclass(frozen=True)
class Route:
    """Where a public model id is served: the model, one of its deployments, and the attempts it took to answer.

    `resolve` gives the route on the model's first deployment; the router (gateway.upstream.router)
    moves it to the deployment it picks (`on`) and counts the attempts a request made (`attempts`).
    """

    model_id: str
    settings: ModelSettings
    deployments: tuple[Deployment, ...]
    deployment: Deployment
    attempts: int = 1

    @classmethod
    def of(cls, model_id: str, model: ModelSettings) -> Route:
        """The route of a model on its first deployment."""
        deployments = deployments_of(model_id, model)
        return cls(model_id, model, deployments, deployments[0])

    @property
    def provider(self) -> str:
        """The provider table the route's deployment is on."""
        return self.deployment.provider

    @property
    def upstream_model(self) -> str:
        """The model id its deployment's upstream is sent."""
        return self.deployment.upstream_model

    def on(self, deployment: Deployment) -> Route:
        """The same model on another of its deployments."""
        if deployment is self.deployment:
            return self
        return Route(self.model_id, self.settings, self.deployments, deployment, self.attempts)

    def after(self, attempts: int) -> Route:
        """The route that answered after `attempts` attempts (over every candidate model of the request)."""
        return self if attempts == self.attempts else replace(self, attempts=attempts)


@lru_cache(maxsize=4096)
def deployments_of(model_id: str, model: ModelSettings) -> tuple[Deployment, ...]:
    """The model's deployments with their names, in the listed order (computed once per model's settings)."""
    return tuple(
        Deployment(name, deployment.provider, deployment.upstream_model or model_id, deployment)
        for name, deployment in zip(deployment_names(model_id, model), model_deployments(model_id, model), strict=True)
    )


def resolve(settings: Settings, model_id: Any, param: str = "model") -> Route:
    """The route for one public model id (on its first deployment), or 404 model_not_found."""
    if not isinstance(model_id, str) or not model_id:
        raise InvalidRequest("`model` must be a non-empty string.", param=param, code="missing_model")
    model = settings.models.get(model_id)
    if model is None:
        raise ModelNotFound(f"The model {model_id!r} does not exist.", param=param)
    return Route.of(model_id, model)


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
