"""This worker's load on each deployment: requests in flight, the last minute's requests and tokens, and TTFT.

One `LoadBoard` per gunicorn worker process, shared by its request threads under one lock. The counts are
per worker, not shared across workers or hosts: a deployment's quota (rpm, tpm, max_concurrency) is split
evenly, each worker keeping to its share, ceil(limit / workers). That needs no I/O on the hot path, at the
price of a worker with idle neighbours stopping at its share (the limits are soft: the balancer prefers a
deployment with room, and still sends when every one is at its limit).

The minute is a sliding window of per-second buckets (at most 60 per deployment, however busy), trimmed on
access. The clock is injected so tests move time without sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.upstream.routing import Deployment

WINDOW_S = 60


class DeploymentLoad:
    """One deployment's counters on this worker (mutated only under the board's lock)."""

    __slots__ = ("buckets", "in_flight", "requests", "tokens", "ttft_s")

    def __init__(self) -> None:
        self.in_flight = 0
        self.buckets: deque[list[int]] = deque()  # [second, requests, tokens], oldest first
        self.requests = 0  # sums over the buckets
        self.tokens = 0
        self.ttft_s: float | None = None

    def trim(self, second: int) -> None:
        """Forget the buckets that left the window ending at `second` (inclusive, WINDOW_S seconds long)."""
        buckets = self.buckets
        while buckets and buckets[0][0] <= second - WINDOW_S:
            _, requests, tokens = buckets.popleft()
            self.requests -= requests
            self.tokens -= tokens

    def count(self, second: int, tokens: int) -> None:
        """Add one request of `tokens` to the window at `second`."""
        self.trim(second)
        buckets = self.buckets
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
            buckets[-1][2] += tokens
        else:
            buckets.append([second, 1, tokens])
        self.requests += 1
        self.tokens += tokens


def worker_share(limit: int, workers: int) -> int:
    """This worker's part of a host-wide limit: limit / workers, rounded up (so the share is never 0)."""
    return math.ceil(limit / workers)


class LoadBoard:
    """Per-deployment load on this worker, by deployment name (thread-safe: one lock)."""

    def __init__(self, workers: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.workers = max(1, workers)
        self._clock = clock
        self._lock = threading.Lock()
        self._loads: dict[str, DeploymentLoad] = {}

    def _load(self, name: str) -> DeploymentLoad:
        """The deployment's counters, created on first use (call under the lock)."""
        load = self._loads.get(name)
        if load is None:
            load = self._loads[name] = DeploymentLoad()
        return load

    def begin(self, deployment: Deployment, tokens: int) -> Callable[[], None]:
        """Count one request (in flight, and in its rpm/tpm minute); the returned release ends in-flight.

        The release is idempotent, so a `finally` and an error path may both call it.
        """
        settings = deployment.settings
        counted = settings.rpm is not None or settings.tpm is not None  # the minute matters only for its limits
        second = int(self._clock()) if counted else 0
        with self._lock:
            load = self._load(deployment.name)
            load.in_flight += 1
            if counted:
                load.count(second, tokens)
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    load.in_flight -= 1

        return release

    def in_flight(self, name: str) -> int:
        """Requests in flight on the deployment from this worker (one attribute read: no lock needed)."""
        load = self._loads.get(name)
        return load.in_flight if load else 0

    def minute(self, name: str) -> tuple[int, int]:
        """Requests and tokens this worker sent the deployment in the last minute (counted only when it has an rpm
        or tpm limit: nothing else reads them)."""
        second = int(self._clock())
        with self._lock:
            load = self._loads.get(name)
            if load is None:
                return 0, 0
            load.trim(second)
            return load.requests, load.tokens

    def at_limit(self, deployment: Deployment, tokens: int, part: float = 1.0) -> bool:
        """Whether sending `tokens` more now would pass its rpm, tpm or max_concurrency share on this worker.

        A share is the limit / workers, rounded up. A request larger than the tpm share alone is at the limit.
        `part` scales the limits: batch lines stop at 1 - [batches] live_reserve of them, the rest is live traffic's.
        """
        settings = deployment.settings
        rpm, tpm, concurrency = settings.rpm, settings.tpm, settings.max_concurrency
        if rpm is None and tpm is None and concurrency is None:
            return False
        rpm, tpm, concurrency = (None if limit is None else max(1, math.floor(limit * part))
                                 for limit in (rpm, tpm, concurrency))
        second = int(self._clock())
        with self._lock:
            load = self._load(deployment.name)
            load.trim(second)
            return (
                (rpm is not None and load.requests + 1 > worker_share(rpm, self.workers))
                or (tpm is not None and load.tokens + tokens > worker_share(tpm, self.workers))
                or (concurrency is not None and load.in_flight + 1 > worker_share(concurrency, self.workers))
            )

    def observe_ttft(self, name: str, seconds: float, decay: float) -> None:
        """Fold one time to first token into the deployment's moving average: decay * new + (1 - decay) * old."""
        with self._lock:
            load = self._load(name)
            previous = load.ttft_s
            load.ttft_s = seconds if previous is None else decay * seconds + (1 - decay) * previous

    def ttft(self, name: str) -> float | None:
        """The deployment's moving average time to first token on this worker; None before its first sample."""
        load = self._loads.get(name)
        return load.ttft_s if load else None
