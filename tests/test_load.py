"""This worker's load per deployment (gateway.upstream.load): in flight across threads, quota shares, the
sliding minute, and the time-to-first-token average. A settable clock moves time; nothing sleeps."""

from __future__ import annotations

import threading

import pytest

from gateway.config import DeploymentSettings
from gateway.upstream.load import LoadBoard, worker_share
from gateway.upstream.routing import Deployment


class Clock:
    """A monotonic clock the test sets."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def deployment(name: str = "openai/gpt-4o", **limits: int) -> Deployment:
    """A deployment with the given rpm / tpm / max_concurrency."""
    return Deployment(name, "openai", "gpt-4o", DeploymentSettings(provider="openai", **limits))


@pytest.mark.parametrize(("limit", "workers", "share"), [(10, 4, 3), (12, 4, 3), (1, 8, 1), (5, 1, 5), (7, 2, 4)])
def test_a_worker_share_is_the_limit_split_evenly_rounded_up(limit: int, workers: int, share: int) -> None:
    assert worker_share(limit, workers) == share


def test_in_flight_counts_across_threads_and_returns_to_zero() -> None:
    board = LoadBoard(workers=1)
    target = deployment()
    threads_count, rounds = 8, 300
    all_in = threading.Barrier(threads_count)
    seen_together: list[int] = []

    def worker() -> None:
        release = board.begin(target, 10)
        all_in.wait(timeout=30)
        seen_together.append(board.in_flight(target.name))
        all_in.wait(timeout=30)
        release()
        release()  # idempotent: a second call changes nothing
        for _ in range(rounds):
            again = board.begin(target, 1)
            again()
            again()

    threads = [threading.Thread(target=worker) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert seen_together == [threads_count] * threads_count
    assert board.in_flight(target.name) == 0


def test_a_release_called_twice_ends_only_its_own_request() -> None:
    board = LoadBoard(workers=1)
    target = deployment()
    first, second = board.begin(target, 1), board.begin(target, 1)
    first()
    first()
    assert board.in_flight(target.name) == 1
    second()
    assert board.in_flight(target.name) == 0
    assert board.in_flight("never-used") == 0
    assert board.minute("never-used") == (0, 0)


def test_rpm_share_counts_finished_requests_too() -> None:
    board = LoadBoard(workers=4, clock=Clock())
    target = deployment(rpm=10)  # share 3 per worker
    for _ in range(2):
        board.begin(target, 0)()
    assert not board.at_limit(target, 0)
    board.begin(target, 0)()
    assert board.at_limit(target, 0)


def test_tpm_share_counts_the_tokens_about_to_be_sent() -> None:
    board = LoadBoard(workers=2, clock=Clock())
    target = deployment(tpm=1000)  # share 500 per worker
    assert board.at_limit(target, 501)  # one request larger than the share alone is at the limit
    board.begin(target, 300)
    assert not board.at_limit(target, 200)
    assert board.at_limit(target, 201)


def test_concurrency_share_frees_up_on_release() -> None:
    board = LoadBoard(workers=2, clock=Clock())
    target = deployment(max_concurrency=3)  # share 2 per worker
    first = board.begin(target, 0)
    assert not board.at_limit(target, 0)
    board.begin(target, 0)
    assert board.at_limit(target, 0)
    first()
    assert not board.at_limit(target, 0)


def test_a_deployment_without_limits_is_never_at_its_limit() -> None:
    board = LoadBoard(workers=8, clock=Clock())
    target = deployment()
    for _ in range(1000):
        board.begin(target, 100_000)
    assert not board.at_limit(target, 10**9)


def test_limits_are_per_deployment_name() -> None:
    board = LoadBoard(workers=1, clock=Clock())
    busy, idle = deployment("busy", rpm=1), deployment("idle", rpm=1)
    board.begin(busy, 0)()
    assert board.at_limit(busy, 0)
    assert not board.at_limit(idle, 0)


def test_requests_leave_the_window_after_a_minute() -> None:
    clock = Clock(1000.0)
    board = LoadBoard(workers=1, clock=clock)
    target = deployment(rpm=2, tpm=100)
    board.begin(target, 40)()
    clock.now = 1030.5
    board.begin(target, 40)()
    assert board.at_limit(target, 0)  # 2 requests in the minute
    clock.now = 1059.9
    assert board.at_limit(target, 0)
    clock.now = 1060.0  # the first request's second has left the window
    assert not board.at_limit(target, 60)
    assert board.at_limit(target, 61)  # the second one's 40 tokens still count
    clock.now = 1090.0
    assert not board.at_limit(target, 100)


def test_the_window_stays_bounded_under_steady_traffic() -> None:
    clock = Clock(0.0)
    board = LoadBoard(workers=1, clock=clock)
    target = deployment(rpm=1_000_000)
    for tick in range(10_000):
        clock.now = tick * 0.1  # 10 requests a second for 1000 s
        board.begin(target, 1)()
    assert board.minute(target.name) == (600, 600)  # the last 60 seconds
    assert len(board._loads[target.name].buckets) == 60  # one per second, however many requests


def test_ttft_is_an_exponentially_weighted_average() -> None:
    board = LoadBoard(workers=1)
    assert board.ttft("openai/gpt-4o") is None
    board.observe_ttft("openai/gpt-4o", 1.0, decay=0.3)
    assert board.ttft("openai/gpt-4o") == 1.0  # the first sample is the average
    board.observe_ttft("openai/gpt-4o", 2.0, decay=0.3)
    assert board.ttft("openai/gpt-4o") == pytest.approx(1.3)
    board.observe_ttft("openai/gpt-4o", 0.0, decay=0.5)
    assert board.ttft("openai/gpt-4o") == pytest.approx(0.65)
    assert board.ttft("azure/gpt4o") is None


def test_batch_lines_stop_at_their_part_of_the_limits_and_leave_the_rest_to_live_requests() -> None:
    """`part` (1 - [batches] live_reserve) scales rpm, tpm and max_concurrency before the worker share."""
    board = LoadBoard(workers=1, clock=Clock())
    limited = deployment(rpm=10, tpm=1000, max_concurrency=5)
    for _ in range(8):
        board.begin(limited, 10)()  # finished: counted in the minute, not in flight
    assert board.at_limit(limited, 10, part=0.8)  # 8 of 10 requests this minute: the batch part is used up
    assert not board.at_limit(limited, 10)  # live requests still have 2
    busy = deployment("busy", max_concurrency=5)
    for _ in range(4):
        board.begin(busy, 0)
    assert board.at_limit(busy, 0, part=0.8) and not board.at_limit(busy, 0)
    assert not board.at_limit(deployment("unlimited"), 10**9, part=0.1)  # no limits: never held back
    tiny = deployment("tiny", rpm=1)
    assert not board.at_limit(tiny, 0, part=0.5)  # a part never rounds a limit down to nothing
