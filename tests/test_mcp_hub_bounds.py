"""Real gunicorn, one worker of 8 threads: one key's 20 calls to a hanging hub tool no longer stall another
tenant's chat. The hub's calls hold at most `[mcp] hub_thread_share` of the threads; the rest get a 429
carrying a JSON-RPC error.

On the old code the 20 calls took all 8 threads until the tool timeout, and the other tenant's chat
waited behind them.
"""

from __future__ import annotations

import sys
import threading

import pytest
import requests
from mcp.shared.exceptions import MCPError

from gateway import db
from gateway.accounting.keys import create_key
from tests.live_gateway import live_gateway
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.mcp_hub_client import call
from tests.test_graceful_restarts import wait_for

CALLS = 20
HELD = 4  # hub_thread_share 0.5 of 8 threads
HUB_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-11-25"}


class ToolCall(threading.Thread):
    """One `tools/call` of the hanging tool, as a raw JSON-RPC POST; its answer once it has one."""

    def __init__(self, url: str, secret: str, call_id: int) -> None:
        super().__init__(daemon=True)
        self.url, self.secret, self.call_id = url, secret, call_id
        self.answer: requests.Response | None = None

    def run(self) -> None:
        body = {"jsonrpc": "2.0", "id": self.call_id, "method": "tools/call",
                "params": {"name": "tools__slow", "arguments": {"seconds": 600}}}
        try:
            self.answer = requests.post(f"{self.url}/mcp", json=body, timeout=120,
                                        headers={**HUB_HEADERS, "Authorization": f"Bearer {self.secret}"})
        except requests.RequestException:
            pass  # the gateway stopped with the call still held


def test_hanging_hub_calls_leave_threads_for_another_tenant(tmp_path, fake_upstream):
    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    db.bind(database)
    db.upgrade()
    with db.database.connection_context():
        _, caller = create_key("tool user", scope="acme")
        _, other = create_key("other tenant")
    tables = {
        "database": {"url": database},
        "providers": {"fake": {"base_url": fake_upstream.base_url}},
        "models": {"test-model": {"provider": "fake"}},
        "mcpServers": {"tools": {"command": sys.executable, "args": [TOOL_SERVER, "stdio"]}},
        "profiles": {"acme/default": {"mcp_servers": ["tools"]}},
        "mcp": {"tool_timeout_s": 300},
    }
    with live_gateway(tmp_path, tables, workers=1, threads=8, graceful=False) as server:
        calls = [ToolCall(server.base_url, caller, call_id) for call_id in range(CALLS)]
        for held in calls:
            held.start()
        wait_for(lambda: sum(held.answer is not None for held in calls) >= CALLS - HELD, "the refusals")
        chat = requests.post(f"{server.base_url}/v1/chat/completions", timeout=60,
                             headers={"Authorization": f"Bearer {other}"},
                             json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]})
        with pytest.raises(MCPError, match="hub_thread_share") as sdk_refusal:  # the SDK shows the reason
            call(f"{server.base_url}/mcp", caller, "tools__echo", {"text": "one more"})
        still_held = [held for held in calls if held.answer is None]
        refused = [held.answer for held in calls if held.answer is not None]
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
    assert len(still_held) == HELD, [(a.status_code, a.text[:300]) for a in refused[:3]]
    assert {answer.status_code for answer in refused} == {429}
    error = refused[0].json()
    assert error["jsonrpc"] == "2.0" and isinstance(error["id"], int)
    assert error["error"]["code"] == -32000 and error["error"]["data"]["code"] == "too_many_tool_calls"
    assert "hub_thread_share" in error["error"]["message"] and refused[0].headers["Retry-After"] == "1"
    assert sdk_refusal.value.error.code == -32000
