"""The gateway in front of Anthropic, Gemini and Azure OpenAI (their loopback fakes): chat, tools, fallbacks, billing.

Clients speak OpenAI's chat; the provider adapters translate. Each test runs once per provider
(tests/native_providers.py); the official `openai` SDK as client sees the same shapes as from an
OpenAI-compatible model.
"""

from __future__ import annotations

import json
import re
import socket
import tomllib
from decimal import Decimal
from typing import Any

import openai
import pytest

from gateway import db
from gateway.accounting.money import Price
from gateway.accounting.usage import Usage
from gateway.config import ConfigError, build_settings
from gateway.config_text import settings_as_toml
from gateway.dashboard import users
from gateway.tables import LedgerEntry, UsageEntry
from tests import native_providers
from tests.doc_pages import documented_examples
from tests.native_providers import PRICES, Backend
from tests.polling import wait_until
from tests.test_dashboard import PASSWORD, sign_in

native, key, settings = native_providers.native, native_providers.key, native_providers.settings  # fixtures

PAGE_EXAMPLES = [example for example in documented_examples() if example.page == "docs/providers.md"
                 and example.language == "toml"]
ASK = {"model": "native-model", "messages": [{"role": "user", "content": "hi"}]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": {"type": "object", "additionalProperties": False,
                                                           "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}



@pytest.fixture
def sdk(live_server, key):
    with openai.OpenAI(base_url=f"{live_server}/v1", api_key=key, max_retries=0, timeout=20) as client:
        yield client


def usage_rows() -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def charges() -> list[int]:
    with db.database.connection_context():
        return [-entry.amount if entry.amount < 0 else entry.amount
                for entry in LedgerEntry.select().where(LedgerEntry.kind == "charge").order_by(LedgerEntry.id)]


def shape(value: Any) -> Any:
    """The keys of a JSON value, all the way down (lists by their first item)."""
    if isinstance(value, dict):
        return {name: shape(item) for name, item in value.items() if item is not None}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def test_chat_json_reaches_the_provider_in_its_own_wire(client, key, native: Backend):
    answer = client.post("/v1/chat/completions", json=ASK, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.json
    assert answer.json["choices"][0]["message"]["content"] == native.text
    assert answer.json["model"] == "native-model" and answer.json["id"] == answer.headers["X-Generation-Id"]
    path, body, headers = native.requests()[-1]
    expected = {"anthropic": "/v1/messages", "gemini": "/v1beta/models/native-upstream:generateContent",
                "azure": "/openai/deployments/native-upstream/chat/completions?api-version=2024-10-21"}
    assert path == expected[native.kind]
    assert "authorization" not in {name.lower() for name in headers}  # each provider's own key header instead
    assert native.kind != "azure" or headers.get("api-key") == "test-key"
    assert native.kind != "anthropic" or body["max_tokens"] == 4096  # the prepared cap, required by Anthropic


def test_chat_stream_with_the_sdk(sdk, native: Backend):
    stream = sdk.chat.completions.create(**ASK, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == native.text
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].usage.prompt_tokens == 12 and chunks[-1].usage.completion_tokens == 9
    assert {chunk.model for chunk in chunks} == {"native-model"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_and_its_result(sdk, native: Backend, stream):
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        chunks = list(sdk.chat.completions.create(model="native-model", messages=ask, tools=[WEATHER], stream=True))
        calls = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
        call_id, name = calls[0].id, calls[0].function.name
        arguments = "".join(call.function.arguments or "" for call in calls)
    else:
        reply = sdk.chat.completions.create(model="native-model", messages=ask, tools=[WEATHER])
        assert reply.choices[0].finish_reason == "tool_calls"
        call = reply.choices[0].message.tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert name == "get_weather" and json.loads(arguments) == {"city": "Paris"}
    turn = {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}
    follow = sdk.chat.completions.create(model="native-model", tools=[WEATHER], messages=[
        *ask, turn, {"role": "tool", "tool_call_id": call_id, "content": "sunny"}])
    assert follow.choices[0].message.content.startswith("The tool said:")
    assert "sunny" in follow.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True])
def test_tools_auto_runs_a_builtin_mcp_server(sdk, native: Backend, stream):
    ask = {"model": "native-model", "messages": [{"role": "user", "content": "What time is it?"}], "tools": "auto"}
    if stream:
        chunks = list(sdk.chat.completions.create(**ask, stream=True))
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    else:
        text = sdk.chat.completions.create(**ask).choices[0].message.content
    assert text.startswith("The tool said:")
    turns = [body for _, body, _ in native.requests()]
    assert len(turns) == 2  # the tool call, then the answer to its result


def test_fallback_across_providers(sdk, native: Backend, fake_upstream):
    native.fail_next()
    reply = sdk.chat.completions.create(model="native-model", messages=ASK["messages"],
                                        extra_body={"models": ["native-model", "openai-model"]})
    assert reply.choices[0].message.content == "Hello from upstream" and reply.model == "openai-model"
    assert len(native.requests()) == 1 and fake_upstream.requests
    native.fail_next()
    stream = sdk.chat.completions.create(model="native-model", messages=ASK["messages"], stream=True,
                                         extra_body={"models": ["native-model", "openai-model"]})
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "Hello world"


def test_an_overloaded_provider_is_a_503_with_retry_after(client, key, native: Backend):
    native.fail_next()
    answer = client.post("/v1/chat/completions", json=ASK, headers={"Authorization": f"Bearer {key}"})
    if native.kind == "azure":  # a plain 500: the upstream failed
        assert answer.status_code == 502 and answer.json["error"]["code"] == "upstream_error"
        return
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert answer.json["error"]["code"] == "upstream_overloaded"


@pytest.mark.parametrize("stream", [False, True])
def test_billing_is_usage_times_price_cache_included(sdk, native: Backend, stream):
    cached_system = {"role": "system", "content": [{"type": "text", "text": "Be brief.",
                                                    "cache_control": {"type": "ephemeral"}}]}
    ask = {"model": "native-model", "messages": [cached_system, *ASK["messages"]]}
    if stream:
        chunks = list(sdk.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
        usage = chunks[-1].usage
    else:
        usage = sdk.chat.completions.create(**ask).usage
    cached = usage.prompt_tokens_details.cached_tokens
    written = usage.prompt_tokens_details.cache_write_tokens or 0
    assert cached > 0  # Anthropic's cache read, Gemini's cachedContentTokenCount, Azure's cached_tokens
    assert (written > 0) == (native.kind == "anthropic")  # Anthropic's cache_creation_input_tokens
    expected = ((usage.prompt_tokens - cached - written) * PRICES["input_price_per_mtok"]
                + cached * PRICES["cached_input_price_per_mtok"]
                + written * PRICES["cache_write_price_per_mtok"]
                + usage.completion_tokens * PRICES["output_price_per_mtok"])
    [row] = usage_rows()
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.cache_write_tokens, row.cost) == (
        usage.prompt_tokens, usage.completion_tokens, cached, written, expected)
    assert charges() == [expected] and usage.model_extra["cost"] == expected / 1_000_000


def test_the_generation_shows_the_token_details(sdk, client, key, native: Backend):
    reply = sdk.chat.completions.create(model="native-model", messages=[
        {"role": "system", "content": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]},
        *ASK["messages"]])
    details = reply.usage.prompt_tokens_details
    shown = client.get(f"/api/v1/generation?id={reply.id}", headers={"Authorization": f"Bearer {key}"}).json["data"]
    assert (shown["native_tokens_cached"], shown["native_tokens_cache_write"], shown["native_tokens_reasoning"]) == (
        details.cached_tokens, details.cache_write_tokens or 0,
        reply.usage.completion_tokens_details.reasoning_tokens)


def test_client_disconnect_mid_stream_closes_the_provider_stream(live_server, key, native: Backend):
    native.slow_stream_next()
    host, port = live_server.removeprefix("http://").split(":")
    payload = json.dumps({**ASK, "stream": True})
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Authorization: Bearer {key}\r\nContent-Length: {len(payload)}\r\n\r\n{payload}").encode())
        received = b""
        while received.count(b"data:") < 2:
            received += sock.recv(4096)
    wait_until(usage_rows, "the usage row of the abandoned stream")
    [row] = usage_rows()
    assert row.status == 499 and row.cancelled and row.streamed
    if native.kind == "azure":
        assert native.fake.stream_aborted.wait(10) and not native.fake.stream_finished.is_set()
    else:
        assert not native.slow_finished.is_set()


def test_the_sdk_sees_the_same_shapes_as_from_an_openai_model(sdk, native: Backend):
    def shapes(model: str) -> tuple[Any, Any]:
        reply = sdk.chat.completions.create(model=model, messages=ASK["messages"])
        chunks = list(sdk.chat.completions.create(model=model, messages=ASK["messages"], stream=True,
                                                  stream_options={"include_usage": True}))
        return shape(reply.model_dump()), [shape(chunk.model_dump()) for chunk in (chunks[1], chunks[-1])]

    native_reply, native_chunks = shapes("native-model")
    openai_reply, openai_chunks = shapes("openai-model")
    for native_shape, openai_shape in ((native_reply, openai_reply), *zip(native_chunks, openai_chunks, strict=True)):
        assert set(native_shape) == set(openai_shape)
        assert [set(choice) for choice in native_shape.get("choices", [])] == [
            set(choice) for choice in openai_shape.get("choices", [])]
    assert set(native_reply["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens", "cost"}


def test_both_catalogs_list_the_native_model(client, key):
    for path in ("/v1/models", "/api/v1/models"):
        listed = client.get(path, headers={"Authorization": f"Bearer {key}"}).json["data"]
        assert {"native-model", "openai-model"} <= {model["id"] for model in listed}


@pytest.mark.parametrize("example", PAGE_EXAMPLES, ids=lambda example: example.name)
def test_the_providers_page_examples_load_with_their_type(example):
    assert not example.skip
    loaded = build_settings(tomllib.loads(example.code))
    assert [provider.type for provider in loaded.providers.values()] == [example.name.removeprefix("providers-")]


def test_prices_cache_writes_apart_and_holds_cover_them():
    price = Price(Decimal(1000), Decimal(2000), Decimal(100), Decimal(1250))
    assert price.cost(Usage(132, 9, cached_tokens=100, cache_write_tokens=20)) == 12 * 1000 + 100 * 100 + 20 * 1250 + 9 * 2000
    assert price.most(100, 10) == 100 * 1250 + 10 * 2000  # a hold: every input token may be a cache write
    assert Price(Decimal(1000), Decimal(0), Decimal(0), Decimal(500)).most(100, 0) == 100 * 1000


@pytest.mark.parametrize(("provider", "message"), [
    ({"type": "bedrock"}, "providers.p.type: Input should be 'openai', 'anthropic', 'gemini' or 'azure'"),
    ({"type": "azure"}, "providers.p.api_version: required when type = \"azure\""),
    ({"type": "anthropic", "anthropic_beta": "x"}, "providers.p.anthropic_beta"),
])
def test_provider_settings_are_checked_at_startup(provider, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_settings({"providers": {"p": {"base_url": "https://x.example", **provider}},
                        "models": {"m": {"provider": "p"}}})


def test_config_show_names_each_providers_type_and_masks_its_headers():
    shown = settings_as_toml(build_settings({
        "providers": {"claude": {"type": "anthropic", "base_url": "https://api.anthropic.com",
                                 "extra_headers": {"x-secret": "s3cret"}, "anthropic_beta": ["b1"]},
                      "plain": {"base_url": "https://api.openai.com/v1"}},
        "models": {"m": {"provider": "claude"}}}))
    assert 'type = "anthropic"' in shown and 'type = "openai"' in shown and "s3cret" not in shown
    assert build_settings(tomllib.loads(shown.replace("***", "x"))).providers["claude"].anthropic_beta == ("b1",)


def test_the_dashboards_request_table_shows_the_token_details(client, key, native: Backend):
    with db.database.connection_context():
        users.create_user("admin@example.com", PASSWORD, None, "admin")
    answer = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={
        **ASK, "messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief.",
                                                            "cache_control": {"type": "ephemeral"}}]}, *ASK["messages"]]})
    details = answer.json["usage"]["prompt_tokens_details"]
    assert sign_in(client, "admin@example.com").status_code == 302
    page = client.get("/dashboard/admin/usage").get_data(as_text=True)
    shown = f"{details['cached_tokens']} / {details.get('cache_write_tokens', 0)} / 0</td>"
    assert shown in page and "Cached / cache writes / reasoning" in page
