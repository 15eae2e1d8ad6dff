"""The response cache's core on SQLite, PostgreSQL and Redis: keys, freshness, bounds, outages, and replays
that the official SDKs accumulate back into the stored answer."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import db
from gateway.accounting.usage import Usage
from gateway.cache.database_cache import DatabaseCache, own_file_of
from gateway.cache.entry import StoredEntry
from gateway.cache.key import cache_key, cache_scope, cacheable
from gateway.cache.redis_cache import RedisCache
from gateway.cache.replay import replay_chat_chunks, replay_completion_chunks, replay_message_events
from gateway.cache.store import CacheBackend, CachedAnswer, ResponseCache, response_cache
from gateway.config import CacheSettings, build_settings
from gateway.observability.metrics import metrics
from gateway.tables import ResponseCacheEntry
from tests.fake_upstream import FakeUpstream, StreamReply
from tests.polling import wait_until
from tests.ports import free_port

TEST_DATABASE_URL = os.environ.get("GATEWAY_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL")
START = 1_700_000_000.0
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
CHAT = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "upstream-m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


class Clock:
    """A settable wall clock."""

    def __init__(self) -> None:
        self.value = START

    def __call__(self) -> float:
        return self.value


def answer_of(body: dict[str, Any] = CHAT, created: float = START) -> CachedAnswer:
    return CachedAnswer("chat/completions", "m", body, Usage(5, 2), created)


def key_of(text: str) -> str:
    return cache_key("account:1", "m", "chat/completions", {"messages": [{"role": "user", "content": text}]})


# -- the key and what may be cached (pure) ----------------------------------------------------------


SAME_KEY = [
    ({"a": 1, "b": {"y": 2, "x": 1}}, {"b": {"x": 1, "y": 2}, "a": 1}),  # key order, nested too
    (BODY, {**BODY, "stream": True, "stream_options": {"include_usage": True}}),
    (BODY, {**BODY, "user": "alice", "metadata": {"team": "a"}, "models": ["backup"]}),
    (BODY, {**BODY, "model": "an-alias"}),  # the key names the public model itself
    ({"temperature": 1}, {"temperature": 1.0}),
]
OTHER_KEY = [
    (BODY, {**BODY, "temperature": 0.7}),
    (BODY, {**BODY, "messages": [{"role": "user", "content": "hi!"}]}),
    (BODY, {**BODY, "max_tokens": 10}),
    ({"messages": [1, 2]}, {"messages": [2, 1]}),  # lists keep their order
    ({"temperature": True}, {"temperature": 1}),
]


@pytest.mark.parametrize(("first", "second"), SAME_KEY)
def test_requests_that_ask_the_same_share_a_key(first: dict, second: dict) -> None:
    assert cache_key("account:1", "m", "chat/completions", first) == cache_key("account:1", "m", "chat/completions",
                                                                               second)


@pytest.mark.parametrize(("first", "second"), OTHER_KEY)
def test_requests_that_ask_otherwise_do_not(first: dict, second: dict) -> None:
    assert cache_key("account:1", "m", "chat/completions", first) != cache_key("account:1", "m", "chat/completions",
                                                                               second)


def test_scope_model_and_endpoint_are_part_of_the_key() -> None:
    base = cache_key("account:1", "m", "chat/completions", BODY)
    assert len(base) == 64 and int(base, 16) >= 0
    assert base != cache_key("account:2", "m", "chat/completions", BODY)
    assert base != cache_key("account:1", "m2", "chat/completions", BODY)
    assert base != cache_key("account:1", "m", "completions", BODY)


@pytest.mark.parametrize(("endpoint", "body", "expected"), [
    ("chat/completions", BODY, True),
    ("completions", {"prompt": "x"}, True),
    ("embeddings", {"input": "x"}, True),
    ("messages", {"messages": [], "max_tokens": 5}, True),
    ("chat/completions", {**BODY, "n": 1}, True),
    ("chat/completions", {**BODY, "store": False}, True),
    ("chat/completions", {**BODY, "store": True}, False),
    ("chat/completions", {**BODY, "n": 3}, False),
    ("chat/completions", {**BODY, "tools": "auto"}, False),
    ("messages", {"messages": [], "mcp_servers": [{"type": "url", "url": "https://x"}]}, False),
    ("responses", {"input": "x"}, False),
])
def test_what_may_be_cached(endpoint: str, body: dict, expected: bool) -> None:
    assert cacheable(endpoint, body) is expected


def test_scopes_are_per_account_unless_an_operator_shares_one() -> None:
    assert cache_scope(7, CacheSettings()) == "account:7"
    assert cache_scope(7, CacheSettings(shared_scope="team")) == cache_scope(8, CacheSettings(shared_scope="team"))
    assert cache_scope(7, CacheSettings(shared_scope="account:8")) != cache_scope(8, CacheSettings())


# -- the store on each backend ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def new_backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[int], CacheBackend]]:
    """Builds backends over one fresh store, bounded to `max_entries` (database eviction on every store)."""
    if request.param == "redis":
        if not REDIS_URL:
            pytest.skip("GATEWAY_TEST_REDIS_URL is not set")
        redis = pytest.importorskip("redis")
        prefix = f"test-cache-{uuid.uuid4().hex}:"
        yield lambda max_entries: RedisCache(REDIS_URL, max_entries, prefix=prefix)
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()
        return
    if request.param == "postgres" and not TEST_DATABASE_URL:
        pytest.skip("GATEWAY_TEST_DATABASE_URL is not set")
    pool = db.bind(TEST_DATABASE_URL if request.param == "postgres" else f"sqlite:///{tmp_path / 'gateway.db'}")
    db.upgrade()
    with db.database.connection_context():
        ResponseCacheEntry.delete().execute()
    yield lambda max_entries: DatabaseCache(max_entries, evict_every=1)
    pool.close_all()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(new_backend: Callable[[int], CacheBackend], clock: Clock) -> ResponseCache:
    return ResponseCache(new_backend(1000), 10_000, clock)


def test_an_answer_comes_back_as_stored(cache: ResponseCache) -> None:
    key = key_of("hi")
    assert cache.get(key) is None
    cache.put(key, answer_of(), 60, scope="account:1")
    assert cache.get(key) == answer_of()
    assert cache.get(key_of("other")) is None


def test_a_new_answer_replaces_the_old(cache: ResponseCache, clock: Clock) -> None:
    cache.put(key_of("hi"), answer_of(), 60)
    clock.value += 5
    newer = answer_of({**CHAT, "id": "chatcmpl-2"}, created=clock.value)
    cache.put(key_of("hi"), newer, 60)
    assert cache.get(key_of("hi")) == newer


def test_an_entry_expires_after_its_ttl(cache: ResponseCache, clock: Clock) -> None:
    cache.put(key_of("hi"), answer_of(), 60)
    clock.value += 59
    assert cache.get(key_of("hi")) is not None
    clock.value += 1
    assert cache.get(key_of("hi")) is None


def test_max_age_bounds_a_hit_without_removing_it(cache: ResponseCache, clock: Clock) -> None:
    cache.put(key_of("hi"), answer_of(), 600)
    clock.value += 30
    assert cache.get(key_of("hi"), max_age_s=10) is None
    assert cache.get(key_of("hi"), max_age_s=30) is not None
    assert cache.get(key_of("hi")) is not None


def test_a_zero_ttl_stores_nothing(cache: ResponseCache) -> None:
    cache.put(key_of("hi"), answer_of(), 0)
    assert cache.get(key_of("hi")) is None


def test_an_answer_over_max_entry_bytes_is_not_stored(new_backend: Callable[[int], CacheBackend],
                                                      clock: Clock) -> None:
    cache = ResponseCache(new_backend(1000), 2048, clock)
    declined = metrics().cache_not_stored.labels("too_large")
    before = declined._value.get()
    big = answer_of({**CHAT, "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 3000}}]})
    cache.put(key_of("big"), big, 60)
    cache.put(key_of("small"), answer_of(), 60)
    assert cache.get(key_of("big")) is None and cache.get(key_of("small")) is not None
    assert declined._value.get() == before + 1


def test_the_least_recently_used_go_beyond_max_entries(new_backend: Callable[[int], CacheBackend],
                                                       clock: Clock) -> None:
    cache = ResponseCache(new_backend(3), 10_000, clock)
    evictions = metrics().cache_evictions.labels("size")
    before = evictions._value.get()
    for name in ("a", "b", "c"):
        clock.value += 1
        cache.put(key_of(name), answer_of(), 600)
    clock.value += 1
    assert cache.get(key_of("a")) is not None  # "a" is used again: "b" is now the least recently used
    for name in ("d", "e"):
        clock.value += 1
        cache.put(key_of(name), answer_of(), 600)
    kept = {name for name in "abcde" if cache.get(key_of(name)) is not None}
    assert kept == {"a", "d", "e"}
    assert evictions._value.get() == before + 2


def test_two_scopes_never_share_an_entry(cache: ResponseCache) -> None:
    first, second = (cache_key(cache_scope(account, CacheSettings()), "m", "chat/completions", BODY)
                     for account in (1, 2))
    cache.put(first, answer_of(), 60, scope="account:1")
    assert cache.get(second) is None
    assert cache.get(first) is not None


def test_hits_and_misses_are_counted(cache: ResponseCache) -> None:
    hits, misses = metrics().cache_hits._value, metrics().cache_misses._value
    before = hits.get(), misses.get()
    cache.get(key_of("hi"))
    cache.put(key_of("hi"), answer_of(), 60)
    cache.get(key_of("hi"))
    cache.get(key_of("hi"))
    assert (hits.get(), misses.get()) == (before[0] + 2, before[1] + 1)


# -- outages: a miss, a skipped store, one warning, and no exception --------------------------------------


def test_a_stopped_redis_is_a_miss_and_a_skipped_store(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    errors = metrics().cache_errors
    before = errors.labels("get")._value.get(), errors.labels("put")._value.get()
    cache = ResponseCache(RedisCache(f"redis://127.0.0.1:{free_port()}/0", 10), 10_000, monotonic=lambda: 0.0)
    with caplog.at_level(logging.WARNING, logger="gateway.cache.store"):
        assert cache.get(key_of("hi")) is None
        cache.put(key_of("hi"), answer_of(), 60)
    assert errors.labels("get")._value.get() == before[0] + 1
    assert errors.labels("put")._value.get() == before[1]  # paused after the first error: not even tried
    assert len([record for record in caplog.records if "unavailable" in record.message]) == 1
    cache.close()


class RedisServer:
    """A redis-server of the test's own on a free port, stopped and started again at will."""

    def __init__(self, binary: str, folder: str) -> None:
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", self.folder],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.listening, "redis-server listening")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def listening(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True
        return False


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("redis")
    server = RedisServer(binary, str(tmp_path))
    server.start()
    yield server
    server.stop()


def test_redis_stopped_mid_run_is_skipped_then_used_again(redis_server: RedisServer) -> None:
    now = [0.0]
    cache = ResponseCache(RedisCache(redis_server.url, 10), 10_000, monotonic=lambda: now[0])
    cache.put(key_of("hi"), answer_of(), 60)
    assert cache.get(key_of("hi")) is not None  # the pool now holds a live connection
    redis_server.stop()
    assert cache.get(key_of("hi")) is None
    cache.put(key_of("other"), answer_of(), 60)
    now[0] += 60  # past the pause: tried again, still down
    assert cache.get(key_of("hi")) is None
    redis_server.start()  # a fresh, empty server on the same port
    now[0] += 60
    cache.put(key_of("hi"), answer_of(), 60)
    assert cache.get(key_of("hi")) is not None
    cache.close()


def test_hits_reach_the_database_as_last_use_in_batches(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.cache.database_cache.TOUCH_BATCH", 2)
    pool = db.bind(f"sqlite:///{tmp_path / 'gateway.db'}")
    db.upgrade()
    try:
        clock = Clock()
        cache = ResponseCache(DatabaseCache(100, evict_every=1000), 10_000, clock)
        for name in ("a", "b"):
            cache.put(key_of(name), answer_of(), 600)
        clock.value += 10
        cache.get(key_of("a"))
        assert last_use(key_of("a")) == START  # remembered, not written
        clock.value += 10
        cache.get(key_of("b"))  # the second waiting hit: both written in one UPDATE
        assert (last_use(key_of("a")), last_use(key_of("b"))) == (START + 10, START + 20)
    finally:
        pool.close_all()


def last_use(key: str) -> float:
    with db.database.connection_context():
        return ResponseCacheEntry.get_by_id(key).last_used_at


def test_an_eviction_pass_deletes_expired_rows(tmp_path) -> None:
    pool = db.bind(f"sqlite:///{tmp_path / 'gateway.db'}")
    db.upgrade()
    try:
        clock, expired = Clock(), metrics().cache_evictions.labels("expired")
        before = expired._value.get()
        cache = ResponseCache(DatabaseCache(100, evict_every=1), 10_000, clock)
        cache.put(key_of("old"), answer_of(), 10)
        clock.value += 11
        cache.put(key_of("new"), answer_of(), 10)
        with db.database.connection_context():
            assert [row.key for row in ResponseCacheEntry.select()] == [key_of("new")]
        assert expired._value.get() == before + 1
    finally:
        pool.close_all()


def test_a_broken_database_is_a_miss_and_a_skipped_store(tmp_path) -> None:
    pool = db.bind(f"sqlite:///{tmp_path / 'unmigrated.db'}")  # no response_cache table
    try:
        cache = ResponseCache(DatabaseCache(10), 10_000)
        assert cache.get(key_of("hi")) is None
        cache.put(key_of("hi"), answer_of(), 60)
    finally:
        pool.close_all()


class FlakyBackend:
    """A backend that fails while `down`, counting the calls that reach it."""

    errors = (ConnectionError,)

    def __init__(self) -> None:
        self.down = True
        self.calls = 0
        self.entries: dict[str, StoredEntry] = {}

    def read(self, key: str, now: float) -> StoredEntry | None:
        self.calls += 1
        if self.down:
            raise ConnectionError("down")
        return self.entries.get(key)

    def write(self, key: str, entry: StoredEntry, now: float) -> tuple[int, int]:
        self.calls += 1
        if self.down:
            raise ConnectionError("down")
        self.entries[key] = entry
        return 0, 0

    def close(self) -> None:
        pass


def test_a_backend_that_failed_is_left_alone_a_while_then_used_again(caplog: pytest.LogCaptureFixture) -> None:
    backend, now = FlakyBackend(), [0.0]
    cache = ResponseCache(backend, 10_000, monotonic=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="gateway.cache.store"):
        for _ in range(5):
            assert cache.get(key_of("hi")) is None
            cache.put(key_of("hi"), answer_of(), 60)
        assert backend.calls == 1
        backend.down = False
        now[0] += 10
        cache.put(key_of("hi"), answer_of(), 60)
        assert cache.get(key_of("hi")) is not None
        backend.down = True
        now[0] += 10
        assert cache.get(key_of("hi")) is None
    warnings = [record for record in caplog.records if "unavailable" in record.message]
    assert len(warnings) == 1  # the second outage came within 30 s of the first warning


def test_a_corrupt_entry_is_a_miss() -> None:
    backend = FlakyBackend()
    backend.down = False
    backend.entries[key_of("hi")] = StoredEntry("chat/completions", "m", "{not json", "{}", START, START + 60)
    cache = ResponseCache(backend, 10_000, clock=lambda: START + 1)
    assert cache.get(key_of("hi")) is None


def test_a_closed_cache_misses_and_skips() -> None:
    backend = FlakyBackend()
    backend.down = False
    cache = ResponseCache(backend, 10_000)
    cache.close()
    cache.close()
    cache.put(key_of("hi"), answer_of(), 60)
    assert cache.get(key_of("hi")) is None and backend.calls == 0


def test_the_factory_follows_the_settings(tmp_path) -> None:
    base = {"database": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"}}
    assert response_cache(build_settings(base)) is None
    on = response_cache(build_settings({**base, "cache": {"enabled": True, "max_entries": 50}}))
    assert isinstance(on, ResponseCache) and isinstance(on.backend, DatabaseCache)
    assert on.backend.max_entries == 50
    if REDIS_URL:
        redis_backed = response_cache(build_settings({**base, "cache": {"enabled": True, "backend": "redis",
                                                                         "url": REDIS_URL}}))
        assert redis_backed is not None and isinstance(redis_backed.backend, RedisCache)
        redis_backed.close()



@pytest.mark.parametrize("url,own_file", [
    ("sqlite:///gateway.db", "gateway-cache.db"),
    ("sqlite:////var/lib/gateway/state.sqlite3", "/var/lib/gateway/state-cache.sqlite3"),
    ("sqlite:///data/gw", "data/gw-cache"),
    ("sqlite:///:memory:", None),
    ("sqlite:///", None),
    ("postgresql://u@h/db", None),
])
def test_on_sqlite_the_cache_has_its_own_file_beside_the_database(url: str, own_file: str | None) -> None:
    assert own_file_of(url) == (None if own_file is None else Path(own_file))


def test_workers_share_the_own_file_and_the_database_holds_no_entry(tmp_path) -> None:
    settings = build_settings({"database": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
                               "cache": {"enabled": True}})
    pool = db.bind(settings.database.url)
    db.upgrade()
    first, second = response_cache(settings), response_cache(settings)  # two workers (one thread each)
    assert first is not None and second is not None
    try:
        first.put(key_of("hi"), answer_of(), 60)
        hit = second.get(key_of("hi"))
        assert hit is not None and hit.answer == CHAT
        assert (tmp_path / "gateway-cache.db").is_file()
        with db.database.connection_context():
            assert ResponseCacheEntry.select().count() == 0
    finally:
        first.close()
        second.close()
        pool.close_all()

# -- replays, accumulated by the official SDKs --------------------------------------------------------------


TOOL_CHAT = {
    "id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "upstream-m",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
        "role": "assistant", "content": "Let me look.", "reasoning_content": "The user wants weather.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
        ]}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
}


@pytest.fixture
def replaying() -> Iterator[Callable[[list[str], bool], str]]:
    """A loopback server whose every answer is the given SSE data lines; returns its base URL."""
    fake = FakeUpstream().start()

    def serve(frames: list[str], done: bool = True) -> str:
        fake.responder = lambda path, body: StreamReply([(0, frame) for frame in frames], done=done)
        return fake.base_url

    yield serve
    fake.stop()


def test_a_chat_replay_accumulates_to_the_stored_completion(replaying) -> None:
    openai = pytest.importorskip("openai")
    chunks = replay_chat_chunks(answer_of(TOOL_CHAT), "gen-fresh", 1_800_000_000)
    assert {chunk["id"] for chunk in chunks} == {"gen-fresh"}
    client = openai.OpenAI(base_url=replaying([json.dumps(chunk) for chunk in chunks]), api_key="x", max_retries=0)
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    message, stored = final.choices[0].message, TOOL_CHAT["choices"][0]["message"]
    assert final.id == "gen-fresh" and final.created == 1_800_000_000
    assert message.content == stored["content"]
    assert [(call.id, call.function.name, call.function.arguments) for call in message.tool_calls] == [
        (call["id"], call["function"]["name"], call["function"]["arguments"]) for call in stored["tool_calls"]]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.total_tokens == 29
    reasoning = "".join(chunk["choices"][0]["delta"].get("reasoning_content", "") for chunk in chunks
                        if chunk["choices"])
    assert reasoning == stored["reasoning_content"]


def test_a_chat_replay_without_usage_ends_with_the_finish() -> None:
    chunks = replay_chat_chunks(answer_of(), "gen-1", 1, include_usage=False)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks) == "Hello there"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" not in chunks[-1]


def test_a_completion_replay_accumulates_to_the_stored_text(replaying) -> None:
    openai = pytest.importorskip("openai")
    stored = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "upstream-m",
              "choices": [{"index": 0, "text": "legacy text", "finish_reason": "length", "logprobs": None}],
              "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}
    chunks = replay_completion_chunks(CachedAnswer("completions", "m", stored, Usage(4, 2), START), "cmpl-new", 5)
    client = openai.OpenAI(base_url=replaying([json.dumps(chunk) for chunk in chunks]), api_key="x", max_retries=0)
    received = list(client.completions.create(model="m", prompt="p", stream=True))
    assert "".join(choice.text for chunk in received for choice in chunk.choices) == "legacy text"
    assert [choice.finish_reason for chunk in received for choice in chunk.choices if choice.finish_reason] == [
        "length"]
    assert received[-1].usage is not None and received[-1].usage.total_tokens == 6
    assert {chunk.id for chunk in received} == {"cmpl-new"}


MESSAGE = {
    "id": "msg_old", "type": "message", "role": "assistant", "model": "claude-x",
    "content": [
        {"type": "thinking", "thinking": "Consider the city.", "signature": "sig-1"},
        {"type": "text", "text": "Checking the weather."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo", "days": [1, 2]}},
    ],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 30, "output_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4},
}


def test_a_messages_replay_accumulates_to_the_stored_message(replaying) -> None:
    anthropic = pytest.importorskip("anthropic")
    events = replay_message_events(CachedAnswer("messages", "m", MESSAGE, Usage(34, 12, 4), START), "msg_new")
    # an SSE event's fields may come in any order: the fake writes `data:` first, then `event:`
    frames = [f"{json.dumps(data)}\nevent: {name}" for name, data in events]
    client = anthropic.Anthropic(base_url=replaying(frames, done=False).removesuffix("/v1"), api_key="x",
                                 max_retries=0)
    with client.messages.stream(model="m", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    assert final.id == "msg_new"
    assert [block.model_dump(exclude_none=True) for block in final.content] == MESSAGE["content"]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (30, 12, 4)
