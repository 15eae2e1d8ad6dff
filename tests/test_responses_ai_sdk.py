"""The Vercel AI SDK's Responses provider (`@ai-sdk/openai` `.responses()`) against a live gateway.

Needs node and the npm packages `ai` and `@ai-sdk/openai`: `.ci/run` installs them and sets
AI_SDK_NODE_MODULES to their node_modules folder; without it these tests are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.fake_upstream import JsonReply, StreamReply, chat_chunk

NODE_MODULES = os.environ.get("AI_SDK_NODE_MODULES", "")
pytestmark = pytest.mark.skipif(
    not (shutil.which("node") and NODE_MODULES and os.path.isdir(os.path.join(NODE_MODULES, "@ai-sdk", "openai"))),
    reason="node with the `ai` and `@ai-sdk/openai` packages is not available (set AI_SDK_NODE_MODULES)",
)

SCRIPT = """
const { generateText } = require("ai");
const { createOpenAI } = require("@ai-sdk/openai");
const provider = createOpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY });
generateText({ model: provider.responses("test-model"), prompt: "hi", maxRetries: 0 })
  .then((result) => console.log(JSON.stringify({ text: result.text })))
  .catch((error) => console.log(JSON.stringify({ error: error.message, status: error.statusCode ?? null })));
"""


def generate_text(base_url: str, key: str) -> dict:
    env = {**os.environ, "NODE_PATH": NODE_MODULES, "BASE_URL": f"{base_url}/v1", "API_KEY": key}
    result = subprocess.run(["node", "-e", SCRIPT], capture_output=True, text=True, env=env, timeout=60, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_completed_response_reads(live_server, api_key):
    assert generate_text(live_server, api_key) == {"text": "Hello world"}


def test_a_failure_before_output_is_the_upstream_error(live_server, api_key, fake_upstream):
    fake_upstream.responder = lambda path, body: JsonReply({"error": {"message": "model is overloaded"}}, status=500)
    answer = generate_text(live_server, api_key)
    assert "model is overloaded" in answer["error"] and answer["status"] == 502


def test_a_failed_response_with_output_carries_the_upstream_message(live_server, api_key, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("partial")), (0, {"error": {"message": "model crashed"}})], done=False)
    answer = generate_text(live_server, api_key)
    assert "model crashed" in answer["error"] and "Invalid JSON response" not in answer["error"]
