"""Routing strategies end to end: three loopback fakes behind one model of a live gateway (two gunicorn workers).

Which fake answered is told three ways, and the tests check they agree: the fakes count what they
served, every answer (and stream chunk) names its `provider` (each fake is its own provider), and
the usage row names its `deployment`. The first tests check the fakes themselves with the official
`openai` SDK, as every fake upstream is.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import requests

from tests.faults.books import Payer, newest_row, rows_of
from tests.faults.load import fund
from tests.live_gateway import LiveGateway, live_gateway
from tests.routing_fakes import (
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    ROUTED_MODEL,
    RoutingFake,
    routed_prices,
    routing_config,
    routing_fakes,
)

WORKERS = 2
CLIENT_THREADS = 8
GRANT = 10**11  # micro-credits: far more than the holds of every request in flight
REQUEST_TIMEOUT_S = 30
MAX_RECOVERY_BATCHES = 20  # of 30 requests: the latency test's bound for traffic to come back
BODY = {"model": ROUTED_MODEL, "messages": [{"role": "user", "content": "which fake are you?"}], "max_tokens": 16}


@pytest.fixture
def fakes() -> Iterator[list[RoutingFake]]:
    started = routing_fakes(3)
    yield started
    for fake in started:
        fake.stop()


@pytest.fixture
def payer(database_url: str) -> Payer:
    return fund(database_url, GRANT)


def sdk(fake: RoutingFake) -> openai.OpenAI:
    """The official client straight at one fake, without its own retries."""
    return openai.OpenAI(base_url=fake.base_url, api_key="unused", max_retries=0, timeout=10)


def test_the_openai_sdk_reads_the_fakes_json_and_stream(fakes: list[RoutingFake]) -> None:
    fake = fakes[0]
    completion = sdk(fake).chat.completions.create(model="routed-upstream", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "answered by a"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    chunks = list(sdk(fake).chat.completions.create(model="routed-upstream", messages=[{"role": "user", "content": "hi"}],
                                                    stream=True, stream_options={"include_usage": True}))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == "Hello from a fake"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == COMPLETION_TOKENS
    assert [model.id for model in sdk(fake).models.list()] == ["routed-upstream"]
    assert (fake.received, fake.answered, fake.models_requests) == (2, 2, 1)


def test_the_fake_fails_breaks_streams_and_restarts_on_its_port(fakes: list[RoutingFake]) -> None:
    fake, messages = fakes[1], [{"role": "user", "content": "hi"}]
    fake.fail(429, retry_after=2, count=1)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(fake).chat.completions.create(model="m", messages=messages)
    assert refused.value.response.headers["retry-after"] == "2"
    assert sdk(fake).chat.completions.create(model="m", messages=messages).usage.total_tokens == 18
    fake.break_stream_after_first_chunk(count=1)
    stream = sdk(fake).chat.completions.create(model="m", messages=messages, stream=True)
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in stream:
            assert chunk.choices[0].delta.content == "Hello"
    port = fake.port
    fake.slow(30)
    cut = threading.Timer(0.2, fake.stop)  # a crash while a request waits for its first byte
    cut.start()
    with pytest.raises(openai.APIConnectionError):
        sdk(fake).chat.completions.create(model="m", messages=messages)
    cut.join()
    with pytest.raises(openai.APIConnectionError):
        sdk(fake).chat.completions.create(model="m", messages=messages)
    fake.clear()
    fake.start()
    assert fake.port == port
    assert sdk(fake).chat.completions.create(model="m", messages=messages).choices[0].message.content == "answered by b"


def ask(served: LiveGateway, payer: Payer, session: requests.Session, stream: bool) -> str:
    """One chat request through the gateway; the provider (the fake's name) that answered it."""
    body = {**BODY, "stream": True} if stream else BODY
    with session.post(f"{served.base_url}/v1/chat/completions", json=body, headers=payer.headers,
                      timeout=REQUEST_TIMEOUT_S, stream=stream) as answer:
        assert answer.status_code == 200, answer.text
        if not stream:
            return answer.json()["provider"]
        events = [line.removeprefix("data: ") for line in answer.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "[DONE]", events
    providers = {json.loads(event).get("provider") for event in events[:-1]}
    assert len(providers) == 1, providers
    return providers.pop()


def spread(served: LiveGateway, payer: Payer, count: int, threads: int = CLIENT_THREADS,
           stream_every: int = 0) -> Counter[str]:
    """Send `count` requests from `threads` client threads (every `stream_every`-th streamed); answers per provider."""
    local = threading.local()

    def one(index: int) -> str:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return ask(served, payer, local.session, bool(stream_every) and index % stream_every == 0)

    with ThreadPoolExecutor(threads) as pool:
        return Counter(pool.map(one, range(count)))


def served_counts(fakes: list[RoutingFake]) -> dict[str, int]:
    return {fake.name: fake.answered for fake in fakes}


def four_sigma(count: int, share: float) -> int:
    """Four standard deviations of a binomial count: the tolerance of a share over `count` draws."""
    return math.ceil(4 * math.sqrt(count * share * (1 - share)))


def test_weighted_3_1_0_spreads_400_requests_by_weight(tmp_path, database_url, fakes, payer) -> None:
    count = 400
    tolerance = four_sigma(count, 0.75)  # 35: p(failing by chance) ~ 6e-5
    config = routing_config(database_url, fakes, weights=[3, 1, 0], strategy="weighted")
    with live_gateway(tmp_path, config, workers=WORKERS) as served:
        answered = spread(served, payer, count, stream_every=4)
    print(f"weighted 3:1:0 over {count}: {dict(answered)} (expected 300 +- {tolerance}, 100 +- {tolerance}, 0)")
    assert abs(answered["a"] - 300) <= tolerance and abs(answered["b"] - 100) <= tolerance, answered
    assert answered["c"] == 0 and fakes[2].received == 0
    assert served_counts(fakes) == {"a": answered["a"], "b": answered["b"], "c": 0}
    newest_row(payer, routed_prices(), count)  # waits for every row; no hold open; ledger == usage x price
    rows = rows_of(payer)
    assert Counter(row.deployment for row in rows) == +answered
    assert {row.attempts for row in rows} == {1}


def test_least_busy_sends_fewer_requests_to_a_slow_fake(tmp_path, database_url, fakes, payer) -> None:
    slow, fast = fakes[1], [fakes[0], fakes[2]]
    slow.slow(1.0)
    config = routing_config(database_url, fakes, strategy="least_busy")
    with live_gateway(tmp_path, config, workers=WORKERS) as served:
        answered = spread(served, payer, 120)
    print(f"least_busy, b slow (1 s), 120 requests from {CLIENT_THREADS} threads: {dict(answered)}")
    assert sum(answered.values()) == 120
    assert all(answered["b"] < answered[fake.name] for fake in fast), answered
    assert served_counts(fakes) == {name: answered[name] for name in "abc"}


def test_latency_moves_traffic_off_a_slow_fake_and_back_once_it_recovers(tmp_path, database_url, fakes,
                                                                         payer) -> None:
    first = fakes[0]
    routing = {"latency_exploration": 0.2, "latency_decay": 0.7}  # few requests to learn either way
    config = routing_config(database_url, fakes, strategy="latency", tables={"routing": routing})
    with live_gateway(tmp_path, config, workers=WORKERS) as served:
        warm = spread(served, payer, 60, threads=4)
        first.slow(0.3)
        off = spread(served, payer, 100, threads=4)
        first.clear()
        back, batches = Counter(), 0
        # until a batch where `a` has a third of the traffic again (measured: batch 3 to 8; by exploration
        # alone, p(a >= 10 of 30) ~ 5e-4 per batch)
        while batches < MAX_RECOVERY_BATCHES and back["a"] < 10:
            back, batches = spread(served, payer, 30, threads=4), batches + 1
    print(f"latency: warm-up {dict(warm)}; a slow (0.3 s): {dict(off)}; "
          f"recovered: batch {batches} of 30 gave {dict(back)}")
    assert off["a"] <= 30 and off["b"] + off["c"] >= 70, off  # exploration 0.2 alone would give `a` about 10
    assert back["a"] >= 10, f"after {batches} batches of 30, `a` still got only {back}"
