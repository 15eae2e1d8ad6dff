"""What operators watch: Prometheus metrics, the JSON access log and app logs, traces, readiness."""

from __future__ import annotations

from flask import Flask

from gateway.config import Settings
from gateway.observability import access_log, tracing, wsgi_middleware
from gateway.observability.readiness import DeploymentStates, Readiness


def init_app(app: Flask, settings: Settings, deployment_states: DeploymentStates | None = None) -> None:
    """Wrap the WSGI app to observe every request; give the app its access log and readiness checks.

    `deployment_states`: the router's (gateway.upstream.router), so readiness counts a model ready while one
    of its deployments is.
    """
    access_log.init_app(app, settings.server.access_log)
    app.extensions[Readiness.EXTENSION] = Readiness(settings.server.ready_probe_ttl_s, deployment_states)
    tracing.init_app(app, settings.tracing)
    wsgi_middleware.init_app(app)


def close(app: Flask) -> None:
    """Flush and close what the app's observers own (idempotent)."""
    access_log.of(app).close()
    tracing.close()
