"""Cached answers as `response_cache` rows: in the cache's own SQLite file, or the PostgreSQL database (0018).

On SQLite the cache keeps its own file beside the database's (`gateway.db` -> `gateway-cache.db`), read
through one connection per thread kept open. Every request writes a usage row to the database's file,
and a write by another connection makes SQLite drop a connection's page cache for that file: a lookup
in the same file would reread its pages every time (about 130 us), while in a file of its own it reads
them again only after a cache store. On PostgreSQL the cache stays in the shared database, so every
host shares it. A lookup is one primary-key SELECT written as plain SQL (no query building, no JSON parsing here), so
a miss costs one index probe. A hit does not write: the keys it used are kept in memory and their
`last_used_at` is brought up to date in one UPDATE (a CASE over the keys) at the next eviction pass (or once TOUCH_BATCH keys
wait), so the least-recently-used order is as fresh as the last pass. An eviction pass runs on every
`evict_every`-th store of this worker: it deletes expired rows, then the least recently used rows beyond
`max_entries` (several workers may each overshoot the bound by fewer than `evict_every` rows meanwhile).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from peewee import Case, Cast, Database, PeeweeException, SqliteDatabase
from playhouse.pool import MaxConnectionsExceeded

from gateway.cache.entry import StoredEntry
from gateway.db import SQLITE_PRAGMAS, database, own_connection
from gateway.tables import ResponseCacheEntry

SQLITE_URL = "sqlite:///"
OWN_FILE_SUFFIX = "-cache"

TOUCH_BATCH = 256  # hits remembered before their last use is written without waiting for a store
MAX_EVICT_EVERY = 100


def evict_every_for(max_entries: int) -> int:
    """Stores between eviction passes: about a tenth of the bound, so overshoot stays small."""
    return max(1, min(MAX_EVICT_EVERY, max_entries // 10))


def own_file_of(database_url: str) -> Path | None:
    """The cache's own file for an SQLite database (`data/gateway.db` -> `data/gateway-cache.db`); None for
    PostgreSQL and an in-memory database (the cache shares the database then)."""
    if not database_url.startswith(SQLITE_URL):
        return None
    path = database_url[len(SQLITE_URL):]
    if path in ("", ":memory:"):
        return None
    database_file = Path(path)
    return database_file.with_name(database_file.stem + OWN_FILE_SUFFIX + database_file.suffix)


class OwnFile:
    """The cache's own SQLite file: one connection per thread, kept open; the table made on first use."""

    def __init__(self, path: Path) -> None:
        self.database = SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS, check_same_thread=False)

        class Meta:
            database = self.database
            table_name = ResponseCacheEntry._meta.table_name

        self.table = type("OwnFileCacheEntry", (ResponseCacheEntry,), {"Meta": Meta, "__module__": __name__})
        self._made = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connected(self) -> Iterator[None]:
        """This thread's connection (opened once, then kept: its page cache is what makes a lookup cheap)."""
        if self.database.is_closed():
            self.database.connect()
            with self._lock:
                if not self._made:
                    self.table.create_table(safe=True)
                    self._made = True
        yield

    def close(self) -> None:
        """Close the calling thread's connection (the others end with their threads)."""
        self.database.close()


class DatabaseCache:
    """The `response_cache` table behind a ResponseCache: in `own_file` (SQLite), else the gateway's database."""

    errors: tuple[type[BaseException], ...] = (PeeweeException, MaxConnectionsExceeded)

    def __init__(self, max_entries: int, evict_every: int | None = None, own_file: Path | None = None) -> None:
        self.max_entries = max_entries
        self.evict_every = evict_every or evict_every_for(max_entries)
        self._own = OwnFile(own_file) if own_file is not None else None
        self.table: type[ResponseCacheEntry] = self._own.table if self._own else ResponseCacheEntry
        self._database: Database = self._own.database if self._own else database
        self._lock = threading.Lock()
        self._stores = 0
        self._touched: dict[str, float] = {}  # key -> last use, not yet written
        self._select_sql: str | None = None

    def read(self, key: str, now: float) -> StoredEntry | None:
        """The row filed under `key`, expired or not; remembers its use."""
        with self.connected():
            cursor = self._database.execute_sql(self._select(), (key,))
            row = cursor.fetchone()
            cursor.close()
        if row is None:
            return None
        with self._lock:
            self._touched[key] = now
            due = len(self._touched) >= TOUCH_BATCH
        if due:
            with self.connected():
                self._write_touches()
        return StoredEntry(*row)

    def write(self, key: str, entry: StoredEntry, now: float) -> tuple[int, int]:
        """Upsert the row; on every `evict_every`-th store, run an eviction pass. Returns (expired, evicted) rows."""
        columns = {"scope": entry.scope, "model": entry.model, "endpoint": entry.endpoint, "answer": entry.answer,
                   "usage": entry.usage, "bytes": entry.size, "created_at": entry.created,
                   "expires_at": entry.expires_at, "last_used_at": now}
        table = self.table
        upsert = table.insert(key=key, **columns).on_conflict(
            conflict_target=[table.key],
            update={getattr(table, name): value for name, value in columns.items()},
        )
        with self._lock:
            self._stores += 1
            due = self._stores % self.evict_every == 1 or self.evict_every == 1
        with self.connected():
            upsert.execute()
            return self.evict(now) if due else (0, 0)

    def evict(self, now: float) -> tuple[int, int]:
        """Write waiting uses, delete expired rows, then the least recently used beyond max_entries."""
        table = self.table
        with self.connected():
            self._write_touches()
            expired = table.delete().where(table.expires_at <= now).execute()
            excess = table.select().count() - self.max_entries
            if excess <= 0:
                return expired, 0
            oldest = table.select(table.key).order_by(table.last_used_at, table.key).limit(excess)
            evicted = table.delete().where(table.key.in_(oldest)).execute()
        return expired, evicted

    def close(self) -> None:
        """Close this thread's connection to the own file; the database's belong to gateway.db (waiting uses are
        dropped)."""
        if self._own is not None:
            self._own.close()

    def connected(self) -> contextlib.AbstractContextManager[None]:
        """A connection to where the rows live (for `table` queries)."""
        return self._own.connected() if self._own is not None else own_connection()

    def _write_touches(self) -> None:
        with self._lock:
            touched, self._touched = self._touched, {}
        if touched:
            table = self.table
            last_use = Cast(Case(table.key, list(touched.items())), "double precision")
            table.update(last_used_at=last_use).where(table.key.in_(list(touched))).execute()

    def _select(self) -> str:
        """The lookup's SQL in the bound database's parameter style (built once)."""
        if self._select_sql is None:
            self._select_sql = ('SELECT endpoint, model, answer, usage, created_at, expires_at, scope '
                                f'FROM response_cache WHERE "key" = {self._database.param}')
        return self._select_sql
