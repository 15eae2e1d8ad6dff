"""The batch runner: threads of one worker process that claim batches (a lease in the database) and run their lines.

Each of [batches] batches_per_worker slot threads claims one batch at a time, at most one per account across
every worker and host (gateway.batches.store.claim), and runs its lines [batches] concurrency_per_account at a
time on a shared pool. While it runs, it renews the lease and watches the row: a cancel, the 24 h window
passing, a lost lease or the runner closing stop it from starting further lines (the ones in flight finish
and are recorded). Closing the runner (lifecycle.close, gunicorn's worker_exit) releases its batches'
leases, so another worker or the next start resumes them at the first line without a result; a worker that
died is replaced once its lease runs out ([batches] lease_s).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from flask import Flask

from gateway.accounting.keys import Caller
from gateway.batches import files, store
from gateway.batches.execute import LineCheck, line_request_id, run_line
from gateway.batches.lines import ENDPOINTS, InputLine, LineError, output_line, parse_line, unanswered_line
from gateway.config import BatchSettings
from gateway.db import own_connection
from gateway.ids import new_id
from gateway.tables import Account, ApiKey, Batch

log = logging.getLogger(__name__)
EXTENSION = "gateway.batches.runner"
HOUSEKEEPING_S = 1.0  # how often a batch waiting for a free line slot looks at its row and its lease
TAIL_POLL_S = 0.2  # how often it looks while its last lines finish
MAX_REPORTED_ERRORS = 1000
INTERNAL = {"error": {"message": "The gateway failed to run this request.", "type": "api_error", "param": None,
                      "code": "internal_error"}}


class BatchRunner:
    """The slot threads and the line pool of one worker process; started after the fork, closed once."""

    def __init__(self, app: Flask, settings: BatchSettings, check: LineCheck) -> None:
        self.app, self.settings, self.check = app, settings, check
        self.stop = threading.Event()
        self.stopping: Callable[[], bool] = lambda: False  # gunicorn's worker sets it: told to exit, before close()
        self.owner = ""
        self._threads: list[threading.Thread] = []
        self.pool: ThreadPoolExecutor | None = None  # the line threads, shared by the slots
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the slot threads (in the worker, after gunicorn forks); nothing when batches_per_worker is 0."""
        slots = self.settings.batches_per_worker
        with self._lock:
            if self.stop.is_set() or self._threads or slots == 0:
                return
            self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{new_id()[:8]}"
            self.pool = ThreadPoolExecutor(slots * self.settings.concurrency_per_account,
                                            thread_name_prefix="batch-line")
            for number in range(slots):
                thread = threading.Thread(target=self._slot, name=f"batch-slot-{number}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def close(self) -> None:
        """Stop starting lines, let the ones in flight finish, release the leases (idempotent)."""
        self.stop.set()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _slot(self) -> None:
        while not self.stop.is_set() and not self.stopping():
            try:
                with self.app.app_context(), own_connection():
                    batch = store.claim(self.owner, self.settings.lease_s)
                    if batch is not None:
                        try:
                            BatchRun(self, batch).run()
                        finally:
                            store.release(batch.id, self.owner)
                        continue
            except Exception:
                log.exception("batch runner slot failed; it looks again in %s s", self.settings.poll_s)
            self.stop.wait(self.settings.poll_s)


class BatchRun:
    """One claimed batch on one slot thread: validation, its lines, its end."""

    def __init__(self, runner: BatchRunner, batch: Batch) -> None:
        self.runner, self.batch, self.settings = runner, batch, runner.settings
        self.halt = threading.Event()  # no further lines: cancelled, expired, lease lost or the runner closing
        self.renewed = time.monotonic()

    def run(self) -> None:
        """Take the batch as far as it goes now."""
        batch = self.batch
        if self.expired():
            return self.expire()
        if batch.status == "cancelling":
            return store.finalize(batch, "cancelled", "cancelled_at", self.settings.chunk_bytes)
        if batch.status == "validating" and not self.validate():
            return None
        if batch.status == "in_progress":
            self.run_lines()
            if self.runner.stop.is_set() or self.runner.stopping() or self.lost():
                return None
            status, batch.expires_at = store.status_of(batch.id)
            if status == "cancelling":
                return store.finalize(batch, "cancelled", "cancelled_at", self.settings.chunk_bytes)
            if self.expired():
                return self.expire()
            if not store.move(batch.id, "finalizing", "finalizing_at"):
                return None
        store.finalize(batch, "completed", "completed_at", self.settings.chunk_bytes)
        return None

    def lines(self) -> Iterator[tuple[int, InputLine | LineError | None]]:
        """The input file's lines: (number, the line or its error; None for a blank line)."""
        for number, raw in enumerate(files.lines(self.batch.input_file_id)):
            if not raw.strip():
                yield number, None
                continue
            try:
                yield number, parse_line(raw, number, self.batch.endpoint)
            except LineError as error:
                yield number, error

    def validate(self) -> bool:
        """Check every line (JSON, method, url, a unique custom_id): in_progress, or failed with `errors`."""
        errors, seen, total = [], set(), 0
        for number, parsed in self.lines():
            line = parsed
            if isinstance(line, InputLine) and line.custom_id in seen:
                line = LineError("duplicate_custom_id", "The custom_id for this request is a duplicate of another "
                                 "request. The custom_id parameter must be unique for each individual request in a "
                                 "batch.", number, "custom_id")
            if isinstance(line, LineError):
                if len(errors) < MAX_REPORTED_ERRORS:
                    errors.append(line.as_json())
            elif line is not None:
                seen.add(line.custom_id)
                total += 1
        if total > self.settings.max_lines:
            errors.append({"code": "too_many_requests", "message": f"The input file has {total} requests; a batch "
                           f"may have at most {self.settings.max_lines}.", "param": None, "line": None})
        if total == 0 and not errors:
            errors.append({"code": "empty_file", "message": "The input file has no requests.", "param": None,
                           "line": None})
        if errors:
            store.move(self.batch.id, "failed", "failed_at", errors=json.dumps(errors))
            return False
        if not store.move(self.batch.id, "in_progress", "in_progress_at", total=total):
            return False  # cancelled meanwhile: the next claim ends it
        self.batch.status = "in_progress"
        return True

    def caller(self) -> Caller | None:
        """The key that created the batch, with its account (None: deleted or revoked: its lines answer 401)."""
        key = (ApiKey.select(ApiKey, Account).join(Account)
               .where(ApiKey.id == self.batch.api_key_id).first()) if self.batch.api_key_id else None
        return Caller(key=key, account=key.account) if key is not None and not key.revoked else None

    def run_lines(self) -> None:
        """Submit each line without a result, concurrency_per_account at a time, then wait for them."""
        batch, caller, pool = self.batch, self.caller(), self.runner.pool
        done = store.done_lines(batch.id)
        slots = threading.BoundedSemaphore(self.settings.concurrency_per_account)
        pending: set[Future[None]] = set()
        for number, line in self.lines():
            if not isinstance(line, InputLine) or number in done:
                continue
            while not slots.acquire(timeout=HOUSEKEEPING_S):
                self.housekeeping()
            self.housekeeping()
            if self.halt.is_set():
                slots.release()
                break
            future = pool.submit(self.run_one, caller, line, slots)
            pending.add(future)
            future.add_done_callback(pending.discard)
        while pending:
            self.housekeeping()
            time.sleep(TAIL_POLL_S)

    def run_one(self, caller: Caller | None, line: InputLine, slots: threading.BoundedSemaphore) -> None:
        """One line on a pool thread: run it and record its result (unless it was stopped before it was sent)."""
        batch = self.batch
        request_id = line_request_id(batch.id, line.number)
        try:
            with self.runner.app.app_context(), own_connection():
                if caller is None:
                    answer_status, body = 401, {"error": {"message": "The API key that created this batch was "
                                                          "revoked.", "type": "authentication_error",
                                                          "param": None, "code": "invalid_api_key"}}
                else:
                    answer = run_line(caller, ENDPOINTS[batch.endpoint], line, request_id, self.runner.check, self.halt)
                    if answer is None:
                        return
                    answer_status, body = answer.status, answer.body
                result = output_line(new_id("batch_req"), line.custom_id, answer_status, request_id, body)
                store.record_line(batch.id, line.number, answer_status == 200, result)
        except Exception:
            log.exception("batch %s line %s failed", batch.id, line.number)
            with self.runner.app.app_context(), own_connection():
                store.record_line(batch.id, line.number, False,
                                  output_line(new_id("batch_req"), line.custom_id, 500, request_id, INTERNAL))
        finally:
            slots.release()

    def housekeeping(self) -> None:
        """Halt on a cancel, the window's end or the runner closing (the row is read before each line, so a cancel
        starts no further line); renew the lease every lease_s / 3."""
        if self.runner.stop.is_set() or self.runner.stopping():
            self.halt.set()
        now = time.monotonic()
        if now - self.renewed >= self.settings.lease_s / 3:
            self.renewed = now
            if not store.renew(self.batch.id, self.runner.owner, self.settings.lease_s):
                self.halt.set()
        status, self.batch.expires_at = store.status_of(self.batch.id)
        if status != "in_progress" or self.expired():
            self.halt.set()

    def lost(self) -> bool:
        """Whether another runner holds the batch now."""
        row = Batch.select(Batch.lease_owner).where(Batch.id == self.batch.id).first()
        return row is None or row.lease_owner != self.runner.owner

    def expired(self) -> bool:
        """Whether the 24 h window has passed."""
        return time.time() >= self.batch.expires_at

    def expire(self) -> None:
        """Every line without a result goes to the error file as `batch_expired`; then the batch is `expired`."""
        done = store.done_lines(self.batch.id)
        for number, line in self.lines():
            if isinstance(line, InputLine) and number not in done:
                store.record_line(self.batch.id, number, False, unanswered_line(
                    new_id("batch_req"), line.custom_id, "batch_expired",
                    "This request could not be executed before the completion window expired."))
        store.finalize(self.batch, "expired", "expired_at", self.settings.chunk_bytes)


def runner(app: Flask) -> BatchRunner:
    """The app's batch runner (lifecycle creates, starts and closes it)."""
    return app.extensions[EXTENSION]
