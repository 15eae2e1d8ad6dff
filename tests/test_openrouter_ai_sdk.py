"""The Vercel AI SDK with `@openrouter/ai-sdk-provider`, unchanged, against a live gateway on /api/v1.

Needs node and the npm packages `ai` and `@openrouter/ai-sdk-provider` in AI_SDK_NODE_MODULES
(`.ci/run` installs them); without them these tests are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.fake_upstream import JsonReply, StreamReply, chat_chunk
from tests.scripted_model import usage

NODE_MODULES = os.environ.get("AI_SDK_NODE_MODULES", "")
pytestmark = pytest.mark.skipif(
    not (shutil.which("node") and NODE_MODULES
         and os.path.isdir(os.path.join(NODE_MODULES, "@openrouter", "ai-sdk-provider"))),
    reason="node with `ai` and `@openrouter/ai-sdk-provider` is not available (set AI_SDK_NODE_MODULES)",
)

SCRIPT = """
const { generateText, streamText } = require("ai");
const { createOpenRouter } = require("@openrouter/ai-sdk-provider");
const openrouter = createOpenRouter({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY });
const model = openrouter.chat("test-model");
async function main() {
  if (process.env.MODE === "stream") {
    const result = streamText({ model, prompt: "hi", maxRetries: 0 });
    let text = "";
    for await (const part of result.textStream) text += part;
    return { text };
  }
  const result = await generateText({ model, prompt: "hi", maxRetries: 0 });
  return { text: result.text, inputTokens: result.usage.inputTokens, id: result.response.id,
           generationId: result.response.headers["x-generation-id"] };
}
main().then((out) => console.log(JSON.stringify(out)))
  .catch((error) => console.log(JSON.stringify({ error: error.message, status: error.statusCode ?? null })));
"""


def run_node(base_url: str, key: str, mode: str = "generate") -> dict:
    env = {**os.environ, "NODE_PATH": NODE_MODULES, "BASE_URL": f"{base_url}/api/v1", "API_KEY": key, "MODE": mode}
    result = subprocess.run(["node", "-e", SCRIPT], capture_output=True, text=True, env=env, timeout=60, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_generate_text(live_server, api_key):
    answer = run_node(live_server, api_key)
    assert answer == {"text": "Hello from upstream", "inputTokens": 11, "id": answer["generationId"],
                      "generationId": answer["generationId"]}
    assert answer["id"].startswith("gen_")


def test_stream_text(live_server, api_key, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("Hel")), (0, chat_chunk("lo")), (0, chat_chunk(finish="stop")), (0, usage(3, 2))])
    assert run_node(live_server, api_key, "stream") == {"text": "Hello"}


def test_an_upstream_rejection_keeps_its_status(live_server, api_key, fake_upstream):
    fake_upstream.responder = lambda path, body: JsonReply({"error": {"message": "too long"}}, status=400)
    answer = run_node(live_server, api_key)
    assert answer["status"] == 400 and "too long" in answer["error"]
