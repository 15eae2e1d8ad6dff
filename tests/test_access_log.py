"""The JSON access log (one line per request, no secret) and JSON application logs."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.observability.logs import JsonFormatter, logging_config
from gateway.observability.wsgi_middleware import CURRENT, RequestRecord
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.scripted_model import ScriptedModel

ADMIN_TOKEN = "adm-token-5f4e3d2c1b0a"
UPSTREAM_SECRET = "upstream-secret-0a1b2c3d4e"
FIELDS = {"time", "request_id", "method", "route", "path", "status", "account_id", "key_id", "model", "provider",
          "input_tokens", "output_tokens", "cost", "duration_ms", "ttfb_ms", "ttft_ms", "stream", "fallbacks",
          "remote_addr", "user_agent", "pid"}


@pytest.fixture
def settings(make_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_SECRET)
    return make_settings(
        server={"access_log": str(tmp_path / "access.log")},
        providers={"fake": {"api_key_env": "FAKE_UPSTREAM_KEY"}},
        models={"test-model": {"provider": "fake", "output_price_per_mtok": 1_000_000}},
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]}},
    )


def test_one_line_per_request_with_its_accounting_and_no_secret(app, client, fake_upstream, tmp_path):
    with db.database.connection_context(), db.database.atomic():
        key, secret = create_key("logged")
        credits.grant_credits(key.account_id, credits.to_micro(100))
    auth = {"Authorization": f"Bearer {secret}"}
    chat = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    tool = {"type": "mcp", "server_label": "tools", "require_approval": "never"}
    requests = [
        ("POST", "/v1/chat/completions", chat, auth, 200),
        ("POST", "/v1/chat/completions", {**chat, "stream": True}, {"X-API-Key": secret}, 200),
        ("GET", "/v1/models", None, auth, 200),
        ("POST", "/v1/chat/completions", chat, {"Authorization": "Bearer sk-gw-wrong-key-1234567890"}, 401),
        ("GET", f"/admin/keys?token={ADMIN_TOKEN}", None, {"Authorization": f"Bearer {ADMIN_TOKEN}"}, 200),
        ("GET", "/healthz", None, {}, 200),
    ]
    for method, path, body, headers, status in requests:
        response = client.open(path, method=method, json=body, headers=headers, buffered=True)
        assert response.status_code == status, response.get_data(as_text=True)
    fake_upstream.responder = ScriptedModel([("mcp__tools__echo", {"text": "a"})])
    response = client.post("/v1/responses", json={"model": "test-model", "input": "go", "tools": [tool],
                                                  "max_output_tokens": 50}, headers=auth, buffered=True)
    assert response.status_code == 200

    text = (tmp_path / "access.log").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == len(requests) + 1
    assert all(set(line) == FIELDS for line in lines)
    for secret_value in (secret, secret[len("sk-gw-"):], ADMIN_TOKEN, UPSTREAM_SECRET, "sk-gw-wrong-key"):
        assert secret_value not in text
    chat_json, chat_stream, models, refused, admin, health, responses = lines
    assert [line["status"] for line in lines] == [status for *_, status in requests] + [200]
    assert chat_json["route"] == "/v1/chat/completions" and chat_json["key_id"] == key.id
    assert (chat_json["model"], chat_json["provider"], chat_json["input_tokens"], chat_json["output_tokens"]) \
        == ("test-model", "fake", 11, 7)
    assert chat_json["cost"] == 7 and not chat_json["stream"] and chat_json["ttft_ms"] is None
    assert chat_stream["stream"] and chat_stream["ttfb_ms"] <= chat_stream["duration_ms"]
    assert chat_stream["ttft_ms"] is not None and chat_stream["cost"] == 7
    assert refused["key_id"] is None and refused["account_id"] is None
    assert admin["path"] == "/admin/keys" and health["model"] is None
    assert responses["route"] == "/v1/responses" and responses["output_tokens"] == 10  # two turns of 5
    assert models["request_id"] and len({line["request_id"] for line in lines}) == len(lines)


def test_the_log_can_be_turned_off(make_settings, tmp_path):
    from gateway import create_app, lifecycle

    app = create_app(make_settings(server={"access_log": ""}))
    try:
        assert app.test_client().get("/healthz", buffered=True).status_code == 200
    finally:
        lifecycle.close(app)
    assert not list(tmp_path.glob("*.log"))


def test_json_app_logs_carry_the_request_id(settings):
    config = logging_config(settings.model_copy(update={"server": settings.server.model_copy(
        update={"log_format": "json"})}))
    assert config["formatters"]["json"]["()"] is JsonFormatter
    assert set(config["loggers"]) == {"gunicorn.error", "gunicorn.access"}
    assert logging_config(settings) is None
    token = CURRENT.set(RequestRecord("GET", "/x", None, "", request_id="req-42"))
    try:
        record = logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
        line = json.loads(JsonFormatter().format(record))
    finally:
        CURRENT.reset(token)
    assert line["message"] == "hello there" and line["level"] == "warning" and line["request_id"] == "req-42"
