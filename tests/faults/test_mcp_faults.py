"""MCP faults: a built-in stdio server that dies mid-call, hangs past the tool timeout or answers garbage.

The model gets the failure as the tool's result, the client gets a clean 200 (never a hang or a
500), every turn is billed, and the next request works: the gateway restarts a dead server.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.faults.books import Payer, audit
from tests.faults.conftest import PRICED
from tests.scripted_model import ScriptedModel

FAULTY_SERVER = str(Path(__file__).with_name("faulty_mcp_server.py"))
TOOL_TIMEOUT_S = 1
RESTART_WAIT_S = 20
TURN_USAGE = (20, 5)  # what ScriptedModel reports for each turn
CHAT = {"model": "paid-model", "messages": [{"role": "user", "content": "use the tool"}], "tools": "auto"}
# fault -> what the tool result the model sees must say
FAULTS = {"crash": "closed", "hang": f"timed out after {TOOL_TIMEOUT_S}s", "garbage": "failed"}


@pytest.fixture
def settings(make_settings):
    return make_settings(
        mcpServers={"faulty": {"command": sys.executable, "args": [FAULTY_SERVER]}},
        profiles={"acme/default": {"mcp_servers": ["faulty"]}},
        mcp={"default_profile": "acme/default", "tool_timeout_s": TOOL_TIMEOUT_S},
        models={"paid-model": {"provider": "fake", **PRICED}},
    )


def faulty_status(client, payer: Payer) -> dict:
    [server] = client.get("/v1/mcp/servers", headers=payer.headers).json["data"]
    return server


def wait_available(client, payer: Payer, restarts: int) -> None:
    """Until the server is connected again after at least `restarts` restarts."""
    deadline = time.monotonic() + RESTART_WAIT_S
    while time.monotonic() < deadline:
        status = faulty_status(client, payer)
        if status["status"] == "available" and status["restarts"] >= restarts:
            return
        time.sleep(0.1)
    raise AssertionError(f"the MCP server did not come back: {faulty_status(client, payer)}")


def call(client, fake_upstream, payer: Payer, tool: str, arguments: dict, stream: bool = False):
    fake_upstream.responder = model = ScriptedModel([(f"mcp__faulty__{tool}", arguments)])
    return client.post("/v1/chat/completions", json={**CHAT, "stream": stream}, headers=payer.headers), model


def tool_result_and_answer(answer, model: ScriptedModel, stream: bool) -> tuple[str, str]:
    """What the tool returned to the model, and what the client was told (a stream must end cleanly)."""
    text = answer.get_data(as_text=True)  # a stream runs the loop as it is read
    [tool_result] = [m["content"] for m in model.bodies[-1]["messages"] if m.get("role") == "tool"]
    if not stream:
        return tool_result, answer.json["choices"][0]["message"]["content"]
    assert text.endswith("data: [DONE]\n\n")
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    return tool_result, "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)


def test_failing_tools_are_the_models_tool_errors_and_the_server_recovers(client, payer, settings, fake_upstream):
    wait_available(client, payer, restarts=0)
    requests = 0
    for fault, stream in (("hang", True), ("garbage", False), ("crash", False)):
        answer, model = call(client, fake_upstream, payer, fault, {}, stream)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        tool_result, said = tool_result_and_answer(answer, model, stream)
        assert FAULTS[fault] in tool_result and "Traceback" not in tool_result, fault
        assert said == f"Tools said: {tool_result}"

        wait_available(client, payer, restarts=1 if fault == "crash" else 0)
        again, _ = call(client, fake_upstream, payer, "echo", {"text": "back"})
        assert again.json["choices"][0]["message"]["content"] == "Tools said: back", fault
        requests += 2
        rows = audit(payer, settings.models)
        assert [(row.status, row.prompt_tokens, row.completion_tokens) for row in rows] == [(200, 40, 10)] * requests
        assert all(row.cost > 0 for row in rows)
