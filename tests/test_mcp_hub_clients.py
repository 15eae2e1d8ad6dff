"""The MCP hub under `gateway serve` (gunicorn, 3 workers) on the embedded defaults, with real MCP clients.

The gateway starts in an empty folder on the embedded defaults (the time MCP server, the
`default/default` profile, the first key it prints); a layered config only points the `local`
provider at a scripted loopback model instead of llama.cpp. Clients: the `mcp` SDK (one
session, many requests, no connection reuse, so any worker may answer each), the MCP Inspector
CLI from npm (`MCP_INSPECTOR`, skipped without it) and `openai-agents` with
`MCPServerStreamableHttp` while its model is the gateway's own chat endpoint; and the shipped
nginx config in front of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import requests
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.fake_upstream import FakeUpstream, JsonReply, chat_completion
from tests.live_gateway import LiveGateway, live_gateway
from tests.mcp_hub_client import call, text_of, tool_names
from tests.test_deploy import NGINX
from tests.test_deploy import start_nginx as start_nginx_fixture  # noqa: F401 - a fixture

INSPECTOR = os.environ.get("MCP_INSPECTOR", "")
KEY_LINE = re.compile(r"created your first API key \(shown once\): (sk-gw-[A-Za-z0-9_-]{43})")
TIME = "time__get_current_time"
WORKERS = 3
BOUND_S = 60.0


@dataclass
class Embedded:
    """The served gateway: its /mcp URL, the first key, its config file, database and model."""

    base_url: str
    key: str
    config: Path
    database: Path
    model: FakeUpstream
    server: LiveGateway

    @property
    def hub(self) -> str:
        return f"{self.base_url}/mcp"

    def rows(self) -> list[tuple[str, str, int]]:
        """(model, endpoint, status) of every usage row, oldest first."""
        with sqlite3.connect(self.database) as connection:
            return connection.execute("SELECT model, endpoint, status FROM usage_entry ORDER BY id").fetchall()

    def cli(self, *argv: str) -> str:
        """Run `gateway ARGV --config CONFIG`; its output."""
        environment = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
        return subprocess.run([sys.executable, "-m", "gateway.cli", *argv, "--config", str(self.config)],
                              env=environment, capture_output=True, text=True, check=True, timeout=BOUND_S).stdout


def calls_the_time_tool(path: str, body: dict[str, Any]) -> JsonReply:
    """A model that calls `time__get_current_time` when offered it, then answers with its result."""
    results = [message["content"] for message in body.get("messages", []) if message.get("role") == "tool"]
    offered = {tool["function"]["name"] for tool in body.get("tools") or []}
    if results or TIME not in offered:
        return JsonReply(chat_completion("The time tool said: " + " | ".join(map(str, results))))
    call = {"id": "call_1", "type": "function",
            "function": {"name": TIME, "arguments": json.dumps({"timezone": "UTC"})}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return JsonReply(chat_completion(choices=[{"index": 0, "message": message, "finish_reason": "tool_calls"}]))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    folder = tmp_path_factory.mktemp("hub-served")
    model = FakeUpstream().start()
    model.responder = calls_the_time_tool
    tables = {"server": {"workers": WORKERS, "threads": 8},
              "database": {"url": f"sqlite:///{folder / 'gateway.db'}"},
              "providers": {"local": {"base_url": model.base_url, "command": [], "copies": 1}}}
    try:
        with live_gateway(folder, tables) as server:
            match = KEY_LINE.search(server.log.read_text())
            assert match, server.log.read_text()
            yield Embedded(f"http://127.0.0.1:{server.port}", match.group(1), server.config,
                           folder / "gateway.db", model, server)
    finally:
        model.stop()


def test_one_sdk_session_keeps_working_across_three_workers(embedded: Embedded) -> None:
    """Stateless hub: a session's requests may each land on another worker (no connection is reused)."""

    async def session() -> list[Any]:
        http = httpx2.AsyncClient(headers={"X-API-Key": embedded.key}, timeout=BOUND_S,
                                  limits=httpx2.Limits(max_keepalive_connections=0))
        async with http, Client(streamable_http_client(embedded.hub, http_client=http), mode="legacy",
                                cache=None) as client:
            listed = [tool.name for tool in (await client.list_tools()).tools]
            results = [await client.call_tool(TIME, {"timezone": "UTC"}) for _ in range(6)]
            return [listed, *results]

    listed, *results = asyncio.run(asyncio.wait_for(session(), BOUND_S))
    assert {TIME, "time__convert_time"} == set(listed)
    assert all(not result.is_error and '"timezone": "UTC"' in text_of(result) for result in results)
    assert embedded.rows().count(("time/get_current_time", "mcp", 200)) >= 6
    pids = {entry["pid"] for entry in access_lines(embedded.server.log) if entry["route"] == "/mcp"}
    assert pids and pids <= set(embedded.server.workers())  # answered by the workers, whichever they were


def test_a_key_of_another_scope_sees_and_calls_nothing(embedded: Embedded) -> None:
    other = json.loads(embedded.cli("keys", "create", "--name", "other", "--scope", "other", "--json"))["key"]
    assert tool_names(embedded.hub, other) == []
    with pytest.raises(MCPError, match="Unknown tool"):
        call(embedded.hub, other, TIME, {"timezone": "UTC"})
    # the same account scope, narrowed by an allow-list to nothing
    narrowed = json.loads(embedded.cli("keys", "create", "--name", "narrowed", "--scope", "default",
                                       "--mcp-servers", "", "--json"))
    assert narrowed["mcp_servers"] == [] and tool_names(embedded.hub, narrowed["key"]) == []
    updated = json.loads(embedded.cli("keys", "update", str(narrowed["id"]), "--mcp-servers", "time", "--json"))
    assert updated["mcp_servers"] == ["time"]
    deadline = time.monotonic() + BOUND_S  # each worker's key cache forgets it within [auth] key_cache_ttl_s
    while TIME not in tool_names(embedded.hub, narrowed["key"]):
        assert time.monotonic() < deadline
        time.sleep(0.5)


@pytest.mark.skipif(not INSPECTOR, reason="MCP_INSPECTOR (npm @modelcontextprotocol/inspector) is not set")
def test_the_mcp_inspector_cli_lists_and_calls_the_builtin_tools(embedded: Embedded) -> None:
    def inspector(*arguments: str) -> dict[str, Any]:
        command = [INSPECTOR, "--cli", embedded.hub, "--transport", "http",
                   "--header", f"Authorization: Bearer {embedded.key}", *arguments]
        done = subprocess.run(command, capture_output=True, text=True, timeout=BOUND_S, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    listed = inspector("--method", "tools/list")
    assert {tool["name"] for tool in listed["tools"]} == {TIME, "time__convert_time"}
    called = inspector("--method", "tools/call", "--tool-name", TIME, "--tool-arg", "timezone=Asia/Tokyo")
    assert not called.get("isError") and "Asia/Tokyo" in called["content"][0]["text"]


def test_an_openai_agent_on_the_gateways_chat_uses_the_hubs_tools(embedded: Embedded) -> None:
    from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
    from agents.mcp import MCPServerStreamableHttp
    from openai import AsyncOpenAI

    set_tracing_disabled(True)

    async def run() -> str:
        hub = MCPServerStreamableHttp({"url": embedded.hub, "headers": {"Authorization": f"Bearer {embedded.key}"}},
                                      client_session_timeout_seconds=BOUND_S)
        model = OpenAIChatCompletionsModel("smollm2", AsyncOpenAI(base_url=f"{embedded.base_url}/v1",
                                                                  api_key=embedded.key))
        async with hub:
            agent = Agent(name="clock", instructions="Use the tools.", model=model, mcp_servers=[hub])
            return (await Runner.run(agent, "What time is it in UTC?")).final_output

    answer = asyncio.run(asyncio.wait_for(run(), BOUND_S))
    assert answer.startswith("The time tool said: ") and '"timezone": "UTC"' in answer
    rows = embedded.rows()
    assert ("time/get_current_time", "mcp", 200) in rows and ("smollm2", "chat/completions", 200) in rows
    metrics = requests.get(f"{embedded.base_url}/metrics", timeout=10).text
    assert re.search(r'gateway_mcp_tool_calls_total\{outcome="ok",server="time"\} [1-9]', metrics)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_the_shipped_nginx_config_serves_the_hub(embedded: Embedded, request: pytest.FixtureRequest) -> None:
    front = request.getfixturevalue("start_nginx_fixture")(embedded.server.port)
    assert TIME in tool_names(f"{front}/mcp", embedded.key, mode="legacy")
    result = call(f"{front}/mcp", embedded.key, TIME, {"timezone": "UTC"})
    assert not result.is_error and '"timezone": "UTC"' in text_of(result)


def access_lines(log: Path) -> list[dict[str, Any]]:
    """The JSON access-log lines in the served gateway's output."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"time"')]

