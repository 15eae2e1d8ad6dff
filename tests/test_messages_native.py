"""`/v1/messages` on Anthropic-type models: the native pass-through, against the Anthropic fake.

The client's Messages body reaches the fake as sent (only `model` replaced), with the provider's key
and both the provider's and the client's `anthropic-beta` flags; answers and stream events come
back as the fake sent them (`model` the public id). Money, fallbacks, errors and count_tokens too.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
import requests

from gateway import db
from gateway.accounting import credits
from gateway.tables import ApiKey, LedgerEntry, UsageEntry
from tests import fake_anthropic
from tests.native_providers import PRICES, Backend, start_backend
from tests.polling import wait_until
from tests.provider_fake import Events, Json

USER = [{"role": "user", "content": "hi"}]
PROVIDER_BETA = "provider-flag-2025-01-01"
CLIENT_BETA = "interleaved-thinking-2025-05-14,client-flag-2025-02-02"
CACHED_SYSTEM = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
THINKING_TURNS = [
    {"role": "user", "content": [{"type": "text", "text": "What is 2+2?", "cache_control": {"type": "ephemeral"}}]},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Two plus two.", "signature": "EqQBCkYIARgCIkD+signature=="},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT"},
        {"type": "text", "text": "4", "citations": [{"type": "char_location", "cited_text": "4",
                                                     "document_index": 0, "start_char_index": 0,
                                                     "end_char_index": 1}]}]},
    {"role": "user", "content": "And 3+3?"},
]


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """The Anthropic fake, its provider configured with its own beta flag."""
    monkeypatch.setenv("NATIVE_PROVIDER_KEY", "test-key")
    backend = start_backend("anthropic")
    backend.settings["anthropic_beta"] = [PROVIDER_BETA]
    yield backend
    backend.fake.stop()


@pytest.fixture
def settings(make_settings, native: Backend):
    """Two models on the Anthropic provider, one on the OpenAI-compatible fake; errors reach the client at once
    (no retries: tests/test_routing_* test them)."""
    once = {**PRICES, "retries": 0}
    return make_settings(
        providers={"native": native.settings},
        models={"native-model": {"provider": "native", "upstream_model": "native-upstream", **once},
                "native-backup": {"provider": "native", "upstream_model": "native-upstream-2", **once},
                "openai-model": {"provider": "fake", "upstream_model": "upstream-model", **once}},
        server={"keepalive_interval_s": 0.05},
    )


@pytest.fixture
def key(make_key) -> str:
    secret = make_key("native-messages", scope="default")
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == "native-messages").account_id, 10_000_000)
    return secret


@pytest.fixture
def sdk(live_server, key) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live_server, api_key=key, max_retries=0, timeout=20)


def usage_rows() -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def charges() -> list[int]:
    with db.database.connection_context():
        return [abs(entry.amount) for entry in LedgerEntry.select().where(LedgerEntry.kind == "charge")]


def post(live_server: str, key: str, body: dict[str, Any], **headers: str) -> requests.Response:
    return requests.post(f"{live_server}/v1/messages", json=body, timeout=20,
                         headers={"x-api-key": key, "anthropic-version": "2023-06-01", **headers})


def cost(prompt: int, output: int, cached: int, written: int) -> int:
    """Micro-credits of Anthropic usage (`prompt` excludes cache reads and writes) at PRICES."""
    return (prompt * PRICES["input_price_per_mtok"] + cached * PRICES["cached_input_price_per_mtok"]
            + written * PRICES["cache_write_price_per_mtok"] + output * PRICES["output_price_per_mtok"])


def test_the_body_and_beta_flags_reach_the_provider_unchanged(live_server, key, native: Backend):
    body = {"model": "native-model", "max_tokens": 2048, "system": CACHED_SYSTEM, "messages": THINKING_TURNS,
            "thinking": {"type": "enabled", "budget_tokens": 1024}, "top_k": 5,
            "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
            "some_future_field": {"kept": [1, 2]}, "metadata": {"user_id": "u-1"}}
    answer = post(live_server, key, body, **{"anthropic-beta": CLIENT_BETA})
    assert answer.status_code == 200, answer.text
    [(path, received, headers)] = native.requests()
    assert path == "/v1/messages" and received == {**body, "model": "native-upstream"}
    sent = {name.lower(): value for name, value in headers.items()}
    assert sent["anthropic-beta"] == f"{PROVIDER_BETA},{CLIENT_BETA}"
    assert sent["x-api-key"] == "test-key" and key not in json.dumps(sent)
    message = answer.json()
    assert (message["id"], message["model"]) == ("msg_fake01", "native-model")
    assert message["content"][0] == {"type": "thinking", "thinking": "Let me think.", "signature": "sig-fake-1"}
    assert "X-Gateway-Dropped" not in answer.headers


def test_the_sdk_creates_and_streams_on_the_native_path(sdk, native: Backend):
    message = sdk.messages.create(model="native-model", max_tokens=200, system=CACHED_SYSTEM, messages=USER)
    assert (message.content[0].text, message.model, message.stop_reason) == (native.text, "native-model", "end_turn")
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens,
            message.usage.cache_creation_input_tokens) == (12, 100, 20)
    with sdk.messages.stream(model="native-model", max_tokens=2000, messages=USER,
                             thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == native.text and final.model == "native-model"
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert (final.content[0].thinking, final.content[0].signature) == ("Let me think.", "sig-fake-1")
    assert [received["model"] for _, received, _ in native.requests()] == ["native-upstream"] * 2
    assert [(row.endpoint, row.status, row.model) for row in usage_rows()] == [("messages", 200, "native-model")] * 2


def test_stream_events_are_relayed_as_sent_ping_included(live_server, key, native: Backend):
    answer = requests.post(f"{live_server}/v1/messages", stream=True, timeout=20, headers={"x-api-key": key},
                           json={"model": "native-model", "max_tokens": 100, "messages": USER, "stream": True})
    names = [line.removeprefix("event: ") for line in answer.iter_lines(decode_unicode=True)
             if line.startswith("event: ")]
    expected = fake_anthropic.stream_events(fake_anthropic.message([{"type": "text", "text": native.text}])).events
    assert names == [name for name, _ in expected]
    assert names[:2] == ["message_start", "ping"]


@pytest.mark.parametrize("stream", [False, True])
def test_usage_rows_and_the_ledger_are_usage_times_price_cache_included(sdk, client, key, stream):
    ask = {"model": "native-model", "max_tokens": 200, "system": CACHED_SYSTEM, "messages": USER}
    if stream:
        with sdk.messages.stream(**ask) as events:
            events.get_final_message()
            generation_id = events.response.headers["X-Generation-Id"]
    else:
        raw = sdk.messages.with_raw_response.create(**ask)
        generation_id = raw.headers["X-Generation-Id"]
    [row] = usage_rows()
    assert (row.endpoint, row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.cache_write_tokens,
            row.estimated) == ("messages", 132, 9, 100, 20, False)
    assert charges() == [cost(12, 9, 100, 20)] and row.cost == cost(12, 9, 100, 20)
    shown = client.get(f"/api/v1/generation?id={generation_id}", headers={"Authorization": f"Bearer {key}"})
    assert shown.status_code == 200 and shown.json["data"]["native_tokens_cached"] == 100


def test_a_disconnect_mid_stream_is_charged_for_what_was_generated(live_server, key, native: Backend):
    native.slow_stream_next()
    host, port = live_server.removeprefix("http://").split(":")
    payload = json.dumps({"model": "native-model", "max_tokens": 4000, "messages": USER, "stream": True})
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"x-api-key: {key}\r\nContent-Length: {len(payload)}\r\n\r\n{payload}").encode())
        received = b""
        while received.count(b"text_delta") < 3:
            received += sock.recv(4096)
    wait_until(usage_rows, "the usage row of the abandoned stream")
    [row] = usage_rows()
    assert (row.endpoint, row.status, row.cancelled, row.streamed) == ("messages", 499, True, True)
    assert row.prompt_tokens == 12 and row.completion_tokens >= 2  # the provider's input; output as generated
    assert charges() == [cost(12, row.completion_tokens, 0, 0)]
    assert not native.slow_finished.is_set()


def test_rate_limited_and_overloaded_providers_reach_the_sdk_typed(sdk, native: Backend):
    native.fake.script.append(fake_anthropic.error(429, "rate_limit_error", "Slow down", retry_after="7"))
    with pytest.raises(anthropic.RateLimitError) as limited:
        sdk.messages.create(model="native-model", max_tokens=100, messages=USER)
    assert limited.value.response.headers["retry-after"] == "7"
    native.fake.script.append(fake_anthropic.error(529, "overloaded_error", "Overloaded"))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        sdk.messages.create(model="native-model", max_tokens=100, messages=USER)
    assert overloaded.value.status_code == 529 and overloaded.value.body["error"]["type"] == "overloaded_error"
    assert [row.status for row in usage_rows()] == [429, 503]  # rows record the gateway's status, as on chat


def test_fallbacks_stay_native_across_anthropic_models(live_server, key, native: Backend):
    native.fake.script.append(fake_anthropic.error(529, "overloaded_error", "Overloaded"))
    body = {"model": "native-model", "models": ["native-backup"], "max_tokens": 100, "messages": USER, "top_k": 3}
    answer = post(live_server, key, body)
    assert answer.status_code == 200 and answer.json()["model"] == "native-backup"
    sent = [received for _, received, _ in native.requests()]
    assert [item["model"] for item in sent] == ["native-upstream", "native-upstream-2"]
    assert all("models" not in item and item["top_k"] == 3 for item in sent)


def test_a_fallback_list_with_another_provider_is_translated(live_server, key, native: Backend, fake_upstream):
    native.fake.script.append(fake_anthropic.error(529, "overloaded_error", "Overloaded"))
    body = {"model": "native-model", "models": ["openai-model"], "max_tokens": 100, "messages": USER, "top_k": 3}
    answer = post(live_server, key, body)
    assert answer.status_code == 200 and answer.json()["type"] == "message", answer.text
    assert answer.headers["X-Gateway-Dropped"] == "top_k"  # the translated path
    assert answer.json()["model"] == "openai-model"  # the model that answered
    assert "top_k" not in native.requests()[0][1] and fake_upstream.requests
    native.fake.script.append(fake_anthropic.error(529, "overloaded_error", "Overloaded"))
    sdk = anthropic.Anthropic(base_url=live_server, api_key=key, max_retries=0, timeout=20)
    with sdk.messages.stream(model="native-model", max_tokens=100, messages=USER,
                             extra_body={"models": ["openai-model"]}) as stream:
        assert stream.get_final_message().model == "openai-model"


def test_count_tokens_is_the_providers_own_count(sdk, native: Backend):
    counted = sdk.messages.count_tokens(model="native-model", system=CACHED_SYSTEM, messages=USER,
                                        extra_headers={"anthropic-beta": CLIENT_BETA})
    [(path, received, headers)] = native.requests()
    assert path == "/v1/messages/count_tokens"
    assert received == {"model": "native-upstream", "system": CACHED_SYSTEM, "messages": USER}
    assert counted.input_tokens == fake_anthropic.counted_tokens(received)
    assert {name.lower(): value for name, value in headers.items()}["anthropic-beta"].endswith(CLIENT_BETA)
    estimated = sdk.messages.count_tokens(model="openai-model", messages=USER)
    assert 0 < estimated.input_tokens < 1000 and len(native.requests()) == 1  # the gateway's estimate


def test_count_tokens_errors_come_back_in_anthropics_shape(sdk, native: Backend):
    native.fake.script.append(Json({"type": "error", "error": {"type": "invalid_request_error",
                                                               "message": "messages: bad"}}, 400))
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.count_tokens(model="native-model", messages=USER)
    assert refused.value.body["error"]["type"] == "invalid_request_error"


def test_the_openrouter_route_is_native_too(live_server, key, native: Backend):
    body = {"model": "native-model", "max_tokens": 100, "messages": THINKING_TURNS, "top_k": 2}
    answer = requests.post(f"{live_server}/api/v1/messages", json=body, timeout=20,
                           headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200 and answer.json()["model"] == "native-model"
    assert native.requests()[0][1] == {**body, "model": "native-upstream"}


def test_a_provider_error_mid_stream_is_relayed_and_the_input_charged(live_server, key, native: Backend):
    start = fake_anthropic.stream_events(fake_anthropic.message([{"type": "text", "text": "x"}])).events[:3]
    failure = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    native.fake.script.append(Events([*start, failure]))
    answer = requests.post(f"{live_server}/v1/messages", stream=True, timeout=20, headers={"x-api-key": key},
                           json={"model": "native-model", "max_tokens": 100, "messages": USER, "stream": True})
    lines = list(answer.iter_lines(decode_unicode=True))
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert names == ["message_start", "ping", "content_block_start", "error"]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert data[-1] == failure[1]  # the provider's own error event, as sent
    [row] = usage_rows()
    assert (row.status, row.prompt_tokens) == (502, 12) and charges() == [cost(12, 1, 0, 0)]


def test_a_missing_max_tokens_is_refused_before_the_provider(live_server, key, native: Backend):
    answer = post(live_server, key, {"model": "native-model", "messages": USER})
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in answer.json()["error"]["message"] and native.requests() == []


def test_a_stream_cut_short_ends_with_the_gateways_error_event(live_server, key, native: Backend):
    native.fake.script.append(Events(fake_anthropic.stream_events(fake_anthropic.message(
        [{"type": "text", "text": "x"}])).events[:4]))  # no message_delta, no message_stop
    answer = requests.post(f"{live_server}/v1/messages", stream=True, timeout=20, headers={"x-api-key": key},
                           json={"model": "native-model", "max_tokens": 100, "messages": USER, "stream": True})
    data = [json.loads(line.removeprefix("data: ")) for line in answer.iter_lines(decode_unicode=True)
            if line.startswith("data: ")]
    assert [item["type"] for item in data][-2:] == ["content_block_delta", "error"]
    assert data[-1]["error"]["type"] == "api_error" and "message_stop" in data[-1]["error"]["message"]


def test_count_tokens_with_mcp_servers_is_the_gateways_estimate(sdk, native: Backend):
    servers = [{"type": "url", "name": "remote", "url": "https://mcp.example.com/mcp", "authorization_token": "s3"}]
    counted = sdk.messages.count_tokens(model="native-model", messages=USER, extra_body={"mcp_servers": servers})
    assert 0 < counted.input_tokens < 1000 and native.requests() == []  # the servers' token never leaves
