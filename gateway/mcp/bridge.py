"""One asyncio event loop in a daemon thread per process; request threads submit coroutines to it.

Request threads never run asyncio themselves: they call `McpBridge.run(coro, timeout)`,
which hands the coroutine to the loop thread and waits at most `timeout` seconds.
When that wait runs out, the coroutine's task is cancelled and `errors.UpstreamTimeout`
(504) is raised; an exception raised by the coroutine itself (including its own
`TimeoutError`) propagates unchanged. After `close()`, `run` and `submit` raise
`errors.ServiceUnavailable` (503).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from gateway import errors

logger = logging.getLogger(__name__)

T = TypeVar("T")


class McpBridge:
    """Owns the process's MCP event loop thread: started lazily on first use, closed once."""

    def __init__(self, name: str = "mcp-bridge", shutdown_timeout_s: float = 5.0) -> None:
        self._name = name
        self._shutdown_timeout_s = shutdown_timeout_s
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether `close()` has been called."""
        return self._closed

    @property
    def available(self) -> bool:
        """Whether work can be submitted: not closed, and the loop thread (if started) alive."""
        if self._closed:
            return False
        thread = self._thread
        return thread is None or self._pid != os.getpid() or thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        """The loop thread, once started (for diagnostics and tests)."""
        return self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop thread and return its future without waiting."""
        try:
            loop = self._ensure_loop()
            return asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError as exc:  # the loop stopped between the check and the call
            coro.close()
            raise errors.ServiceUnavailable("MCP runtime is shut down") from exc
        except BaseException:
            coro.close()
            raise

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` on the loop thread and wait for its result for at most `timeout` seconds."""
        future = self.submit(coro)
        done, _ = concurrent.futures.wait([future], timeout=timeout)
        if not done:
            future.cancel()
            raise errors.UpstreamTimeout(f"MCP operation timed out after {timeout:g}s")
        if future.cancelled():
            raise errors.ServiceUnavailable("MCP runtime is shutting down")
        return future.result()

    def close(self) -> None:
        """Cancel every task, stop the loop and join its thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._pid != os.getpid() or not thread.is_alive():
            return
        timeout = self._shutdown_timeout_s
        future = asyncio.run_coroutine_threadsafe(_cancel_all_tasks(timeout), loop)
        try:
            future.result(timeout + 1.0)
        except Exception:  # noqa: BLE001 - shutdown is best effort; the thread is a daemon
            logger.warning("MCP bridge tasks did not finish cancelling in %gs", timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        """Return the running loop, starting its thread on first use (or first use after a fork)."""
        with self._lock:
            if self._closed:
                raise errors.ServiceUnavailable("MCP runtime is shut down")
            if self._loop is not None and self._pid == os.getpid():
                return self._loop
            # A loop inherited through fork() has no thread in this process: start afresh.
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(target=_serve_forever, args=(loop, ready), name=self._name, daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return loop


def _serve_forever(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    """Body of the loop thread: run until stopped, then release the loop's resources."""
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


async def _cancel_all_tasks(timeout: float) -> None:
    """Cancel every other task on this loop and wait (bounded) for them to finish."""
    current = asyncio.current_task()
    tasks = {task for task in asyncio.all_tasks() if task is not current}
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
