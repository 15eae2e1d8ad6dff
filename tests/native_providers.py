"""The gateway in front of each native provider's fake: one `native` fixture, parametrized over anthropic, gemini, azure.

Each backend is the provider's loopback fake (tests/fake_anthropic.py, tests/fake_gemini.py; Azure is
OpenAI's wire, so tests/fake_upstream.py behind Azure's deployment URL with a responder that calls
the first offered tool, like the other fakes). The gateway's settings name it `type = "<kind>"`
as provider `native`, model `native-model` (priced), beside conftest's OpenAI-compatible `fake`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway import db
from gateway.accounting import credits
from gateway.tables import ApiKey
from tests import fake_anthropic, fake_gemini
from tests.fake_anthropic import FakeAnthropic, tool_input
from tests.fake_gemini import FakeGemini
from tests.fake_upstream import FakeUpstream, JsonReply, StreamReply, chat_completion, usage_chunk
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.provider_fake import Events, ProviderFake
from tests.scripted_model import answer_chunks, tool_call_chunks

KINDS = ["anthropic", "gemini", "azure"]
KEY_ENV = "NATIVE_PROVIDER_KEY"
AZURE_TEXT = "Hello from Azure"
AZURE_USAGE = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21,
               "prompt_tokens_details": {"cached_tokens": 4}}
PRICES = {"input_price_per_mtok": 1000, "output_price_per_mtok": 2000, "cached_input_price_per_mtok": 100,
          "cache_write_price_per_mtok": 1250}
SLOW_EVENTS = 400  # a stream the test disconnects from: far more than it reads
Request = tuple[str, Any, dict[str, str]]  # path, JSON body, headers


@dataclass
class Backend:
    """One native provider's fake, as the tests drive it."""

    kind: str
    fake: Any
    base_url: str
    text: str  # the fake's plain answer
    settings: dict[str, Any]
    failures: list[Any] = field(default_factory=list)  # Azure's scripted failures
    slow_finished: threading.Event = field(default_factory=threading.Event)

    def requests(self) -> list[Request]:
        """Every request the fake received, in order."""
        if isinstance(self.fake, ProviderFake):
            return [(item.path, item.body, item.headers) for item in self.fake.requests]
        return list(self.fake.requests)

    def fail_next(self) -> None:
        """The next call fails as the provider fails when busy (Anthropic's 529, Google's 503, Azure's 500)."""
        if self.kind == "anthropic":
            self.fake.script.append(fake_anthropic.error(529, "overloaded_error", "Overloaded"))
        elif self.kind == "gemini":
            self.fake.script.append(fake_gemini.error(503, "The model is overloaded."))
        else:
            self.failures.append(JsonReply({"error": {"message": "boom", "type": "server_error"}}, 500))

    def slow_stream_next(self) -> None:
        """The next call streams a long answer slowly (a client may leave in the middle)."""
        if self.kind == "azure":
            pieces = [(0.05, chunk) for _, chunk in answer_chunks("word " * SLOW_EVENTS)]
            self.failures.append(StreamReply(pieces))
            return
        self.fake.script.append(Events(self._slow_events()))  # a generator: the fake writes as it yields

    def _slow_events(self) -> Iterator[tuple[str | None, Any]]:
        if self.kind == "anthropic":
            answer = fake_anthropic.stream_events(fake_anthropic.message([{"type": "text", "text": "x"}])).events
            head, delta = answer[:3], ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                               "delta": {"type": "text_delta", "text": "word "}})
        else:
            answer = fake_gemini.stream_of(fake_gemini.response([{"text": "x"}])).events
            head, delta = answer[:1], (None, fake_gemini.response([{"text": "word "}], None, final=False))
        yield from head
        for _ in range(SLOW_EVENTS):
            time.sleep(0.05)
            yield delta
        self.slow_finished.set()


def azure_responder(backend: Backend) -> Callable[[str, dict[str, Any]], Any]:
    """OpenAI's wire behind Azure's URL: a scripted failure, else a tool call, a tool result's echo or text."""

    def respond(path: str, body: dict[str, Any]) -> Any:
        if not path.startswith("/openai/deployments/") or "api-version=" not in path:
            return JsonReply({"error": {"message": f"no route {path}", "type": "invalid_request_error"}}, 404)
        if backend.failures:
            return backend.failures.pop(0)
        results = [message.get("content") for message in body.get("messages") or [] if message.get("role") == "tool"]
        tools = [tool["function"] for tool in body.get("tools") or [] if tool.get("type") == "function"]
        calls = [] if results or not tools or body.get("tool_choice") == "none" else [
            (tools[0]["name"], tool_input(tools[0].get("parameters") or {}))]
        text = f"The tool said: {json.dumps(results[0])}" if results else AZURE_TEXT
        if body.get("stream"):
            events = tool_call_chunks(calls) if calls else answer_chunks(text)
            return StreamReply([*events, (0, {**usage_chunk(), "usage": AZURE_USAGE})])
        answer = chat_completion(text, body.get("model", ""), usage=AZURE_USAGE)
        if calls:
            answer["choices"][0].update(finish_reason="tool_calls", message={"role": "assistant", "content": None,
                                        "tool_calls": [{"id": "call_az1", "type": "function", "function": {
                                            "name": calls[0][0], "arguments": json.dumps(calls[0][1])}}]})
        return JsonReply(answer)

    return respond


def start_backend(kind: str) -> Backend:
    """The provider's fake, started, and the gateway settings that reach it."""
    provider = {"type": kind, "api_key_env": KEY_ENV, "timeout_s": 10, "connect_timeout_s": 2}
    if kind == "azure":
        fake = FakeUpstream().start()
        backend = Backend(kind, fake, fake.base_url.removesuffix("/v1"), AZURE_TEXT,
                          {**provider, "api_version": "2024-10-21"})
        fake.responder = azure_responder(backend)
    else:
        fake = (FakeAnthropic if kind == "anthropic" else FakeGemini)(api_key="test-key").start()
        backend = Backend(kind, fake, fake.base_url, fake_anthropic.TEXT if kind == "anthropic" else fake_gemini.TEXT,
                          provider)
    backend.settings["base_url"] = backend.base_url
    return backend


@contextlib.contextmanager
def running_backend(kind: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """The provider's fake, started with its key in KEY_ENV, and stopped afterwards."""
    monkeypatch.setenv(KEY_ENV, "test-key")
    backend = start_backend(kind)
    try:
        yield backend
    finally:
        backend.fake.stop()


@pytest.fixture(params=KINDS)
def native(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """A started provider fake of each kind (its key in KEY_ENV)."""
    with running_backend(request.param, monkeypatch) as backend:
        yield backend


@pytest.fixture
def settings(make_settings, native: Backend):
    """The gateway with the native provider beside the OpenAI-compatible fake, and the built-in MCP servers
    (no retries: one injected failure reaches the client; tests/test_routing_* test retries)."""
    return make_settings(
        providers={"native": native.settings},
        models={"native-model": {"provider": "native", "upstream_model": "native-upstream", "retries": 0, **PRICES},
                "openai-model": {"provider": "fake", "upstream_model": "upstream-model", **PRICES}},
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]},
                    "time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}},
        mcp={"default_profile": "default/default", "tool_timeout_s": 5},
        profiles={"default/default": {"mcp_servers": ["time"]}},
        server={"keepalive_interval_s": 0.05},
    )


@pytest.fixture
def key(make_key) -> str:
    """A key in the default profile's scope, with credits."""
    secret = make_key("native-user", scope="default")
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == "native-user").account_id, 10_000_000)
    return secret
