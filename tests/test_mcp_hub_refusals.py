"""The hub's refusals speak MCP: a JSON-RPC error body that MCP clients show, and no OAuth detour.

The `mcp` SDK client and the MCP Inspector CLI (`MCP_INSPECTOR`, skipped without it) each get a bad key.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import requests
from mcp.shared.exceptions import MCPError

from tests.mcp_hub_client import tool_names

INSPECTOR = os.environ.get("MCP_INSPECTOR", "")
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "probe", "version": "1"}}}
HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
def settings(make_settings):
    return make_settings(mcpServers={"time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}},
                         profiles={"acme/default": {"mcp_servers": ["time"]}})


@pytest.mark.parametrize("key", [None, "sk-gw-wrong"])
def test_a_refused_key_gets_a_json_rpc_error_with_the_challenge(live_server, key):
    headers = {**HEADERS, **({"Authorization": f"Bearer {key}"} if key else {})}
    answer = requests.post(f"{live_server}/mcp", json=INITIALIZE, headers=headers, timeout=10)
    assert answer.status_code == 401 and answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    body = answer.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    assert body["error"]["code"] == -32001 and "API key" in body["error"]["message"]
    assert body["error"]["data"] == {"type": "authentication_error", "code": "invalid_api_key", "param": None,
                                     "status": 401}


def test_other_hub_refusals_are_json_rpc_errors_too(live_server, make_key):
    headers = {**HEADERS, "Authorization": f"Bearer {make_key('acme', scope='acme')}"}
    missing = requests.post(f"{live_server}/mcp/acme/missing", json=INITIALIZE, headers=headers, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["data"]["code"] == "profile_not_found"
    assert missing.json()["error"]["code"] == -32000


def test_the_sdk_client_shows_the_reason(live_server):
    with pytest.raises(MCPError) as refused:
        tool_names(f"{live_server}/mcp", "sk-gw-wrong")
    assert "API key" in str(refused.value) and "Server returned an error response" not in str(refused.value)


def test_no_oauth_is_advertised_while_api_keys_are_the_only_way_in(live_server):
    answer = requests.post(f"{live_server}/mcp", json=INITIALIZE, headers=HEADERS, timeout=10)
    assert "resource_metadata" not in answer.headers["WWW-Authenticate"]
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp",
                 "/.well-known/oauth-authorization-server"):
        assert requests.get(live_server + path, timeout=10).status_code == 404, path


@pytest.mark.skipif(not INSPECTOR, reason="MCP_INSPECTOR (npm @modelcontextprotocol/inspector) is not set")
def test_the_inspector_cli_shows_the_reason(live_server):
    """Inspector 2.x takes any 401 on HTTP for an OAuth prompt; `--stored-auth-only` shows the gateway's reason."""
    command = [INSPECTOR, "--cli", f"{live_server}/mcp", "--transport", "http", "--stored-auth-only",
               "--header", "Authorization: Bearer sk-gw-wrong", "--method", "tools/list"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "Invalid API key." in done.stdout + done.stderr, (done.stdout + done.stderr)[-2000:]
