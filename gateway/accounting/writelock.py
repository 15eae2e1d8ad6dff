"""Accounting write transactions; on SQLite behind a file lock, so processes queue instead of polling.

SQLite lets one writer in at a time and makes the others retry in its busy handler, which
sleeps with growing back-off (1, 2, 5, 10 ... 100 ms): under load that sleeping, not the
~20 µs a write takes, is where the time goes. Taking an exclusive `flock` on `<db>.write.lock`
before `BEGIN IMMEDIATE` queues the writers in the kernel instead: a waiter wakes as soon as the
lock is released. PostgreSQL needs no file lock (its row locks queue waiters already).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Self

from peewee import Database, SqliteDatabase

from gateway.db import database


def lock_path(db: Database) -> str | None:
    """The lock file of a SQLite database file; None for PostgreSQL and in-memory SQLite."""
    if isinstance(db, SqliteDatabase) and db.database not in ("", ":memory:"):
        return db.database + ".write.lock"
    return None


class WriteLock:
    """An exclusive, blocking file lock (a no-op without a lock file); keeps its file open."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._fd: int | None = None

    def __enter__(self) -> Self:
        if self._path is not None:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def transaction(db: Database):
    """A transaction that takes the write lock at once (SQLite: BEGIN IMMEDIATE)."""
    if isinstance(db, SqliteDatabase):
        return db.atomic("IMMEDIATE")
    return db.atomic()


@contextlib.contextmanager
def locked_write(db: Database | None = None) -> Iterator[None]:
    """A write transaction behind the file lock, for accounting writes outside the writer thread.

    Inside an open transaction it is a savepoint and takes no file lock: a thread that may already
    hold SQLite's lock must never wait for the file lock (the writer waits in the other order).
    """
    db = db or database.obj
    if db.in_transaction():
        with db.atomic():
            yield
        return
    lock = WriteLock(lock_path(db))
    try:
        with lock, transaction(db):
            yield
    finally:
        lock.close()
