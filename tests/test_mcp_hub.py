"""The MCP hub at /mcp: the `mcp` SDK's streamable-HTTP client against a live gateway.

One gateway for the module (its MCP servers start once), two built-in stdio servers: `tools`
(the fixture server, only for scope `acme`) and `time` (mcp-server-time, for every scope).
Profiles: `acme/default` has both, `beta/default` has `time`. Each test makes its own keys.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from mcp.shared.exceptions import MCPError
from werkzeug.serving import make_server

from gateway import create_app, db, lifecycle
from gateway.accounting.credits import grant_credits, summarize
from gateway.accounting.keys import create_key
from gateway.config import build_settings
from gateway.tables import Account, ApiKey, UsageEntry
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.mcp_hub_client import call, text_of, tool_names, with_hub

ECHO, FAIL, SLOW = "tools__echo", "tools__fail", "tools__slow"
TIME, CONVERT = "time__get_current_time", "time__convert_time"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Flask]]:
    """The module's gateway on a threaded WSGI server: its base URL and app."""
    folder = tmp_path_factory.mktemp("hub")
    settings = build_settings({
        "database": {"url": f"sqlite:///{folder / 'hub.db'}"},
        "providers": {"none": {"base_url": "http://127.0.0.1:9/v1"}},
        "models": {"unused": {"provider": "none"}},
        "mcpServers": {
            "tools": {"command": sys.executable, "args": [TOOL_SERVER, "stdio"], "scopes": ["acme"],
                      "tool_prices": {"add": 0.25}},
            "time": {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]},
        },
        "profiles": {"acme/default": {"mcp_servers": ["tools", "time"]}, "beta/default": {"mcp_servers": ["time"]}},
        "mcp": {"tool_timeout_s": 1.5},
        "server": {"access_log": str(folder / "access.log")},
    })
    app = create_app(settings)
    db.upgrade()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        server.server_close()
        lifecycle.close(app)


@pytest.fixture
def live_server(served: tuple[str, Flask]) -> str:
    db.bind(served[1].extensions["gateway.settings"].database.url)  # other modules' apps rebind the proxy
    return served[0]


@pytest.fixture
def hub(live_server: str) -> str:
    return f"{live_server}/mcp"


@pytest.fixture
def client(served: tuple[str, Flask]) -> FlaskClient:
    return served[1].test_client()


class Keys:
    """Keys made by one test (each with its own account), and their usage rows."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def __call__(self, name: str = "tester", **options: Any) -> str:
        with db.database.connection_context(), db.database.atomic():
            key, secret = create_key(name, **options)
        self.ids.append(key.id)
        return secret

    def rows(self) -> list[UsageEntry]:
        """This test's `mcp` usage rows, oldest first."""
        with db.database.connection_context():
            return list(UsageEntry.select().where((UsageEntry.endpoint == "mcp") & UsageEntry.api_key.in_(self.ids))
                        .order_by(UsageEntry.id))


@pytest.fixture
def make_key(live_server: str) -> Keys:
    return Keys()


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-era requests, and the initialize handshake
def test_lists_and_calls_namespaced_tools_and_meters_each_call(served, hub, make_key, mode):
    access_log = served[1].extensions["gateway.settings"].server.access_log
    key = make_key("acme", scope="acme")
    names = tool_names(hub, key, mode)
    assert {ECHO, FAIL, "tools__add", TIME} <= set(names)
    assert all(name.startswith(("tools__", "time__")) for name in names)

    result = call(hub, key, ECHO, {"text": "hello hub"}, mode)
    assert not result.is_error and text_of(result) == "hello hub"
    failed = call(hub, key, FAIL, {"message": "it broke"}, mode)
    assert failed.is_error and "it broke" in text_of(failed)

    rows = make_key.rows()
    assert [(row.model, row.status, row.cost) for row in rows] == [("tools/echo", 200, 0), ("tools/fail", 502, 0)]
    assert all(row.prompt_tokens == 0 and row.latency_ms >= 0 for row in rows)
    metrics = requests.get(hub.replace("/mcp", "/metrics"), timeout=10).text
    assert 'gateway_mcp_tool_calls_total{outcome="ok",server="tools"}' in metrics
    assert 'gateway_mcp_tool_calls_total{outcome="error",server="tools"}' in metrics
    assert 'gateway_requests_total{method="POST",model="tools/echo",route="/mcp",status="200"}' in metrics
    lines = [json.loads(line) for line in Path(access_log).read_text().splitlines()]
    calls = [(line["model"], line["status"]) for line in lines if line["key_id"] == make_key.ids[-1]]
    assert ("tools/echo", 200) in calls and ("tools/fail", 200) in calls  # a tool error is an MCP answer


def test_unauthenticated_requests_get_401_with_a_json_rpc_error_and_no_oauth_metadata(hub, live_server, make_key):
    answer = requests.post(hub, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["data"]["type"] == "authentication_error"
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="mcp"') and "resource_metadata" not in challenge
    wrong = requests.post(hub, headers={"X-API-Key": "sk-gw-wrong"}, json={}, timeout=10)
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]

    assert requests.get(f"{live_server}/.well-known/oauth-protected-resource/mcp", timeout=10).status_code == 404
    with pytest.raises(MCPError, match="Missing API key"):  # the SDK client shows the gateway's reason
        tool_names(hub, None)  # type: ignore[arg-type]
    assert requests.get(hub, headers={"X-API-Key": make_key()}, timeout=10).status_code == 405


def test_a_key_of_another_scope_neither_sees_nor_calls_the_servers_it_may_not_use(hub, make_key):
    beta = make_key("beta", scope="beta")
    assert set(tool_names(hub, beta)) == {TIME, CONVERT}
    with pytest.raises(MCPError, match="Unknown tool"):
        call(hub, beta, ECHO, {"text": "not yours"})
    assert tool_names(hub, make_key("no scope")) == []
    everything = make_key("root", scope="*")
    assert ECHO in tool_names(hub, everything)
    assert make_key.rows() == []


def test_the_per_key_allow_list_narrows_what_the_scope_allows(client, hub, make_key, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "hub-admin")
    admin = {"Authorization": "Bearer hub-admin"}
    key = make_key("narrow", scope="acme")
    key_id = make_key.ids[-1]
    assert ECHO in tool_names(hub, key)  # cached by the worker: the change below must reach it anyway
    changed = client.patch(f"/admin/keys/{key_id}", headers=admin, json={"mcp_servers": ["time"]})
    assert changed.status_code == 200 and changed.get_json()["mcp_servers"] == ["time"]
    assert set(tool_names(hub, key)) == {TIME, CONVERT}
    with pytest.raises(MCPError, match="Unknown tool"):
        call(hub, key, ECHO, {"text": "filtered"})
    unknown = client.patch(f"/admin/keys/{key_id}", headers=admin, json={"mcp_servers": ["nope"]})
    assert unknown.status_code == 400 and unknown.get_json()["error"]["param"] == "mcp_servers"
    assert client.patch(f"/admin/keys/{key_id}", headers=admin, json={"mcp_servers": None}).status_code == 200
    assert ECHO in tool_names(hub, key)
    # an allow-list never widens the scope: `tools` stays out of reach of scope beta
    created = client.post("/admin/keys", headers=admin, json={"name": "b", "scope": "beta", "mcp_servers": ["tools"]})
    assert created.status_code == 201 and tool_names(hub, created.get_json()["key"]) == []


def test_profile_route_serves_exactly_one_profile(live_server, make_key):
    acme = make_key("acme", scope="acme")
    assert set(tool_names(f"{live_server}/mcp/beta/default", make_key("beta", scope="beta"))) == {
        TIME, CONVERT}
    assert ECHO in tool_names(f"{live_server}/mcp/acme/default", acme)
    answer = requests.post(f"{live_server}/mcp/beta/default", headers={"Authorization": f"Bearer {acme}"},
                           json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert answer.status_code == 404 and answer.json()["error"]["data"]["code"] == "profile_not_found"


def test_a_hanging_tool_is_a_tool_error_within_the_configured_timeout(hub, make_key):
    key = make_key("acme", scope="acme")
    result = call(hub, key, SLOW, {"seconds": 30})
    assert result.is_error and "timed out after 1.5s" in text_of(result)
    assert call(hub, key, ECHO, {"text": "still here"}).content[0].text == "still here"
    assert [(row.model, row.status) for row in make_key.rows()] == [("tools/slow", 502), ("tools/echo", 200)]


def test_each_call_counts_against_the_keys_rpm(hub, make_key):
    key = make_key("limited", scope="acme", rpm=2)

    async def three_calls(client: Any) -> list[Any]:
        return [await client.call_tool(ECHO, {"text": str(n)}) for n in range(3)]

    results = with_hub(hub, key, three_calls)
    assert [result.is_error for result in results] == [False, False, True]
    assert "Rate limit reached on requests per min (RPM)" in text_of(results[2])
    assert [(row.status, row.cost) for row in make_key.rows()] == [(200, 0), (200, 0), (429, 0)]


def test_a_priced_tool_is_held_then_charged_and_refused_without_credits(hub, make_key):
    key = make_key("payer", scope="acme")
    with db.database.connection_context():
        account_id = ApiKey.get_by_id(make_key.ids[-1]).account_id
        grant_credits(account_id, 500_000)  # 0.5 credits: two calls at 0.25
    results = [call(hub, key, "tools__add", {"a": 2, "b": 3}) for _ in range(3)]
    assert [text_of(result) for result in results[:2]] == ["5", "5"]
    assert results[2].is_error and "Insufficient balance" in text_of(results[2])
    assert [(row.model, row.status, row.cost) for row in make_key.rows()] == [
        ("tools/add", 200, 250_000), ("tools/add", 200, 250_000), ("tools/add", 402, 0)]
    with db.database.connection_context():
        assert summarize(Account.get_by_id(account_id)).balance == 0  # charge == calls x price


def test_tools_list_follows_the_servers_list_changed(hub, make_key):
    key = make_key("acme", scope="acme")
    assert "tools__added" not in tool_names(hub, key)
    assert text_of(call(hub, key, "tools__grow", {})) == "grown"
    deadline = time.monotonic() + 20
    while "tools__added" not in tool_names(hub, key):
        assert time.monotonic() < deadline, "the hub never listed the tool the server added"
        time.sleep(0.2)
    assert text_of(call(hub, key, "tools__added", {})) == "added"


def test_resources_and_prompts_are_refused_as_unknown_methods(hub, make_key):
    key = make_key("acme", scope="acme")

    async def capabilities_and_refusals(client: Any) -> tuple[Any, list[str]]:
        refusals = []
        for attempt in (client.list_resources, client.list_prompts):
            try:
                await attempt()
            except MCPError as exc:
                refusals.append(exc.error.message)
        return client.server_capabilities, refusals

    capabilities, refusals = with_hub(hub, key, capabilities_and_refusals, mode="legacy")
    assert capabilities.tools is not None and capabilities.resources is None and capabilities.prompts is None
    assert refusals == ["Method not found", "Method not found"]


def test_a_server_that_crashes_mid_call_is_a_tool_error_and_comes_back(hub, make_key):
    key = make_key("acme", scope="acme")
    crashed = call(hub, key, "tools__crash", {})
    assert crashed.is_error and "crash" in text_of(crashed)
    # the worker restarts the server: meanwhile its tools are tool errors naming it, not unknown tools
    deadline = time.monotonic() + 30
    while (answer := call(hub, key, ECHO, {"text": "back"})).is_error:
        assert "MCP server 'tools' is" in text_of(answer)
        assert time.monotonic() < deadline, text_of(answer)
        time.sleep(0.2)
    assert text_of(answer) == "back"
    assert make_key.rows()[0].status == 502
