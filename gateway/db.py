"""Database wiring: one Peewee proxy, per-request connections, locked schema migrations.

The app only binds the proxy (no connection, no DDL); migrations run from `gateway db upgrade`
and from `gateway serve` before gunicorn forks (`migrate`).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from flask import Flask
from peewee import Database, DatabaseProxy, SqliteDatabase
from playhouse.migrations import Runner
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

database = DatabaseProxy()
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 10_000,
    "foreign_keys": 1,
    "synchronous": "normal",
}
PG_MIGRATION_LOCK = 0x6761746577  # arbitrary constant naming this app's advisory lock
POOL_WAIT_S = 30
POOL_STALE_S = 300


def open_database(url: str, pool_size: int = 16) -> Database:
    """A pooled Peewee database for `sqlite:///PATH` or `postgresql://...` (close() returns to the pool)."""
    pool = {"max_connections": pool_size, "stale_timeout": POOL_STALE_S, "timeout": POOL_WAIT_S}
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :] or ":memory:"
        return PooledSqliteDatabase(path, pragmas=SQLITE_PRAGMAS, check_same_thread=False, **pool)
    parts = urlparse(url)
    return PooledPostgresqlDatabase(
        parts.path.lstrip("/"),
        user=unquote(parts.username or "") or None,
        password=unquote(parts.password or "") or None,
        host=parts.hostname,
        port=parts.port or 5432,
        autorollback=True,
        **pool,
    )


def bind(url: str, pool_size: int = 16) -> Database:
    """Point the shared proxy at the database named by `url`."""
    db = open_database(url, pool_size)
    database.initialize(db)
    return db


def is_sqlite() -> bool:
    """True when the bound database is SQLite."""
    return isinstance(database.obj, SqliteDatabase)


def write_transaction():
    """A transaction that takes the write lock at once (SQLite: BEGIN IMMEDIATE)."""
    if is_sqlite():
        return database.obj.atomic("IMMEDIATE")
    return database.atomic()


@contextlib.contextmanager
def own_connection() -> Iterator[None]:
    """A connection for work outside a request's own (stream generators, pool threads); reuses an open one."""
    if not database.is_closed():
        yield
        return
    with database.connection_context():
        yield


@contextlib.contextmanager
def migration_lock() -> Iterator[None]:
    """Serialise migrations across processes and hosts."""
    db = database.obj
    if isinstance(db, SqliteDatabase):
        lock_path = Path(db.database + ".migrate.lock") if db.database != ":memory:" else None
        if lock_path is None:
            yield
            return
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    db.execute_sql("SELECT pg_advisory_lock(%s)", (PG_MIGRATION_LOCK,))
    try:
        yield
    finally:
        db.execute_sql("SELECT pg_advisory_unlock(%s)", (PG_MIGRATION_LOCK,))


def upgrade() -> list[str]:
    """Apply pending migrations to the bound database; safe to call from several processes at once."""
    with database.connection_context(), migration_lock():
        return Runner(database.obj, str(MIGRATIONS_DIR)).up()


def migrate(url: str) -> list[str]:
    """Bind `url`, apply pending migrations, and close the pool again (safe before gunicorn forks)."""
    db = bind(url, pool_size=1)
    try:
        return upgrade()
    finally:
        db.close_all()


def init_app(app: Flask, url: str, pool_size: int) -> None:
    """Bind the database lazily; a request takes a pooled connection at its first query and returns it at teardown.

    Most requests make no query of their own (keys are cached, accounting goes through the writer
    thread), so none is checked out up front: a PostgreSQL check-out costs a `SELECT 1` round trip.
    """
    bind(url, pool_size)
    app.teardown_request(lambda exc: database.close() if not database.is_closed() else None)
