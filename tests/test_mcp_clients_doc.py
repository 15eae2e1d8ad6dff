"""docs/mcp-clients.md, run: each client's snippet against a live gateway with the page's own profile.

The model is scripted (tests/agent_model.py): it asks `time` (the gateway runs it), then the
client's `lucky_number` when the client offers one, then answers. Python snippets run in a
subprocess with the key in `$KEY`; the Vercel AI SDK's runs in node when AI_SDK_NODE_MODULES is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.agent_model import LUCKY, AgentModel
from tests.doc_pages import REPO, Example, documented_examples

PAGE = "docs/mcp-clients.md"
AI_SDK = os.environ.get("AI_SDK_NODE_MODULES", "")
BOUND_S = 120


def example(name: str) -> Example:
    """The page's example called `name`."""
    return next(found for found in documented_examples() if found.page == PAGE and found.name == name)


@pytest.fixture
def settings(make_settings):
    profiles = tomllib.loads(example("clients-profile").code)["profiles"]
    return make_settings(mcpServers={"time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}},
                         profiles=profiles)


@pytest.fixture
def run_snippet(live_server, make_key, fake_upstream):
    """Run one snippet of the page against the live gateway; what it printed."""
    fake_upstream.responder = AgentModel()
    key = make_key("docs", scope="acme")

    def run(name: str, command: list[str], env: dict[str, str] | None = None) -> str:
        code = example(name).code.replace("http://127.0.0.1:8080", live_server)
        done = subprocess.run([*command, code], capture_output=True, text=True, timeout=BOUND_S, cwd=REPO,
                              env={**os.environ, "KEY": key, **(env or {})}, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    return run


def test_openai_sdk(run_snippet):
    printed = run_snippet("clients-openai-sdk", [sys.executable, "-c"]).splitlines()
    assert printed[0] == "It is late."
    assert printed[1:] == ["['get_current_time']", "Tools were used", "['mcp_list_tools', 'mcp_call', 'message']"]


def test_langchain(run_snippet):
    pytest.importorskip("langchain_openai")
    assert run_snippet("clients-langchain", [sys.executable, "-c"]).splitlines() == ["It is late."] * 2


@pytest.mark.parametrize("name", ["clients-openai-agents", "clients-pydantic-ai"])
def test_agent_frameworks(run_snippet, fake_upstream, name):
    assert run_snippet(name, [sys.executable, "-c"]).strip() == f"Your lucky number is {LUCKY}."
    assert fake_upstream.responder.time_results()


def test_mcp_client_on_the_hub(run_snippet):
    printed = run_snippet("clients-mcp-hub", [sys.executable, "-c"]).splitlines()
    assert printed[0] == "['time__get_current_time', 'time__convert_time']"
    assert '"timezone": "UTC"' in "\n".join(printed[1:])


@pytest.mark.skipif(not (shutil.which("node") and AI_SDK and os.path.isdir(os.path.join(AI_SDK, "@ai-sdk", "openai"))),
                    reason="node with `ai` and `@ai-sdk/openai` is not available (set AI_SDK_NODE_MODULES)")
def test_vercel_ai_sdk(run_snippet):
    printed = run_snippet("clients-ai-sdk", ["node", "-e"], {"NODE_PATH": AI_SDK}).splitlines()
    assert printed == ["It is late.", "It is late."]
