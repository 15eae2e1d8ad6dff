"""Rate limits: pure decisions and headers, exact counts across threads and processes, Redis."""

from __future__ import annotations

import multiprocessing
import os
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from playhouse.migrations import Runner

from gateway import db
from gateway.accounting.ratelimit import (
    DatabaseWindows,
    RateLimiter,
    RateWindow,
    RedisWindows,
    WindowCounts,
    decide,
    format_reset,
    rate_headers,
    retry_after,
    tokens_needed,
    window_start,
)
from gateway.config import ConfigError, LimitSettings
from gateway.errors import RateLimited, ServiceUnavailable

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL")
WINDOW_BEGIN = 1_699_999_980  # a multiple of 60
MID_WINDOW = WINDOW_BEGIN + 30.0
HEADER_NAMES = {
    f"x-ratelimit-{kind}-{unit}"
    for kind in ("limit", "remaining", "reset")
    for unit in ("requests", "tokens")
}
both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


class Clock:
    """An injectable clock that only moves when told to."""

    def __init__(self, value: float = MID_WINDOW) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-1.0, "0s"),
        (0.0004, "0s"),
        (0.012, "12ms"),
        (0.9994, "999ms"),
        (0.9996, "1s"),
        (1, "1s"),
        (59.5, "59.5s"),
        (1.25, "1.25s"),
        (60, "1m0s"),
        (90.5, "1m30.5s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
    ],
)
def test_format_reset_matches_openai_duration_strings(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


@pytest.mark.parametrize(("reset_s", "wait"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.2, 2), (59.9, 60)])
def test_retry_after_rounds_up_to_at_least_one_second(reset_s: float, wait: int) -> None:
    assert retry_after(reset_s) == wait


@pytest.mark.parametrize(
    ("estimated", "tpm", "needed"),
    [(0, 100, 1), (-5, 100, 1), (40, 100, 40), (100, 100, 100), (5000, 100, 100)],
)
def test_tokens_needed_is_clamped_to_one_and_the_whole_limit(estimated: int, tpm: int, needed: int) -> None:
    assert tokens_needed(estimated, tpm) == needed


def test_window_start_is_the_minute_boundary() -> None:
    assert window_start(WINDOW_BEGIN) == WINDOW_BEGIN
    assert window_start(WINDOW_BEGIN + 59.999) == WINDOW_BEGIN
    assert window_start(WINDOW_BEGIN + 60) == WINDOW_BEGIN + 60


def test_headers_report_limits_remaining_and_reset() -> None:
    headers = rate_headers(60, 1000, WindowCounts(requests=12, tokens=1200), 6.5)
    assert headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "48",
        "x-ratelimit-reset-requests": "6.5s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6.5s",
    }


@pytest.mark.parametrize(
    ("counts", "admitted", "needed", "named"),
    [
        (WindowCounts(10, 0), True, 1, None),
        (WindowCounts(10, 0), False, 1, "requests per min (RPM): Limit 10, Used 10, Requested 1"),
        (WindowCounts(3, 95), False, 10, "tokens per min (TPM): Limit 100, Used 95, Requested 10"),
    ],
)
def test_decide_names_the_exhausted_limit(
    counts: WindowCounts, admitted: bool, needed: int, named: str | None
) -> None:
    decision = decide(10, 100, counts, admitted=admitted, needed=needed, reset_s=12.3)
    assert decision.allowed is admitted
    assert set(decision.headers) >= HEADER_NAMES
    if admitted:
        assert decision.retry_after is None and "Retry-After" not in decision.headers
        decision.raise_if_denied()
        return
    assert decision.retry_after == 13 and decision.headers["Retry-After"] == "13"
    with pytest.raises(RateLimited) as raised:
        decision.raise_if_denied()
    assert raised.value.status == 429 and named in raised.value.message
    assert raised.value.headers == decision.headers


@pytest.fixture
def bound_database(database_url: str) -> Iterator[str]:
    """The test database bound and migrated."""
    db.bind(database_url)
    db.upgrade()
    yield database_url
    if not db.database.is_closed():
        db.database.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(bound_database: str, clock: Clock) -> Iterator[RateLimiter]:
    built = RateLimiter(DatabaseWindows(), default_rpm=600, default_tpm=1000, now=clock)
    yield built
    built.close()


def admit_from_threads(limiter: RateLimiter, threads: int, each: int, rpm: int) -> int:
    """Start `threads` threads at once, each admitting `each` requests; count the admitted ones."""
    admitted: list[bool] = []
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait(timeout=10)
        results = [limiter.admit(7, rpm, 10_000, 1).allowed for _ in range(each)]
        admitted.extend(results)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not any(worker.is_alive() for worker in workers)
    assert len(admitted) == threads * each
    return sum(admitted)


@both_databases
def test_threads_get_exactly_rpm_admissions_per_window(limiter: RateLimiter, clock: Clock) -> None:
    assert admit_from_threads(limiter, threads=8, each=10, rpm=25) == 25
    clock.value += 60
    assert admit_from_threads(limiter, threads=8, each=10, rpm=25) == 25


def admit_in_process(url: str, now: float, count: int, rpm: int, results) -> None:
    """Child process: bind the database and try `count` admissions at a fixed time."""
    db.bind(url)
    limiter = RateLimiter(DatabaseWindows(), 600, 10_000, now=lambda: now)
    results.put(sum(limiter.admit(9, rpm, 10_000, 1).allowed for _ in range(count)))


@both_databases
def test_processes_get_exactly_rpm_admissions(bound_database: str) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=admit_in_process, args=(bound_database, MID_WINDOW, 15, 20, results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    admitted = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(10)
    assert sum(admitted) == 20 and len(admitted) == 4


@both_databases
def test_a_new_window_resets_and_old_rows_are_swept(limiter: RateLimiter, clock: Clock) -> None:
    assert [limiter.admit(1, 3, 1000, 1).allowed for _ in range(4)] == [True, True, True, False]
    clock.value += 60
    decision = limiter.admit(1, 3, 1000, 1)
    assert decision.allowed and decision.headers["x-ratelimit-remaining-requests"] == "2"
    clock.value += 120
    limiter.admit(1, 3, 1000, 1)
    with db.database.connection_context():
        starts = [row.window_start for row in RateWindow.select()]
    assert starts == [window_start(clock.value)]


@both_databases
def test_recorded_tokens_reduce_remaining_and_deny_once_exhausted(limiter: RateLimiter) -> None:
    first = limiter.admit(2, 100, 100, 10)
    assert first.allowed and first.headers["x-ratelimit-remaining-tokens"] == "100"
    limiter.record_tokens(2, 95)
    denied = limiter.admit(2, 100, 100, 10)
    assert not denied.allowed and "tokens per min" in denied.reason
    assert denied.headers["x-ratelimit-remaining-tokens"] == "5"
    assert denied.headers["x-ratelimit-remaining-requests"] == "99"
    fits = limiter.admit(2, 100, 100, 5)
    assert fits.allowed and fits.headers["x-ratelimit-remaining-requests"] == "98"
    limiter.record_tokens(2, 5)
    assert not limiter.admit(2, 100, 100, 0).allowed


@both_databases
def test_a_request_larger_than_tpm_needs_an_untouched_window(limiter: RateLimiter, clock: Clock) -> None:
    assert limiter.admit(3, 100, 100, 5000).allowed
    limiter.record_tokens(3, 10)
    assert not limiter.admit(3, 100, 100, 5000).allowed
    clock.value += 60
    assert limiter.admit(3, 100, 100, 5000).allowed


def test_tokens_recorded_before_any_admission_count(limiter: RateLimiter) -> None:
    limiter.record_tokens(4, 1000)
    decision = limiter.admit(4, 10, 1000, 1)
    assert not decision.allowed and decision.headers["x-ratelimit-remaining-requests"] == "10"


def test_headers_count_down_and_reset_with_the_clock(limiter: RateLimiter, clock: Clock) -> None:
    clock.value = WINDOW_BEGIN + 0.5
    decisions = [limiter.admit(5, 3, 1000, 1) for _ in range(4)]
    assert [d.headers["x-ratelimit-remaining-requests"] for d in decisions] == ["2", "1", "0", "0"]
    assert {d.headers["x-ratelimit-reset-requests"] for d in decisions} == {"59.5s"}
    assert all(d.headers["x-ratelimit-limit-requests"] == "3" for d in decisions)
    assert decisions[-1].retry_after == 60 and decisions[-1].headers["Retry-After"] == "60"
    assert all(set(d.headers) >= HEADER_NAMES for d in decisions)


def test_a_zero_limit_denies_without_counting(limiter: RateLimiter) -> None:
    decision = limiter.admit(6, 0, 1000, 1)
    assert not decision.allowed and decision.headers["x-ratelimit-remaining-requests"] == "0"
    with db.database.connection_context():
        assert RateWindow.select().count() == 0


def test_admit_keeps_an_open_request_connection(limiter: RateLimiter) -> None:
    db.database.connect()
    limiter.admit(8, 10, 1000, 1)
    limiter.record_tokens(8, 3)
    assert not db.database.is_closed()
    db.database.close()


def test_limits_for_prefers_key_overrides(limiter: RateLimiter) -> None:
    assert limiter.limits_for(None, None) == (600, 1000)
    assert limiter.limits_for(5, None) == (5, 1000)
    assert limiter.limits_for(None, 7) == (600, 7)


def test_closed_limiter_refuses_work(limiter: RateLimiter) -> None:
    limiter.close()
    limiter.close()
    with pytest.raises(RuntimeError):
        limiter.admit(1, 10, 10, 1)


def test_from_settings_builds_the_configured_backend(bound_database: str) -> None:
    built = RateLimiter.from_settings(LimitSettings(rpm=5, tpm=50))
    assert isinstance(built.store, DatabaseWindows) and built.limits_for(None, None) == (5, 50)
    with pytest.raises(ConfigError, match=r"limits\.url"):
        RateLimiter.from_settings(LimitSettings(backend="redis"))


def test_migration_down_drops_and_up_recreates_the_table(bound_database: str) -> None:
    with db.database.connection_context():
        runner = Runner(db.database.obj, str(db.MIGRATIONS_DIR))
        assert "0003_rate_windows" in runner.down("0003_rate_windows")
        assert not RateWindow.table_exists()
        assert "0003_rate_windows" in runner.up()
        assert RateWindow.table_exists()


@pytest.fixture
def redis_limiter(clock: Clock) -> Iterator[tuple[RateLimiter, Callable[[str], object], str]]:
    """A Redis-backed limiter under a unique key prefix, removed afterwards."""
    if not REDIS_URL:
        pytest.skip("GATEWAY_TEST_REDIS_URL is not set")
    import redis

    prefix = f"test-ratelimit-{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    built = RateLimiter(RedisWindows(REDIS_URL, prefix=prefix), 600, 1000, now=clock)
    yield built, client, prefix
    built.close()
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


def test_redis_threads_get_exactly_rpm_admissions(redis_limiter, clock: Clock) -> None:
    limiter, client, prefix = redis_limiter
    assert admit_from_threads(limiter, threads=8, each=10, rpm=25) == 25
    ttl = client.ttl(f"{prefix}7:{window_start(clock.value)}")
    assert 0 < ttl <= 120
    clock.value += 60
    assert admit_from_threads(limiter, threads=8, each=10, rpm=25) == 25


def test_redis_recorded_tokens_deny_once_exhausted(redis_limiter) -> None:
    limiter, _, _ = redis_limiter
    assert limiter.admit(2, 100, 100, 10).allowed
    limiter.record_tokens(2, 95)
    denied = limiter.admit(2, 100, 100, 10)
    assert not denied.allowed and denied.headers["x-ratelimit-remaining-tokens"] == "5"
    fits = limiter.admit(2, 100, 100, 5)
    assert fits.allowed and fits.headers["x-ratelimit-remaining-requests"] == "98"


def test_an_unreachable_redis_is_a_503_without_the_url(clock: Clock) -> None:
    pytest.importorskip("redis")
    limiter = RateLimiter(RedisWindows("redis://:hunter2@127.0.0.1:1/0", timeout_s=1), 10, 100, now=clock)
    with pytest.raises(ServiceUnavailable) as raised:
        limiter.admit(1, 10, 100, 1)
    assert raised.value.status == 503 and "hunter2" not in raised.value.message
    with pytest.raises(ServiceUnavailable):
        limiter.record_tokens(1, 5)
    limiter.close()
