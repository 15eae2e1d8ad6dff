"""Secrets (API keys, the admin token, MCP tokens, upstream keys) never in stored rows, logs or answers.

The stored-rows test reads every table of the database after keys were created and used; the
log test runs a whole scenario through the real `gateway serve` with JSON logs and the access
log on stderr, and searches everything the process wrote.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway import db
from tests.fake_upstream import FakeUpstream
from tests.live_gateway import live_gateway
from tests.mcp_fixtures.launch import http_tool_server
from tests.scripted_model import ScriptedModel

ADMIN_TOKEN = "adm-9c1d7e5f3a2b4c6d"
MCP_TOKEN = "mcp-tok-4e8a2c6b0d1f3e5a"
BUILTIN_MCP_TOKEN = "mcp-builtin-7b3d9f1e5c2a"
UPSTREAM_KEY = "upstream-key-2f6a8c0e4b1d"
WRONG_KEY = "sk-gw-WRONGwrongWRONGwrongWRONGwrongWRONGwron"
PREFIX = len("sk-gw-") + 6  # the display prefix the admin API shows and the api_key table keeps


def secret_pieces(secret: str) -> list[str]:
    """Every 8-character piece of an API key beyond its display prefix (any one would be a leak)."""
    hidden = secret[PREFIX:]
    return [hidden[start:start + 8] for start in range(len(hidden) - 7)]


def leaks(text: str, api_keys: list[str], tokens: list[str]) -> list[str]:
    """The secrets, or pieces of them, found in `text`."""
    found = [token for token in tokens if token in text]
    return found + [piece for secret in api_keys for piece in secret_pieces(secret) if piece in text]


def every_row() -> str:
    """Every row of every table in the database, as text."""
    dumped = []
    with db.database.connection_context():
        for table in db.database.get_tables():
            cursor = db.database.execute_sql(f'SELECT * FROM "{table}"')
            dumped += [f"{table}: {row!r}" for row in cursor.fetchall()]
    return "\n".join(dumped)


def sqlite_bytes(database_url: str) -> bytes:
    """The SQLite database file and its write-ahead log, raw (freed pages included)."""
    path = Path(database_url.removeprefix("sqlite:///"))
    return b"".join(part.read_bytes() for part in (path, Path(f"{path}-wal")) if part.exists())


@pytest.fixture
def settings(make_settings, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    return make_settings(mcp={"remote_url_checks": False, "tool_timeout_s": 5})


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_keys_are_stored_only_hashed_in_every_table(client, make_key, fake_upstream, database_url, caplog):
    caplog.set_level(logging.DEBUG)  # and no log record holds them, at any level, from any library
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = client.post("/admin/keys", json={"name": "made-by-admin", "credits": 5}, headers=admin).json
    secrets = [make_key("made-directly"), created["key"]]
    fake_upstream.responder = ScriptedModel([("mcp__remote__echo", {"text": "hello"})])
    with http_tool_server() as (url, _):
        for secret in secrets:
            auth = {"Authorization": f"Bearer {secret}"}
            chat = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
            assert client.post("/v1/chat/completions", json=chat, headers=auth).status_code == 200
            tool = {"type": "mcp", "server_label": "remote", "server_url": url, "authorization": MCP_TOKEN,
                    "require_approval": "never", "headers": {"X-Tenant": MCP_TOKEN}}
            answer = client.post("/v1/responses", json={"model": "test-model", "input": "go", "tools": [tool]},
                                 headers={"X-API-Key": secret})
            assert answer.status_code == 200 and answer.json["output"][0]["type"] == "mcp_list_tools", answer.json
            conversation = client.post("/v1/conversations", json={"metadata": {"k": "v"}}, headers=auth)
            assert conversation.status_code == 200
    assert client.post("/v1/chat/completions", json={}, headers={"X-API-Key": WRONG_KEY}).status_code == 401

    stored = every_row()
    assert "made-by-admin" in stored and "mcp_list_tools" in stored  # the search reads what was written
    # The key's digest and display prefix are stored (a key is looked up by its digest), nothing more.
    assert not leaks(stored, [*secrets, WRONG_KEY], [MCP_TOKEN, ADMIN_TOKEN])
    if database_url.startswith("sqlite:///"):
        raw = sqlite_bytes(database_url).decode("latin-1")
        assert not leaks(raw, [*secrets, WRONG_KEY], [MCP_TOKEN, ADMIN_TOKEN])
    logged = "\n".join(f"{record.name} {record.getMessage()} {record.args!r}" for record in caplog.records)
    assert "mcp" in logged and not leaks(logged, [*secrets, WRONG_KEY], [MCP_TOKEN, ADMIN_TOKEN])


def test_a_whole_scenario_logs_and_answers_no_secret(tmp_path, monkeypatch):
    """chat, stream, Responses with a token-carrying remote MCP server and a built-in one with a
    token header, admin calls, failed authentication: every line the server wrote, and every answer."""
    monkeypatch.setenv("SCENARIO_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("SCENARIO_UPSTREAM_KEY", UPSTREAM_KEY)
    upstream = FakeUpstream().start()
    upstream.responder = ScriptedModel([("mcp__remote__echo", {"text": "a"}), ("mcp__docs__add", {"a": 1, "b": 2})])
    with http_tool_server() as (mcp_url, _):  # declared per request ("remote") and built in ("docs")
        tables = {
            "server": {"workers": 1, "threads": 8, "log_format": "json", "access_log": "-"},
            "database": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
            "admin": {"token_env": "SCENARIO_ADMIN_TOKEN"},
            "providers": {"fake": {"base_url": upstream.base_url, "api_key_env": "SCENARIO_UPSTREAM_KEY"}},
            "models": {"test-model": {"provider": "fake", "output_price_per_mtok": 1000}},
            "mcpServers": {"docs": {"url": mcp_url, "headers": {"Authorization": f"Bearer {BUILTIN_MCP_TOKEN}"}}},
            "mcp": {"remote_url_checks": False},
        }
        try:
            with live_gateway(tmp_path, tables) as server:
                answers, api_keys, lines = run_scenario(f"http://127.0.0.1:{server.port}", mcp_url)
                stored = every_row_of(f"sqlite:///{tmp_path / 'gateway.db'}")
        finally:
            upstream.stop()
    written = server.log_text()
    tokens = [ADMIN_TOKEN, MCP_TOKEN, BUILTIN_MCP_TOKEN, UPSTREAM_KEY]

    records = [json.loads(line) for line in written.splitlines() if line.startswith("{")]
    access = [record for record in records if "route" in record and record["path"] != "/healthz"]
    assert len(access) == lines, written  # the capture holds every request's access line
    assert {record["status"] for record in access} >= {200, 201, 401}
    assert any(record.get("logger", "").startswith("gunicorn") for record in records)
    assert not leaks(written, [*api_keys, WRONG_KEY], tokens)
    assert not leaks(answers, [*api_keys, WRONG_KEY], tokens)
    assert not leaks(stored, [*api_keys, WRONG_KEY], tokens)
    headers_sent = [headers for _, _, headers in upstream.requests]
    assert headers_sent and all(h.get("Authorization") == f"Bearer {UPSTREAM_KEY}" for h in headers_sent)


def run_scenario(base: str, remote_url: str) -> tuple[str, list[str], int]:
    """Every kind of request once; returns the answers' text (the one that creates a key left out),
    the keys, and the number of requests made."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    made = requests.post(f"{base}/admin/keys", json={"name": "scenario", "credits": 10}, headers=admin, timeout=30)
    assert made.status_code == 201, made.text
    secret = made.json()["key"]
    assert leaks(made.text, [secret], [])  # the one answer that shows a key: the search finds it
    bearer, header = {"Authorization": f"Bearer {secret}"}, {"X-API-Key": secret}
    chat = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    calls: list[tuple[str, str, dict[str, str], Any, int]] = [
        ("POST", "/v1/chat/completions", bearer, chat, 200),
        ("POST", "/v1/chat/completions", header, {**chat, "stream": True}, 200),
        ("POST", "/api/v1/chat/completions", bearer, chat, 200),
        ("POST", "/v1/chat/completions", {"Authorization": f"Bearer {WRONG_KEY}"}, chat, 401),
        ("POST", "/v1/chat/completions", {"X-API-Key": WRONG_KEY}, chat, 401),
        ("GET", "/v1/models", {"Authorization": f"Basic {WRONG_KEY}"}, None, 401),
        ("GET", "/admin/keys", {"Authorization": f"Bearer {WRONG_KEY}"}, None, 401),
        ("GET", "/admin/keys", {"Authorization": f"Bearer {MCP_TOKEN}"}, None, 401),
        ("GET", "/admin/keys", admin, None, 200),
        ("GET", "/quota", bearer, None, 200),
    ]
    texts = []
    for method, path, headers, body, status in calls:
        answer = requests.request(method, f"{base}{path}", json=body, headers=headers, timeout=30)
        assert answer.status_code == status, (path, answer.text)
        texts.append(answer.text)
    texts += responses_calls(base, bearer, header, remote_url)
    revoked = requests.delete(f"{base}/admin/keys/{made.json()['id']}", headers=admin, timeout=30)
    after = requests.post(f"{base}/v1/chat/completions", json=chat, headers=bearer, timeout=30)
    assert revoked.status_code == 200 and after.status_code == 401
    texts += [revoked.text, after.text]
    return "\n".join(texts), [secret], 1 + len(texts)


def responses_calls(base: str, bearer: dict[str, str], header: dict[str, str], remote_url: str) -> list[str]:
    """Responses with the remote server (token, header) and the built-in one, streamed and not; one read back."""
    remote = {"type": "mcp", "server_label": "remote", "server_url": remote_url, "authorization": MCP_TOKEN,
              "headers": {"X-Tenant": MCP_TOKEN}, "require_approval": "never"}
    tools = [remote, {"type": "mcp", "server_label": "docs", "require_approval": "never"}]
    texts = []
    for headers, stream in ((bearer, False), (header, True)):
        body = {"model": "test-model", "input": "go", "tools": tools, "stream": stream}
        answer = requests.post(f"{base}/v1/responses", json=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        assert "mcp_call" in answer.text and "Tools said" in answer.text
        texts.append(answer.text)
        if not stream:
            stored = requests.get(f"{base}/v1/responses/{answer.json()['id']}", headers=bearer, timeout=30)
            assert stored.status_code == 200
            texts.append(stored.text)
    return texts


def every_row_of(database_url: str) -> str:
    """Every row of every table of another process's SQLite database, and its raw bytes."""
    database = db.open_database(database_url, pool_size=1)
    with database.connection_context():
        rows = [repr(database.execute_sql(f'SELECT * FROM "{table}"').fetchall())
                for table in database.get_tables()]
    database.close_all()
    return "\n".join(rows) + sqlite_bytes(database_url).decode("latin-1")
