"""Background responses: run on a thread pool the app owns; poll with GET, stop with cancel.

A background response is stored at once as `queued` and answered. A pool thread marks it
`in_progress`, runs the loop and writes the result unless the response was cancelled or deleted
meanwhile (a cancel wins; the tokens already used are billed all the same). Cancel works across
workers through the row's status: a run checks it between loop events (at most once every
CANCEL_POLL_S) besides its local stop flag. Each worker process has `[responses] background_workers`
threads; closing the runner (lifecycle.close) stops running jobs at their next loop event (they end
`failed` with code `server_shutdown`) and fails the ones still queued.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from flask import Flask, current_app

from gateway.accounting.keys import Caller
from gateway.db import own_connection
from gateway.errors import Conflict, GatewayError, InvalidRequest, ServiceUnavailable
from gateway.loop.events import LoopFinished
from gateway.responses import store
from gateway.responses.assembly import ResponseAssembly

log = logging.getLogger(__name__)
CANCEL_POLL_S = 1.0
EXTENSION = "gateway.responses.background"
FINISHED_STATUSES = ("completed", "incomplete", "failed")


class BackgroundRunner:
    """A small pool of response runs, each with a stop flag; refuses work once closed."""

    def __init__(self, workers: int) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="responses-background")
        self._jobs: dict[str, tuple[threading.Event, Future[None], Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(
        self, response_id: str, job: Callable[[threading.Event], None], abandon: Callable[[], None]
    ) -> None:
        """Queue `job(stop)`; `abandon()` runs instead if the pool closes before the job starts."""
        stop = threading.Event()
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("The gateway is shutting down.")
            future = self._executor.submit(self._run, response_id, job, stop)
            self._jobs[response_id] = (stop, future, abandon)

    def _run(self, response_id: str, job: Callable[[threading.Event], None], stop: threading.Event) -> None:
        try:
            job(stop)
        except Exception:
            log.exception("background response %s could not be recorded", response_id)
        finally:
            with self._lock:
                self._jobs.pop(response_id, None)

    def cancel(self, response_id: str) -> None:
        """Ask a job of this worker to stop at its next loop event."""
        with self._lock:
            job = self._jobs.get(response_id)
        if job is not None:
            job[0].set()

    def close(self) -> None:
        """Stop running jobs, wait for them, fail the queued ones (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            jobs = list(self._jobs.values())
        for stop, _, _ in jobs:
            stop.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        for _, future, abandon in jobs:
            if future.cancelled():
                try:
                    abandon()
                except Exception:
                    log.exception("could not fail a queued background response")


def runner(app: Flask | None = None) -> BackgroundRunner:
    """The app's runner (lifecycle.init_app creates it, lifecycle.close closes it)."""
    return (app or current_app).extensions[EXTENSION]


def stop_local_run(response_id: str) -> None:
    """Signal this worker's run of a response (if any) to stop."""
    runner().cancel(response_id)


def start(response: ResponseAssembly) -> dict[str, Any]:
    """Store the response as `queued`, hand it to the pool, answer the queued object."""
    response.persist = persist
    queued = response.builder.response()
    queued["status"] = "queued"
    store.save(queued, response.input_items, response.caller)
    try:
        runner().submit(
            response.response_id,
            functools.partial(execute, response),
            functools.partial(fail, response, "server_shutdown", "The gateway shut down before it ran."),
        )
    except GatewayError:
        fail(response, "server_shutdown", "The gateway is shutting down.")
        raise
    return queued


def execute(response: ResponseAssembly, stop: threading.Event) -> None:
    """A pool thread's job: run the loop unless the response was cancelled or deleted first."""
    run = response.run
    with own_connection():
        if not store.move_status(response.response_id, "in_progress", ("queued",)):
            run.finish(run.cancelled())
            return
        stopped = CancelWatch(response.response_id, stop)
        with run:
            for event in run.events():
                if isinstance(event, LoopFinished):
                    break
                response.builder.feed(event)
                if stopped():
                    run.finish(stopped_outcome(response))
                    break


def stopped_outcome(response: ResponseAssembly) -> LoopFinished:
    """Cancelled (or deleted) by a client, or stopped because the worker shuts down."""
    if store.current_status(response.response_id) in ("cancelled", None):
        return response.run.cancelled()
    return response.run.ended("server_shutdown", "The gateway shut down before the response finished.", 503)


class CancelWatch:
    """True once the local stop flag is set or the row was cancelled or deleted (polled)."""

    def __init__(self, response_id: str, stop: threading.Event) -> None:
        self.response_id, self.stop = response_id, stop
        self.next_poll = time.monotonic() + CANCEL_POLL_S

    def __call__(self) -> bool:
        if self.stop.is_set():
            return True
        if time.monotonic() < self.next_poll:
            return False
        self.next_poll = time.monotonic() + CANCEL_POLL_S
        return store.current_status(self.response_id) in ("cancelled", None)


def persist(response: dict[str, Any]) -> None:
    """Write a run's result; a response cancelled meanwhile stays cancelled but gets the result."""
    if not store.finish_background(response):
        store.finish_background({**response, "status": "cancelled"})


def fail(response: ResponseAssembly, code: str, message: str) -> None:
    """Settle and fail a queued response that will never run."""
    with own_connection():
        response.run.finish(response.run.ended(code, message, 503))


def cancel_response(caller: Caller, response_id: str) -> dict[str, Any]:
    """POST /v1/responses/{id}/cancel: background only; idempotent; 409 once it has finished."""
    status, background = store.status_of(response_id, caller.account.id)
    if not background:
        raise InvalidRequest("Only responses created with background=true can be cancelled.")
    if status in store.ACTIVE_STATUSES and store.move_status(response_id, "cancelled", store.ACTIVE_STATUSES):
        stop_local_run(response_id)
    response = store.load(response_id, caller.account.id)
    if response["status"] in FINISHED_STATUSES:
        raise Conflict(f"Cannot cancel a response that has already finished (status {response['status']}).")
    return response


def delete_response(caller: Caller, response_id: str) -> dict[str, Any]:
    """DELETE /v1/responses/{id}; a background run of it stops at its next loop event."""
    store.delete(response_id, caller.account.id)
    stop_local_run(response_id)
    return {"id": response_id, "object": "response", "deleted": True}
