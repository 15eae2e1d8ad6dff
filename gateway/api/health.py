"""Liveness, readiness and metrics (no auth)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from gateway.db import database

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The database answers and every supervised model process is ready."""
    checks = {"database": _database_ok()}
    for name, process in current_app.extensions["gateway.processes"].items():
        checks[f"provider:{name}"] = process.is_ready()
    ready = all(checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), (200 if ready else 503)


def _database_ok() -> bool:
    try:
        database.execute_sql("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False
    return True


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text for this worker."""
    text = current_app.extensions["gateway.metrics"].render()
    return Response(text, mimetype="text/plain; version=0.0.4")
