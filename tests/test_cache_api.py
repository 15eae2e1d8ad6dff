"""The response cache on every face: chat, completions, embeddings and /v1/messages (translated and native).

A repeated request is a MISS then a HIT: the upstream sees it once, the hit is charged
hit_price_fraction of the stored usage's price with a `cache_hit` usage row, under a fresh id; a
streamed hit replays a stream the SDKs accumulate to the same answer. Never across accounts; the
client's Cache-Control obeyed; a stopped Redis costs no request; entries expire.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
import requests

from gateway import create_app, db, lifecycle
from gateway.accounting import credits
from gateway.accounting.usage import Usage
from gateway.api.stream_assembly import ChatAssembly, CompletionAssembly, MessageAssembly
from gateway.cache.entry import CachedAnswer
from gateway.cache.replay import replay_chat_chunks, replay_completion_chunks, replay_message_events
from gateway.config import merge
from gateway.tables import ApiKey, ResponseCacheEntry, UsageEntry
from tests.fake_anthropic import FakeAnthropic, stream_events
from tests.fake_anthropic import message as fake_message
from tests.fake_upstream import StreamReply, chat_chunk
from tests.polling import wait_until
from tests.ports import free_port

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
PRICES = {"input_price_per_mtok": 1000, "output_price_per_mtok": 2000}
CHAT_COST = 11 * 1000 + 7 * 2000  # the fake's usage (11 in, 7 out) in micro-credits
both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def anthropic_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    monkeypatch.setenv("ANTHROPIC_FAKE_KEY", "test-key")
    fake = FakeAnthropic(api_key="test-key").start()
    yield fake
    fake.stop()


@pytest.fixture
def cache_tables() -> dict[str, Any]:
    """Settings tables over the cached base (tests parametrize it)."""
    return {}


def cached_tables(anthropic_url: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The cache on, priced models (one never cached, one native Anthropic), plus `extra`."""
    base = {
        "cache": {"enabled": True},
        "providers": {"claude": {"type": "anthropic", "base_url": anthropic_url, "api_key_env": "ANTHROPIC_FAKE_KEY",
                                 "timeout_s": 5, "connect_timeout_s": 2}},
        "models": {"test-model": PRICES, "backup-model": PRICES,
                   "uncached-model": {"provider": "fake", "upstream_model": "upstream-model", "cache_ttl_s": 0},
                   "claude-model": {"provider": "claude", "upstream_model": "claude-upstream", **PRICES}},
    }
    return merge(base, extra)


@pytest.fixture
def settings(make_settings, anthropic_fake: FakeAnthropic, cache_tables: dict[str, Any]):
    return make_settings(**cached_tables(anthropic_fake.base_url, cache_tables))


@pytest.fixture
def funded_key(make_key) -> Callable[[str], str]:
    """A key of a new account holding 10 credits."""

    def build(name: str = "cached", **options: Any) -> str:
        secret = make_key(name, **options)
        with db.database.connection_context():
            credits.grant_credits(ApiKey.get(ApiKey.name == name).account_id, 10_000_000)
        return secret

    return build


@pytest.fixture
def key(funded_key: Callable[[str], str]) -> str:
    return funded_key("cached")


def bearer(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def cache_entries(app) -> list[ResponseCacheEntry]:
    """The app's cached entries, oldest first, wherever its backend keeps them (on SQLite: the cache's own file)."""
    backend = app.extensions["gateway.cache"].backend
    with backend.connected():
        return list(backend.table.select().order_by(backend.table.created_at))


def usage_rows() -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def upstream_calls(fake_upstream) -> int:
    return len([path for path, _, _ in fake_upstream.requests if not path.endswith("/models")])


def sse_data(text: str) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded ([DONE] kept as a string)."""
    frames = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    return [frame if frame == "[DONE]" else json.loads(frame) for frame in frames]


@both_databases
@pytest.mark.parametrize("cache_tables", [{}, {"cache": {"hit_price_fraction": 0.5}}], ids=["free", "half"])
def test_a_repeated_chat_is_a_miss_then_a_hit_sent_upstream_once(client, key, fake_upstream, cache_tables):
    fraction = cache_tables.get("cache", {}).get("hit_price_fraction", 0.0)
    miss = client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    hit = client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    assert (miss.status_code, hit.status_code) == (200, 200)
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert "Age" not in miss.headers and int(hit.headers["Age"]) >= 0
    assert upstream_calls(fake_upstream) == 1
    assert hit.json["choices"] == miss.json["choices"] and hit.json["model"] == "test-model"
    assert hit.json["id"] == hit.headers["X-Generation-Id"] != miss.json["id"]
    assert hit.json["usage"]["cost"] == pytest.approx(round(CHAT_COST * fraction) / 1e6)
    rows = usage_rows()
    assert [(row.cache_hit, row.status, row.cost) for row in rows] == [
        (False, 200, CHAT_COST), (True, 200, round(CHAT_COST * fraction))]
    assert (rows[0].deployment, rows[0].attempts) == ("fake/upstream-model", 1)
    assert (rows[1].prompt_tokens, rows[1].completion_tokens, rows[1].attempts, rows[1].deployment) == (11, 7, 0, None)
    assert rows[1].generation_id == hit.json["id"]


@pytest.mark.parametrize("cache_tables", [{"cache": {"shared_scope": "public"}}])
def test_a_hit_is_rate_limited_and_held_like_any_request(client, funded_key, make_key, fake_upstream):
    limited = funded_key("limited", rpm=2)
    answers = [client.post("/v1/chat/completions", json=CHAT, headers=bearer(limited)) for _ in range(3)]
    assert [(answer.status_code, answer.headers.get("X-Cache")) for answer in answers] == [
        (200, "MISS"), (200, "HIT"), (429, None)]
    broke = client.post("/v1/chat/completions", json=CHAT, headers=bearer(make_key("broke")))
    assert broke.status_code == 402  # a hit in the shared scope, but its hold (the request's estimate) does not fit
    assert upstream_calls(fake_upstream) == 1


def test_a_streamed_hit_replays_a_stream_the_openai_sdk_accumulates(live_server, key, fake_upstream):
    sdk = openai.OpenAI(base_url=f"{live_server}/v1", api_key=key, max_retries=0, timeout=20)
    finals, headers = [], []
    for _ in range(2):
        raw = sdk.chat.completions.with_raw_response.create(**CHAT, stream=True, stream_options={"include_usage": True})
        chunks = list(raw.parse())
        headers.append(raw.headers)
        finals.append(chunks)
    with sdk.chat.completions.stream(**CHAT) as stream:
        accumulated = stream.get_final_completion()
    texts = ["".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) for chunks in finals]
    assert texts == ["Hello world"] * 2 and accumulated.choices[0].message.content == "Hello world"
    assert [header["X-Cache"] for header in headers] == ["MISS", "HIT"]
    assert upstream_calls(fake_upstream) == 1
    replay = finals[1]
    assert {chunk.id for chunk in replay} == {headers[1]["X-Generation-Id"]}
    assert replay[-2].choices[0].finish_reason == "stop" and replay[-1].usage.total_tokens == 18
    assert replay[-1].usage.model_extra["cost"] == 0
    json_hit = requests.post(f"{live_server}/v1/chat/completions", json=CHAT, headers=bearer(key), timeout=20)
    assert json_hit.headers["X-Cache"] == "HIT" and json_hit.json()["choices"][0]["message"]["content"] == "Hello world"
    rows = usage_rows()
    assert [(row.cache_hit, row.streamed) for row in rows] == [(False, True), (True, True), (True, True),
                                                                 (True, False)]


def test_a_hit_stream_without_usage_asked_sends_none(client, key):
    client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    replay = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(key))
    assert replay.headers["X-Cache"] == "HIT"
    data = sse_data(replay.get_data(as_text=True))
    assert data[-1] == "[DONE]" and all("usage" not in chunk for chunk in data[:-1])
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in data[:-1]) == "Hello from upstream"


@pytest.mark.parametrize("cache_tables", [{}, {"cache": {"shared_scope": "public"}}], ids=["own", "shared"])
def test_two_accounts_never_share_an_entry_unless_the_operator_shares_a_scope(
        client, funded_key, fake_upstream, cache_tables):
    first, second = funded_key("first"), funded_key("second")
    shared = "shared_scope" in cache_tables.get("cache", {})
    answers = [client.post("/v1/chat/completions", json=CHAT, headers=bearer(secret)).headers["X-Cache"]
               for secret in (first, second, first)]
    assert answers == (["MISS", "HIT", "HIT"] if shared else ["MISS", "MISS", "HIT"])
    assert upstream_calls(fake_upstream) == (1 if shared else 2)


@both_databases
def test_no_cache_skips_the_lookup_but_stores_and_no_store_skips_storing(client, key, fake_upstream):
    def ask(control: str | None = None, body: dict[str, Any] = CHAT) -> str:
        headers = bearer(key, **({"Cache-Control": control} if control else {}))
        answer = client.post("/v1/chat/completions", json=body, headers=headers)
        assert answer.status_code == 200
        return answer.headers["X-Cache"]

    other = {**CHAT, "messages": [{"role": "user", "content": "another question"}]}
    assert [ask("no-store", other), ask(None, other), ask(None, other)] == ["MISS", "MISS", "HIT"]
    assert [ask("No-Cache"), ask(None), ask("no-cache"), ask(None)] == ["MISS", "HIT", "MISS", "HIT"]
    assert upstream_calls(fake_upstream) == 4


def test_max_age_bounds_the_age_of_a_hit(app, client, key, fake_upstream):
    client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    created = cache_entries(app)[0].created_at
    wait_until(lambda: time.time() - created > 1.0, "the entry to be older than a second")
    old = client.post("/v1/chat/completions", json=CHAT, headers=bearer(key, **{"Cache-Control": "max-age=1"}))
    young = client.post("/v1/chat/completions", json=CHAT, headers=bearer(key, **{"Cache-Control": "max-age=3600"}))
    assert (old.headers["X-Cache"], young.headers["X-Cache"]) == ("MISS", "HIT")
    assert upstream_calls(fake_upstream) == 2


@pytest.mark.parametrize("cache_tables", [{"models": {"test-model": {"cache_ttl_s": 1.0}}}])
def test_an_entry_expires_after_its_model_ttl(app, client, key, fake_upstream):
    assert client.post("/v1/chat/completions", json=CHAT, headers=bearer(key)).headers["X-Cache"] == "MISS"
    [entry] = cache_entries(app)
    assert entry.expires_at - entry.created_at == pytest.approx(1.0, abs=0.1)  # the model's ttl, not [cache] ttl_s
    wait_until(lambda: time.time() > entry.expires_at, "the entry's expiry")
    assert client.post("/v1/chat/completions", json=CHAT, headers=bearer(key)).headers["X-Cache"] == "MISS"
    assert upstream_calls(fake_upstream) == 2


def test_what_is_never_cached(client, key, fake_upstream):
    for body in ({**CHAT, "model": "uncached-model"}, {**CHAT, "store": True}):
        answers = [client.post("/v1/chat/completions", json=body, headers=bearer(key)) for _ in range(2)]
        assert [answer.status_code for answer in answers] == [200, 200]
        assert all("X-Cache" not in answer.headers for answer in answers)
    assert upstream_calls(fake_upstream) == 4
    assert not any(row.cache_hit for row in usage_rows())


def test_a_stream_that_never_finished_is_not_stored(app, client, key, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply([(0, chat_chunk(role="assistant", content="")),
                                                              (0, chat_chunk("cut"))])
    streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(key))
    assert streamed.headers["X-Cache"] == "MISS" and "cut" in streamed.get_data(as_text=True)
    assert cache_entries(app) == []


def test_embeddings_and_completions_hit_json_and_streamed(client, key, fake_upstream):
    embedding = {"model": "test-model", "input": "hello"}
    embeddings = [client.post("/v1/embeddings", json=embedding, headers=bearer(key)) for _ in range(2)]
    assert [answer.headers["X-Cache"] for answer in embeddings] == ["MISS", "HIT"]
    assert embeddings[1].json["data"] == embeddings[0].json["data"]
    legacy = {"model": "test-model", "prompt": "Say"}
    completions = [client.post("/v1/completions", json=legacy, headers=bearer(key)) for _ in range(2)]
    assert [answer.headers["X-Cache"] for answer in completions] == ["MISS", "HIT"]
    assert completions[1].json["choices"][0]["text"] == "legacy text"
    streamed = client.post("/v1/completions", json={**legacy, "stream": True,
                                                   "stream_options": {"include_usage": True}}, headers=bearer(key))
    data = sse_data(streamed.get_data(as_text=True))
    assert streamed.headers["X-Cache"] == "HIT" and data[-1] == "[DONE]"
    assert "".join(choice["text"] for chunk in data[:-1] for choice in chunk["choices"]) == "legacy text"
    assert data[-2]["usage"]["total_tokens"] == 6
    assert upstream_calls(fake_upstream) == 2
    assert [row.cache_hit for row in usage_rows()] == [False, True, False, True, True]


def test_translated_messages_hit_json_and_stream_for_the_anthropic_sdk(live_server, key, fake_upstream):
    sdk = anthropic.Anthropic(base_url=live_server, api_key=key, max_retries=0, timeout=20)
    ask = {"model": "test-model", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    with sdk.messages.stream(**ask) as stream:
        streamed = stream.get_final_message()
        assert stream.response.headers["X-Cache"] == "MISS"
    raw = sdk.messages.with_raw_response.create(**ask)
    message = raw.parse()
    assert raw.headers["X-Cache"] == "HIT" and message.content[0].text == "Hello world" == streamed.content[0].text
    assert message.id != streamed.id and message.id.startswith("msg_")
    with sdk.messages.stream(**ask) as stream:
        replayed = stream.get_final_message()
        assert stream.response.headers["X-Cache"] == "HIT"
    assert replayed.content[0].text == "Hello world" and replayed.stop_reason == "end_turn"
    assert upstream_calls(fake_upstream) == 1
    assert [(row.endpoint, row.cache_hit) for row in usage_rows()] == [("messages", False), ("messages", True),
                                                                       ("messages", True)]


@both_databases
def test_native_messages_hit_json_and_stream(live_server, key, anthropic_fake: FakeAnthropic):
    sdk = anthropic.Anthropic(base_url=live_server, api_key=key, max_retries=0, timeout=20)
    ask = {"model": "claude-model", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
           "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}},
                                                          "required": ["q"]}}],
           "tool_choice": {"type": "any"}}
    with sdk.messages.stream(**ask) as stream:
        first = stream.get_final_message()
        assert stream.response.headers["X-Cache"] == "MISS"
    with sdk.messages.stream(**ask) as stream:
        replayed = stream.get_final_message()
        assert stream.response.headers["X-Cache"] == "HIT"
    raw = sdk.messages.with_raw_response.create(**ask)
    assert raw.headers["X-Cache"] == "HIT"
    assert [block.model_dump() for block in replayed.content] == [block.model_dump() for block in first.content]
    assert raw.parse().content[0].input == first.content[0].input == {"q": "Paris"}
    assert (replayed.usage.input_tokens, replayed.usage.output_tokens) == (12, 9) and replayed.id != first.id
    assert len(anthropic_fake.requests) == 1
    rows = usage_rows()
    assert [(row.cache_hit, row.cost) for row in rows] == [(False, 12 * 1000 + 9 * 2000), (True, 0), (True, 0)]


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A throwaway redis-server on a free loopback port (no persistence)."""
    redis = pytest.importorskip("redis")
    port = free_port()
    try:
        process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: _pings(redis, url), "redis-server to answer")
        yield url, process
    finally:
        process.kill()
        process.wait()


def _pings(redis: Any, url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.exceptions.ConnectionError:
        return False


def test_requests_still_succeed_when_redis_stops_mid_run(make_settings, anthropic_fake, funded_key, fake_upstream):
    with redis_server() as (url, process):
        app = create_app(make_settings(**cached_tables(anthropic_fake.base_url,
                                                       {"cache": {"backend": "redis", "url": url}})))
        db.upgrade()
        try:
            client, key = app.test_client(), funded_key("redis")
            before = [client.post("/v1/chat/completions", json=CHAT, headers=bearer(key)) for _ in range(2)]
            assert [answer.headers["X-Cache"] for answer in before] == ["MISS", "HIT"]
            process.kill()
            process.wait()
            after = [client.post("/v1/chat/completions", json=CHAT, headers=bearer(key)),
                     client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(key))]
            assert [answer.status_code for answer in after] == [200, 200]
            assert [answer.headers["X-Cache"] for answer in after] == ["MISS", "MISS"]
            assert after[0].json["choices"][0]["message"]["content"] == "Hello from upstream"
            assert sse_data(after[1].get_data(as_text=True))[-1] == "[DONE]"
            assert upstream_calls(fake_upstream) == 3
        finally:
            lifecycle.close(app)


# -- streams assembled into the answer they stream (gateway.api.stream_assembly) -------------------------------


def chat_answer(choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "gen-1", "object": "chat.completion", "created": 5, "model": "m", "provider": "fake",
            "system_fingerprint": None, "choices": choices,
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}


CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "Paris"}'}}


@pytest.mark.parametrize("choices", [
    [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "logprobs": None, "finish_reason": "stop"}],
    [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
      "logprobs": None, "finish_reason": "tool_calls"}],
    [{"index": 0, "message": {"role": "assistant", "content": "a", "reasoning_content": "think"}, "logprobs": None,
      "finish_reason": "length"},
     {"index": 1, "message": {"role": "assistant", "content": "b"}, "logprobs": None, "finish_reason": "stop"}],
], ids=["text", "tool-calls", "two-choices-reasoning"])
def test_a_chat_stream_assembles_to_the_completion_its_replay_streams(choices):
    completion = chat_answer(choices)
    assembly = ChatAssembly()
    for chunk in replay_chat_chunks(CachedAnswer("chat/completions", "m", completion, Usage(), 0), "gen-1", 5):
        assembly.feed(chunk)
    assert assembly.finished and assembly.answer("gen-1", "m", "fake") == completion


def test_a_chat_stream_with_an_unfinished_choice_is_not_finished():
    assembly = ChatAssembly()
    assembly.feed(chat_chunk("x", finish="stop"))
    assembly.feed({**chat_chunk("y"), "choices": [{"index": 1, "delta": {"content": "y"}, "finish_reason": None}]})
    assert not assembly.finished


def test_a_completion_stream_assembles_to_its_completion():
    completion = {"id": "gen-1", "object": "text_completion", "created": 5, "model": "m", "provider": "fake",
                  "system_fingerprint": None, "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
                  "choices": [{"index": 0, "text": "legacy", "logprobs": None, "finish_reason": "stop"}]}
    assembly = CompletionAssembly()
    for chunk in replay_completion_chunks(CachedAnswer("completions", "m", completion, Usage(), 0), "gen-1", 5):
        assembly.feed(chunk)
    assert assembly.finished and assembly.answer("gen-1", "m", "fake") == completion


def test_an_anthropic_stream_assembles_to_its_message_and_back():
    message = fake_message([{"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"},
                            {"type": "text", "text": "Hello from Claude"},
                            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "Paris"}}],
                           "tool_use")
    assembly = MessageAssembly()
    for _, payload in stream_events(message).events:
        assembly.feed(payload)
    assert assembly.finished and assembly.answer() == message
    replayed = MessageAssembly()
    for _, payload in replay_message_events(CachedAnswer("messages", "m", message, Usage(), 0), "msg_new"):
        replayed.feed(payload)
    assert replayed.finished and replayed.answer() == {**message, "id": "msg_new"}


def test_an_anthropic_stream_with_an_error_event_is_not_finished():
    assembly = MessageAssembly()
    for _, payload in stream_events(fake_message([{"type": "text", "text": "x"}])).events[:-1]:
        assembly.feed(payload)
    assembly.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assembly.feed({"type": "message_stop"})
    assert not assembly.finished
