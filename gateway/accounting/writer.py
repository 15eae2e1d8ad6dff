"""The accounting writer: one thread per worker process commits queued operations in batches.

Request threads queue an operation (admission, extension, settlement) and wait for its answer;
the writer takes whatever is queued (up to MAX_BATCH), decides it in one transaction behind the
write lock (see writelock.py and batch.py), commits, and only then answers every waiter. So a
request's answer is always durable, and N concurrent requests share one commit instead of
queueing N times on the database's lock (group commit). A batch that fails is rolled back and
retried one operation at a time, so one bad operation fails alone. On PostgreSQL a batch without
settlements commits without waiting for the WAL flush (`synchronous_commit = off`): a worker
that dies loses nothing by it, and holds a database crash loses are harmless (a settlement
whose hold is gone still charges); every batch that charges waits for the flush.

Between batches (and when idle) the writer sweeps holds older than the reservation TTL (a killed
worker's) and rate windows older than a minute, every `sweep_interval(ttl)` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from flask import Flask, current_app
from peewee import Database

from gateway.accounting import statements as sql
from gateway.accounting.batch import apply_batch
from gateway.accounting.operations import Operation, Settlement
from gateway.accounting.ratelimit import WINDOW_SECONDS, window_start
from gateway.accounting.statements import Statements
from gateway.accounting.writelock import WriteLock, lock_path, transaction
from gateway.errors import GatewayError, ServiceUnavailable
from gateway.observability.metrics import observed_write_batch
from gateway.tables import utcnow

log = logging.getLogger(__name__)
EXTENSION = "gateway.accounting_writer"
MAX_BATCH = 256
WAIT_S = 30.0
_STOP = object()


def sweep_interval(reservation_ttl_s: float) -> float:
    """Seconds between sweeps: half the TTL, between 0.5 s and 30 s."""
    return min(max(reservation_ttl_s / 2, 0.5), 30.0)


class Pending:
    """One queued operation and, once the writer has committed, its answer."""

    __slots__ = ("_answer", "_done", "_error", "operation")

    def __init__(self, operation: Operation) -> None:
        self.operation = operation
        self._done = threading.Lock()
        self._done.acquire()
        self._answer: Any = None
        self._error: BaseException | None = None

    def resolve(self, answer: Any = None, error: BaseException | None = None) -> None:
        """Called by the writer after the commit (or the failure)."""
        self._answer, self._error = answer, error
        self._done.release()

    def wait(self, timeout_s: float = WAIT_S) -> Any:
        """The answer; re-raises the operation's failure; 503 if the writer does not answer in time."""
        if not self._done.acquire(timeout=timeout_s):
            raise ServiceUnavailable("The accounting database did not answer in time.")
        if self._error is not None:
            raise self._error
        return self._answer


class AccountingWriter:
    """Owns one write connection and one thread per process; started on first use, closed once."""

    def __init__(self, db: Database, reservation_ttl_s: float, sweeps_windows: bool) -> None:
        self._db = db
        self._statements = Statements(db)
        self._lock = WriteLock(lock_path(db))
        self._sweep_every = sweep_interval(reservation_ttl_s)
        self._sweeps_windows = sweeps_windows
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False

    def call(self, operation: Operation) -> Any:
        """Queue an operation and wait for its committed answer."""
        return self.submit(operation).wait()

    def submit(self, operation: Operation) -> Pending:
        """Queue an operation; the writer answers it after its batch commits."""
        pending = Pending(operation)
        with self._guard:
            if self._closed:
                raise ServiceUnavailable("The server is shutting down.")
            if self._pid != os.getpid():
                self._start()
            self._queue.put(pending)
        return pending

    def close(self) -> None:
        """Commit what is queued, stop the thread, close the lock file (idempotent)."""
        with self._guard:
            if self._closed:
                return
            self._closed = True
            running = self._thread if self._pid == os.getpid() else None
            self._queue.put(_STOP)
        if running is not None:
            running.join(WAIT_S)
        self._lock.close()

    def _start(self) -> None:
        # Also after a fork: the parent's thread and queue do not exist in this process.
        self._queue, self._pid = queue.SimpleQueue(), os.getpid()
        self._thread = threading.Thread(target=self._run, name="gateway-accounting", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_sweep = time.monotonic() + self._sweep_every
        while True:
            try:
                first = self._queue.get(timeout=max(next_sweep - time.monotonic(), 0.01))
            except queue.Empty:
                first = None
            batch, stop = self._take(first)
            if batch:
                self._commit(batch)
            if stop:
                break
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + self._sweep_every
        if not self._db.is_closed():
            self._db.close()

    def _take(self, first: Any) -> tuple[list[Pending], bool]:
        """The first item plus whatever else is queued (up to MAX_BATCH); and whether to stop."""
        if first is None:
            return [], False
        if first is _STOP:
            return [], True
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _commit(self, batch: Sequence[Pending]) -> None:
        try:
            answers = self._apply([pending.operation for pending in batch])
        except Exception as exc:
            self._recover()
            if len(batch) > 1:
                for pending in batch:
                    self._commit([pending])
                return
            log.exception("accounting operation failed: %r", batch[0].operation)
            failure = exc if isinstance(exc, GatewayError) else ServiceUnavailable("Accounting failed.")
            batch[0].resolve(error=failure)
            return
        for pending, answer in zip(batch, answers, strict=True):
            pending.resolve(answer)

    def _apply(self, operations: list[Operation]) -> list[Any]:
        self._db.connect(reuse_if_open=True)
        st = self._statements
        with observed_write_batch(len(operations)), self._lock:
            st.begin(durable=any(isinstance(op, Settlement) for op in operations))
            try:
                answers = apply_batch(st, operations, utcnow())
                st.commit()
            except BaseException:
                with contextlib.suppress(Exception):  # a broken connection is dropped by _recover
                    st.rollback()
                raise
        return answers

    def _recover(self) -> None:
        """After a failure: drop a broken connection so the next batch reconnects."""
        try:
            if not self._db.is_closed() and not self._db.is_connection_usable():
                self._db.close()
        except Exception:  # best effort: the next batch reconnects, or fails alone
            log.exception("closing the accounting connection failed")

    def _sweep(self) -> None:
        """Release expired holds of every account; forget rate windows older than a minute."""
        try:
            self._db.connect(reuse_if_open=True)
            st = self._statements
            with self._lock, transaction(self._db):
                st.run(sql.SWEEP_ALL, (st.time(utcnow()),))
                if self._sweeps_windows:
                    st.run(sql.WINDOW_SWEEP, (window_start(time.time()) - WINDOW_SECONDS,))
        except Exception:  # a failed sweep is retried at the next interval
            log.exception("accounting sweep failed")
            self._recover()


def init_app(app: Flask, db: Database, reservation_ttl_s: float, sweeps_windows: bool) -> None:
    """Create the app's writer (its thread starts on first use, in the worker process)."""
    app.extensions[EXTENSION] = AccountingWriter(db, reservation_ttl_s, sweeps_windows)


def writer(app: Flask | None = None) -> AccountingWriter:
    """The current (or given) app's accounting writer."""
    return (app or current_app).extensions[EXTENSION]
