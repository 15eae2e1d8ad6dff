"""Agent frameworks on a profile that offers `time` by default, each agent with one function tool of its own.

The gateway runs `time` (MCP) and reports it in `mcp_calls`; the agent runs its own `lucky_number`
from `tool_calls`. Neither framework sees a call to a tool it does not have.
@openai/agents runs when AGENTS_NODE_MODULES names a node_modules folder that holds it (else skipped).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess

import pytest

from tests.agent_model import CLIENT_TOOL, LUCKY, AgentModel

BASE = "/api/v1/openai/acme/default"
QUESTION = "What time is it, and what is my lucky number?"
NODE_MODULES = os.environ.get("AGENTS_NODE_MODULES", "")


@pytest.fixture
def settings(make_settings):
    return make_settings(
        mcpServers={"time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}},
        profiles={"acme/default": {"mcp_servers": ["time"], "tools_by_default": True}},
    )


@pytest.fixture
def key(make_key) -> str:
    return make_key("agent", scope="acme")


@pytest.fixture
def model(fake_upstream) -> AgentModel:
    fake_upstream.responder = AgentModel()
    return fake_upstream.responder


def assert_both_tools_ran(model: AgentModel, client_calls: int) -> None:
    """The gateway ran `time`; the agent ran its own tool once."""
    assert model.time_results(), "the gateway did not run the MCP tool"
    assert client_calls == 1


@pytest.mark.parametrize(("streamed", "api"), [(False, "chat"), (True, "chat"), (False, "responses")])
def test_openai_agents_python(live_server, key, model, streamed, api):
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    ran = []

    @agents.function_tool
    def lucky_number() -> str:
        """The user's lucky number."""
        ran.append(1)
        return LUCKY

    agents.set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=live_server + BASE, api_key=key, max_retries=0)
    kind = agents.OpenAIChatCompletionsModel if api == "chat" else agents.OpenAIResponsesModel
    agent = agents.Agent(name="helper", instructions="Use tools.", tools=[lucky_number],
                         model=kind(model="test-model", openai_client=client))

    async def run() -> str:
        if not streamed:
            return (await agents.Runner.run(agent, QUESTION)).final_output
        result = agents.Runner.run_streamed(agent, QUESTION)
        async for _ in result.stream_events():
            pass
        return result.final_output

    assert asyncio.run(run()) == f"Your lucky number is {LUCKY}."
    assert_both_tools_ran(model, len(ran))


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_pydantic_ai(live_server, key, model, api):
    pydantic_ai = pytest.importorskip("pydantic_ai")
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    ran = []
    provider = OpenAIProvider(base_url=live_server + BASE, api_key=key)
    kind = OpenAIChatModel if api == "chat" else OpenAIResponsesModel
    agent = pydantic_ai.Agent(kind("test-model", provider=provider), instructions="Use tools.")

    @agent.tool_plain
    def lucky_number() -> str:
        """The user's lucky number."""
        ran.append(1)
        return LUCKY

    assert agent.run_sync(QUESTION).output == f"Your lucky number is {LUCKY}."
    assert_both_tools_ran(model, len(ran))


JS_AGENT = """
const { Agent, run, tool, setDefaultOpenAIClient, setOpenAIAPI, setTracingDisabled } = require("@openai/agents");
const OpenAI = require("openai");
const { z } = require("zod");
setTracingDisabled(true);
setOpenAIAPI(process.env.API);
setDefaultOpenAIClient(new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, maxRetries: 0 }));
let ran = 0;
const luckyNumber = tool({
  name: "lucky_number", description: "The user's lucky number.", parameters: z.object({}),
  execute: async () => { ran += 1; return process.env.LUCKY; },
});
const agent = new Agent({ name: "helper", instructions: "Use tools.", model: "test-model", tools: [luckyNumber] });
run(agent, process.env.QUESTION, { stream: process.env.STREAM === "1" })
  .then(async (result) => {
    if (process.env.STREAM === "1") { for await (const _ of result) {} await result.completed; }
    console.log(JSON.stringify({ output: result.finalOutput, ran }));
  })
  .catch((error) => console.log(JSON.stringify({ error: String(error) })));
"""


@pytest.mark.skipif(not (shutil.which("node") and NODE_MODULES
                         and os.path.isdir(os.path.join(NODE_MODULES, "@openai", "agents"))),
                    reason="node with @openai/agents is not available (set AGENTS_NODE_MODULES)")
@pytest.mark.parametrize(("streamed", "api"), [(False, "chat_completions"), (True, "chat_completions"),
                                               (False, "responses")])
def test_openai_agents_js(live_server, key, model, streamed, api):
    env = {**os.environ, "NODE_PATH": NODE_MODULES, "BASE_URL": live_server + BASE, "API_KEY": key,
           "LUCKY": LUCKY, "QUESTION": QUESTION, "STREAM": "1" if streamed else "0", "API": api}
    done = subprocess.run(["node", "-e", JS_AGENT], capture_output=True, text=True, env=env, timeout=120, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result.get("output") == f"Your lucky number is {LUCKY}.", result
    assert_both_tools_ran(model, result["ran"])
    assert CLIENT_TOOL in {tool["function"]["name"] for tool in model.bodies[0]["tools"]}
