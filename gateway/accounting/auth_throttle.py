"""A bound on failed authentication attempts per client address, kept in each worker's memory.

After `limit` failures (a missing, unknown or revoked API key, a wrong admin token) from one
address within `window_s` seconds, every request from that address that needs authentication
is refused with 429 and Retry-After until the oldest of those failures leaves the window,
whether or not its key is good: otherwise a guess that hits would still answer 200, and the
bound would not slow a search for keys at all. The window slides (the failure times are kept).

The counts live in each worker process (no shared store, no database round trip): with W
workers an address may fail up to W x `limit` times per window before every worker refuses it.
The address is the peer's, or X-Forwarded-For's behind a `[server] trusted_proxies` proxy
(gateway.serving.trusted_proxies). At most `max_addresses` addresses are tracked; the one that
failed least recently is forgotten first. A refused request is not counted (it was never checked),
and attempts already in flight when the limit is reached still finish (at most one per thread).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator

from flask import Flask, current_app

from gateway.config import Settings
from gateway.errors import AuthenticationFailed, RateLimited
from gateway.serving.trusted_proxies import request_address

EXTENSION = "gateway.auth_throttle"
MAX_ADDRESSES = 100_000


class FailedAuthThrottle:
    """Failure times per address in a sliding window; thread-safe; `limit` 0 turns it off."""

    def __init__(self, limit: int, window_s: float, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._max = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until `address` may try again, or None when it may try now."""
        if not self.limit:
            return None
        with self._lock:
            times = self._failures.get(address)
            if times is None or len(times) < self.limit:
                return None
            wait = times[0] + self.window_s - self._clock()
        return math.ceil(wait) if wait > 0 else None

    def record_failure(self, address: str) -> None:
        """Remember one failed attempt from `address` (only the last `limit` matter)."""
        if not self.limit:
            return
        with self._lock:
            times = self._failures.pop(address, None) or deque(maxlen=self.limit)
            times.append(self._clock())
            self._failures[address] = times
            while len(self._failures) > self._max:
                self._failures.popitem(last=False)


def init_app(app: Flask, settings: Settings) -> None:
    """Give the app its throttle."""
    auth = settings.auth
    app.extensions[EXTENSION] = FailedAuthThrottle(auth.failed_attempts_per_address, auth.failed_attempts_window_s)


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Refuse a throttled address (429), else run the authentication and count its failure."""
    throttle: FailedAuthThrottle | None = current_app.extensions.get(EXTENSION)
    if throttle is None or not throttle.limit:
        yield
        return
    address = request_address()
    wait = throttle.retry_after(address)
    if wait is not None:
        raise RateLimited(
            f"Too many failed authentication attempts from this address; retry after {wait} seconds.",
            code="too_many_failed_attempts", headers={"Retry-After": str(wait)},
        )
    try:
        yield
    except AuthenticationFailed:
        throttle.record_failure(address)
        raise
