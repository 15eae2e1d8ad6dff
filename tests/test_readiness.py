"""/healthz and /readyz: the database, each model's reachable deployments (cached probe), required MCP servers.

The deployments' cooldowns in readiness: tests/test_deployment_ops.py.
"""

from __future__ import annotations

import sys

from gateway import create_app, db, lifecycle
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.ports import free_port


def free_port_url() -> str:
    """The base URL of a loopback port nobody listens on."""
    return f"http://127.0.0.1:{free_port()}/v1"


def readiness(settings):
    app = create_app(settings)
    db.upgrade()
    try:
        response = app.test_client().get("/readyz", buffered=True)
        return response.status_code, response.get_json()
    finally:
        lifecycle.close(app)


def test_ready_with_the_database_and_a_reachable_upstream(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200
    one_of_one = {"ready": True, "deployments": 1, "ready_deployments": 1}
    assert response.get_json() == {"status": "ready", "checks": {"database": True, "upstream:fake": True},
                                   "down": [], "models": {"test-model": one_of_one, "backup-model": one_of_one}}


def test_ready_while_one_upstream_of_two_answers(make_settings):
    status, body = readiness(make_settings(providers={"gone": {"base_url": free_port_url(), "timeout_s": 1}}))
    assert status == 200
    assert body["checks"]["upstream:gone"] is False and body["checks"]["upstream:fake"] is True


def test_unready_when_no_upstream_answers_and_ready_once_one_does(make_settings, fake_upstream):
    gone = {"base_url": free_port_url(), "timeout_s": 1}
    settings = make_settings(providers={"fake": gone}, models={"backup-model": {"provider": "fake"}})
    status, body = readiness(settings)
    assert status == 503
    assert body["status"] == "unavailable" and body["down"] == ["model:test-model", "model:backup-model"]
    assert body["checks"]["upstream:fake"] is False
    assert body["models"]["test-model"] == {"ready": False, "deployments": 1, "ready_deployments": 0}


def test_a_required_mcp_server_that_is_down_is_named(make_settings):
    servers = {"tools": {"command": sys.executable, "args": [TOOL_SERVER]},
               "broken": {"command": sys.executable, "args": ["-c", "raise SystemExit(3)"], "required": True}}
    status, body = readiness(make_settings(mcpServers=servers, mcp={"connect_timeout_s": 2}))
    assert status == 503 and body["down"] == ["mcp:broken"]
    assert "mcp:tools" not in body["checks"]  # not required


def test_unready_without_the_database(make_settings, tmp_path):
    settings = make_settings(database={"url": f"sqlite:///{tmp_path / 'missing' / 'no.db'}"})
    app = create_app(settings)
    try:
        response = app.test_client().get("/readyz", buffered=True)
    finally:
        lifecycle.close(app)
    assert response.status_code == 503 and response.get_json()["down"] == ["database"]
