"""Liveness, readiness, metrics and the root probe (no auth)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from gateway.observability import metrics
from gateway.observability.readiness import Readiness

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process answers."""
    return jsonify({"status": "ok"})


@bp.route("/", methods=["HEAD"])
@bp.route("/api", methods=["HEAD"])
def root_probe() -> Response:
    """200 without a body: the reachability probe Claude Code sends to its `ANTHROPIC_BASE_URL` (`/` or `/api`)."""
    return Response(status=200)


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when the database answers, an upstream is reachable and required MCP servers are up; else 503."""
    report = current_app.extensions[Readiness.EXTENSION].check(current_app)
    return jsonify(report.body()), (200 if report.ready else 503)


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text, summed over every worker process (see gateway.observability.multiprocess)."""
    text, content_type = metrics.render()
    return Response(text, content_type=content_type)
