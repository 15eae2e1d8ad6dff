"""Cached answers as `response_cache` rows (migration 0018), on SQLite or PostgreSQL.

A lookup is one primary-key SELECT written as plain SQL (no query building, no JSON parsing here), so
a miss costs one index probe. A hit does not write: the keys it used are kept in memory and their
`last_used_at` is brought up to date in one UPDATE (a CASE over the keys) at the next eviction pass (or once TOUCH_BATCH keys
wait), so the least-recently-used order is as fresh as the last pass. An eviction pass runs on every
`evict_every`-th store of this worker: it deletes expired rows, then the least recently used rows beyond
`max_entries` (several workers may each overshoot the bound by fewer than `evict_every` rows meanwhile).
"""

from __future__ import annotations

import threading

from peewee import Case, Cast, PeeweeException
from playhouse.pool import MaxConnectionsExceeded

from gateway.cache.entry import StoredEntry
from gateway.db import database, own_connection
from gateway.tables import ResponseCacheEntry

TOUCH_BATCH = 256  # hits remembered before their last use is written without waiting for a store
MAX_EVICT_EVERY = 100


def evict_every_for(max_entries: int) -> int:
    """Stores between eviction passes: about a tenth of the bound, so overshoot stays small."""
    return max(1, min(MAX_EVICT_EVERY, max_entries // 10))


class DatabaseCache:
    """The `response_cache` table behind a ResponseCache."""

    errors: tuple[type[BaseException], ...] = (PeeweeException, MaxConnectionsExceeded)

    def __init__(self, max_entries: int, evict_every: int | None = None) -> None:
        self.max_entries = max_entries
        self.evict_every = evict_every or evict_every_for(max_entries)
        self._lock = threading.Lock()
        self._stores = 0
        self._touched: dict[str, float] = {}  # key -> last use, not yet written
        self._select_sql: str | None = None

    def read(self, key: str, now: float) -> StoredEntry | None:
        """The row filed under `key`, expired or not; remembers its use."""
        with own_connection():
            cursor = database.execute_sql(self._select(), (key,))
            row = cursor.fetchone()
            cursor.close()
        if row is None:
            return None
        with self._lock:
            self._touched[key] = now
            due = len(self._touched) >= TOUCH_BATCH
        if due:
            with own_connection():
                self._write_touches()
        return StoredEntry(*row)

    def write(self, key: str, entry: StoredEntry, now: float) -> tuple[int, int]:
        """Upsert the row; on every `evict_every`-th store, run an eviction pass. Returns (expired, evicted) rows."""
        columns = {"scope": entry.scope, "model": entry.model, "endpoint": entry.endpoint, "answer": entry.answer,
                   "usage": entry.usage, "bytes": entry.size, "created_at": entry.created,
                   "expires_at": entry.expires_at, "last_used_at": now}
        upsert = ResponseCacheEntry.insert(key=key, **columns).on_conflict(
            conflict_target=[ResponseCacheEntry.key],
            update={getattr(ResponseCacheEntry, name): value for name, value in columns.items()},
        )
        with self._lock:
            self._stores += 1
            due = self._stores % self.evict_every == 1 or self.evict_every == 1
        with own_connection():
            upsert.execute()
            return self.evict(now) if due else (0, 0)

    def evict(self, now: float) -> tuple[int, int]:
        """Write waiting uses, delete expired rows, then the least recently used beyond max_entries."""
        with own_connection():
            self._write_touches()
            expired = ResponseCacheEntry.delete().where(ResponseCacheEntry.expires_at <= now).execute()
            excess = ResponseCacheEntry.select().count() - self.max_entries
            if excess <= 0:
                return expired, 0
            oldest = (ResponseCacheEntry.select(ResponseCacheEntry.key)
                      .order_by(ResponseCacheEntry.last_used_at, ResponseCacheEntry.key).limit(excess))
            evicted = ResponseCacheEntry.delete().where(ResponseCacheEntry.key.in_(oldest)).execute()
        return expired, evicted

    def close(self) -> None:
        """Nothing to release: connections belong to gateway.db (waiting uses are dropped)."""

    def _write_touches(self) -> None:
        with self._lock:
            touched, self._touched = self._touched, {}
        if touched:
            last_use = Cast(Case(ResponseCacheEntry.key, list(touched.items())), "double precision")
            (ResponseCacheEntry.update(last_used_at=last_use)
             .where(ResponseCacheEntry.key.in_(list(touched))).execute())

    def _select(self) -> str:
        """The lookup's SQL in the bound database's parameter style (built once)."""
        if self._select_sql is None:
            self._select_sql = ('SELECT endpoint, model, answer, usage, created_at, expires_at, scope '
                                f'FROM response_cache WHERE "key" = {database.obj.param}')
        return self._select_sql
