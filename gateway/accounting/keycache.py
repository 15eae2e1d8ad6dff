"""A per-worker cache of authenticated keys, so most requests skip the key lookup.

An entry lives `ttl_s` seconds: that bounds how long a key revoked (or changed) by another
process keeps working here. A revoke or change made through this process forgets the key at
once. Only live keys are cached (an unknown or revoked secret is looked up every time), and the
cache holds at most `max_entries` keys (the oldest entry goes first).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 10_000


class KeyCache(Generic[T]):
    """Values by key digest, each for at most `ttl_s` seconds; 0 disables caching."""

    def __init__(self, ttl_s: float, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, T]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> T | None:
        """The cached value, if it is younger than the TTL."""
        entry = self._entries.get(digest)
        if entry is None or self._clock() >= entry[0]:
            return None
        return entry[1]

    def put(self, digest: str, value: T) -> None:
        """Remember a value for the TTL."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.pop(next(iter(self._entries)), None)
            self._entries[digest] = (self._clock() + self.ttl_s, value)

    def forget(self, matches: Callable[[T], bool]) -> None:
        """Drop every entry whose value matches (a revoked key, a changed account)."""
        with self._lock:
            for digest, (_, value) in list(self._entries.items()):
                if matches(value):
                    del self._entries[digest]
