"""`/v1/messages` through the JavaScript clients: `@anthropic-ai/sdk` and the AI SDK's `@ai-sdk/anthropic`.

Each runs as a small node script against the live gateway in front of the fake OpenAI upstream, and
prints what it got as JSON. `@anthropic-ai/sdk` runs when ANTHROPIC_SDK_NODE_MODULES names a node_modules
folder that holds it, `@ai-sdk/anthropic` when AI_SDK_NODE_MODULES holds it with `ai` (else skipped).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from gateway import db
from gateway.tables import UsageEntry
from tests.fake_upstream import JsonReply, StreamReply, default_responder
from tests.test_api_messages import PAID, weather_responder

ANTHROPIC_SDK = os.environ.get("ANTHROPIC_SDK_NODE_MODULES", "")
AI_SDK = os.environ.get("AI_SDK_NODE_MODULES", "")
BOUND_S = 120


def node_with(modules: str, package: str) -> bool:
    """Whether node runs and `modules` holds `package`."""
    return bool(shutil.which("node") and modules and os.path.isdir(os.path.join(modules, package)))


def responder(path: str, body: dict[str, Any]) -> JsonReply | StreamReply:
    """The weather tool's round trip when tools are offered; else the fake's plain answers."""
    return weather_responder(path, body) if body.get("tools") else default_responder(path, body)


@pytest.fixture(name="settings")
def messages_settings(make_settings):
    return make_settings(models={"paid-model": PAID})


def run_node(script: str, modules: str, live_server: str, key: str, **extra: str) -> dict[str, Any]:
    """Run `script` with NODE_PATH=modules, BASE_URL, API_KEY and `extra`; the JSON object it printed last."""
    env = {**os.environ, "NODE_PATH": modules, "BASE_URL": live_server, "API_KEY": key, **extra}
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, env=env, timeout=BOUND_S,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def usage_rows() -> list[tuple[str, int]]:
    """(endpoint, status) of each usage row."""
    with db.database.connection_context():
        return [(row.endpoint, row.status) for row in UsageEntry.select().order_by(UsageEntry.id)]


ANTHROPIC_SCRIPT = """
const Anthropic = require("@anthropic-ai/sdk");
const client = new Anthropic({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, maxRetries: 0 });
const user = [{ role: "user", content: "Hi" }];
const weather = { name: "weather", description: "Weather of a city.",
                  input_schema: { type: "object", properties: { city: { type: "string" } } } };
async function failure(call) {
  try { await call(); return null; } catch (error) {
    return { name: error.constructor.name, status: error.status, api: error instanceof Anthropic.APIError,
             type: error.error && error.error.error && error.error.error.type };
  }
}
async function main() {
  const created = await client.messages.create({ model: "test-model", max_tokens: 100, messages: user });
  const stream = client.messages.stream({ model: "test-model", max_tokens: 100, messages: user });
  let deltas = "";
  stream.on("text", (text) => { deltas += text; });
  const streamed = await stream.finalMessage();
  const used = await client.messages.stream({ model: "test-model", max_tokens: 100, messages: user,
                                              tools: [weather] }).finalMessage();
  const answered = await client.messages.create({ model: "test-model", max_tokens: 100, tools: [weather],
    messages: [...user, { role: "assistant", content: used.content },
               { role: "user", content: [{ type: "tool_result", tool_use_id: used.content[0].id, content: "sunny" }] }] });
  const counted = await client.messages.countTokens({ model: "test-model", messages: user, system: "x".repeat(400) });
  const wrongKey = new Anthropic({ baseURL: process.env.BASE_URL, apiKey: "sk-wrong", maxRetries: 0 });
  const unauthenticated = await failure(() => wrongKey.messages.create({ model: "test-model", max_tokens: 10,
                                                                         messages: user }));
  const unpaid = await failure(() => client.messages.create({ model: "paid-model", max_tokens: 10, messages: user }));
  const slow = new Anthropic({ baseURL: process.env.BASE_URL, apiKey: process.env.SLOW_KEY, maxRetries: 0 });
  await slow.messages.create({ model: "test-model", max_tokens: 10, messages: user });
  const limited = await failure(() => slow.messages.create({ model: "test-model", max_tokens: 10, messages: user }));
  console.log(JSON.stringify({ created, deltas, streamed, used, answered, counted, unauthenticated, unpaid,
                               limited }));
}
main().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.mark.skipif(not node_with(ANTHROPIC_SDK, "@anthropic-ai/sdk"),
                    reason="node with @anthropic-ai/sdk is not available (set ANTHROPIC_SDK_NODE_MODULES)")
def test_anthropic_sdk_js(live_server, api_key, make_key, fake_upstream):
    fake_upstream.responder = responder
    got = run_node(ANTHROPIC_SCRIPT, ANTHROPIC_SDK, live_server, api_key, SLOW_KEY=make_key("slow", rpm=1))
    created, streamed, used, answered = got["created"], got["streamed"], got["used"], got["answered"]
    assert (created["type"], created["content"], created["stop_reason"]) == (
        "message", [{"type": "text", "text": "Hello from upstream"}], "end_turn")
    assert created["usage"]["input_tokens"] == 11 and created["usage"]["output_tokens"] == 7
    assert got["deltas"] == "Hello world" and streamed["content"][0]["text"] == "Hello world"
    assert streamed["stop_reason"] == "end_turn"
    assert used["stop_reason"] == "tool_use"
    assert [(block["type"], block["name"], block["input"]) for block in used["content"]] == [
        ("tool_use", "weather", {"city": "Oslo"})]
    assert answered["content"][0]["text"] == "It is sunny in Oslo."
    answered_body = next(body for body in fake_upstream.bodies() if len(body.get("messages") or []) == 3)
    assert answered_body["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert got["counted"]["input_tokens"] >= 100
    assert got["unauthenticated"] == {"name": "AuthenticationError", "status": 401, "api": True,
                                      "type": "authentication_error"}
    assert got["unpaid"]["status"] == 402 and got["unpaid"]["api"] and got["unpaid"]["type"] == "billing_error"
    assert got["limited"] == {"name": "RateLimitError", "status": 429, "api": True, "type": "rate_limit_error"}
    assert usage_rows()[:4] == [("messages", 200)] * 4


AI_SDK_SCRIPT = """
const { generateText, streamText } = require("ai");
const { createAnthropic } = require("@ai-sdk/anthropic");
const anthropic = createAnthropic({ baseURL: process.env.BASE_URL + "/v1", apiKey: process.env.API_KEY });
async function main() {
  const generated = await generateText({ model: anthropic("test-model"), prompt: "Hi", maxRetries: 0 });
  const streamed = streamText({ model: anthropic("test-model"), prompt: "Hi", maxRetries: 0 });
  let deltas = [];
  for await (const text of streamed.textStream) deltas.push(text);
  console.log(JSON.stringify({ text: generated.text, finish: generated.finishReason, usage: generated.usage,
                               deltas, streamedText: await streamed.text, streamedUsage: await streamed.usage }));
}
main().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.mark.skipif(not (node_with(AI_SDK, "@ai-sdk/anthropic") and node_with(AI_SDK, "ai")),
                    reason="node with ai and @ai-sdk/anthropic is not available (set AI_SDK_NODE_MODULES)")
def test_ai_sdk_anthropic_provider(live_server, api_key, fake_upstream):
    got = run_node(AI_SDK_SCRIPT, AI_SDK, live_server, api_key)
    assert (got["text"], got["finish"]) == ("Hello from upstream", "stop")
    assert (got["usage"]["inputTokens"], got["usage"]["outputTokens"]) == (11, 7)
    assert got["deltas"] == ["Hello", " world"] and got["streamedText"] == "Hello world"
    assert (got["streamedUsage"]["inputTokens"], got["streamedUsage"]["outputTokens"]) == (11, 7)
    assert usage_rows() == [("messages", 200)] * 2
    assert all(path.endswith("/chat/completions") for path, _, _ in fake_upstream.requests)
