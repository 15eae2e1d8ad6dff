"""The response cache the faces call: lookups and stores that never fail a request, over the database or Redis.

The rules live here, the I/O in the backends (database_cache.py, redis_cache.py): an entry is a hit only
while fresh (before its expiry, and no older than the client's `max-age`); an answer larger than
`[cache] max_entry_bytes` is not stored; a backend error is a miss or a store skipped, with a metric, a
warning at most every WARN_EVERY_S, and the backend left alone for PAUSE_AFTER_ERROR_S so a hung cache
costs one timeout, not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from gateway.cache.database_cache import DatabaseCache, own_file_of
from gateway.cache.entry import CachedAnswer, StoredEntry, decoded, encoded
from gateway.cache.redis_cache import RedisCache
from gateway.config import Settings
from gateway.observability import metrics

__all__ = ["CacheBackend", "CachedAnswer", "ResponseCache", "response_cache"]

log = logging.getLogger(__name__)

T = TypeVar("T")

WARN_EVERY_S = 30.0
PAUSE_AFTER_ERROR_S = 5.0


class CacheBackend(Protocol):
    """Where entries live: `response_cache` rows or Redis hashes."""

    errors: tuple[type[BaseException], ...]  # what an outage of the backend raises

    def read(self, key: str, now: float) -> StoredEntry | None:
        """The entry filed under `key` (possibly expired), marking its use; None when there is none."""

    def write(self, key: str, entry: StoredEntry, now: float) -> tuple[int, int]:
        """Store (or replace) the entry, keeping the backend's bound; returns the (expired, evicted) entries removed."""

    def close(self) -> None:
        """Release connections."""


class ResponseCache:
    """Cached answers by key: `get` and `put` never raise and never wait on a backend known to be down."""

    def __init__(self, backend: CacheBackend, max_entry_bytes: int, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._warned_at: float | None = None
        self._closed = False

    def get(self, key: str, max_age_s: float | None = None) -> CachedAnswer | None:
        """The fresh answer filed under `key` (no older than `max_age_s` when given), else None; counts hit or miss."""
        entry = self._attempt("get", lambda now: self.backend.read(key, now))
        now = self._clock()
        fresh = entry is not None and entry.expires_at > now and (max_age_s is None or now - entry.created <= max_age_s)
        answer = self._attempt("decode", lambda _: decoded(entry)) if fresh and entry is not None else None
        metrics.cache_lookup(answer is not None)
        return answer

    def put(self, key: str, answer: CachedAnswer, ttl_s: float, scope: str | None = None) -> None:
        """Store `answer` under `key` for `ttl_s` seconds (0: not at all); too large an answer is skipped."""
        if ttl_s <= 0:
            return
        entry = encoded(answer, self._clock() + ttl_s, scope)
        if entry.size > self.max_entry_bytes:
            metrics.cache_not_stored("too_large")
            return
        removed = self._attempt("put", lambda now: self.backend.write(key, entry, now))
        if removed is not None:
            metrics.cache_stored(entry.size, *removed)

    def close(self) -> None:
        """Release the backend (idempotent); afterwards every get misses and every put is skipped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.backend.close()

    def _attempt(self, operation: str, work: Callable[[float], T]) -> T | None:
        """Run one backend operation, or skip it (closed, or paused after an error); an error becomes None."""
        if self._closed or self._monotonic() < self._paused_until:
            return None
        try:
            return work(self._clock())
        except Exception as exc:  # noqa: BLE001 - never a failed request: an outage, a corrupt entry, a bug
            self._failed(operation, exc)
            return None

    def _failed(self, operation: str, exc: Exception) -> None:
        """Count the error; pause an unreachable backend; warn at most every WARN_EVERY_S."""
        metrics.cache_error(operation)
        now = self._monotonic()
        outage = isinstance(exc, self.backend.errors)
        with self._lock:
            if outage:
                self._paused_until = now + PAUSE_AFTER_ERROR_S
            warn = self._warned_at is None or now - self._warned_at >= WARN_EVERY_S
            if warn:
                self._warned_at = now
        if warn and outage:
            log.warning("response cache backend unavailable, %s skipped for %.0f s: %s: %s", operation,
                        PAUSE_AFTER_ERROR_S, type(exc).__name__, exc)
        elif warn:
            log.warning("response cache %s failed, skipped", operation, exc_info=exc)


def response_cache(settings: Settings, clock: Callable[[], float] = time.time) -> ResponseCache | None:
    """The cache over the database, or Redis when `[cache] backend = "redis"`; None when `[cache] enabled` is false."""
    cache = settings.cache
    if not cache.enabled:
        return None
    backend: CacheBackend
    if cache.backend == "redis":
        backend = RedisCache(cache.url or settings.limits.url or "", cache.max_entries)
    else:
        backend = DatabaseCache(cache.max_entries, own_file=own_file_of(settings.database.url))
    return ResponseCache(backend, cache.max_entry_bytes, clock)
