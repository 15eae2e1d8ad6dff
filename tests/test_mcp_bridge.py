"""McpBridge: one lazily started asyncio loop thread that request threads submit coroutines to."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Iterator

import pytest

from gateway import errors
from gateway.mcp.bridge import McpBridge

BOUND_S = 10.0  # upper bound so a hang fails instead of blocking the run


@pytest.fixture
def bridge() -> Iterator[McpBridge]:
    bridge = McpBridge()
    yield bridge
    bridge.close()


async def loop_thread_name() -> str:
    await asyncio.sleep(0)
    return threading.current_thread().name


def test_thread_starts_lazily_on_first_use(bridge: McpBridge) -> None:
    assert bridge.thread is None
    assert bridge.available

    assert bridge.run(loop_thread_name(), BOUND_S) == "mcp-bridge"
    assert bridge.thread is not None and bridge.thread.daemon and bridge.thread.is_alive()


def test_every_submission_runs_on_the_same_loop_thread(bridge: McpBridge) -> None:
    names = {bridge.run(loop_thread_name(), BOUND_S) for _ in range(3)}

    assert names == {"mcp-bridge"}
    assert threading.current_thread().name != "mcp-bridge"


def test_coroutine_exceptions_propagate_unchanged(bridge: McpBridge) -> None:
    async def own_timeout() -> None:
        raise TimeoutError("the coroutine's own timeout")

    async def bad_value() -> None:
        raise ValueError("boom")

    with pytest.raises(TimeoutError, match="the coroutine's own timeout"):
        bridge.run(own_timeout(), BOUND_S)
    with pytest.raises(ValueError, match="boom"):
        bridge.run(bad_value(), BOUND_S)


def test_run_timeout_raises_upstream_timeout_and_cancels_the_task(bridge: McpBridge) -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(errors.UpstreamTimeout) as caught:
        bridge.run(forever(), 0.2)

    assert caught.value.status == 504
    assert cancelled.wait(BOUND_S)
    assert bridge.run(loop_thread_name(), BOUND_S) == "mcp-bridge"


def test_submit_returns_a_concurrent_future(bridge: McpBridge) -> None:
    async def double(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2

    future = bridge.submit(double(21))

    assert isinstance(future, concurrent.futures.Future)
    assert future.result(BOUND_S) == 42


def test_twenty_threads_share_one_bridge(bridge: McpBridge) -> None:
    barrier = threading.Barrier(20)

    async def square(value: int) -> tuple[int, str]:
        await asyncio.sleep(0.01)
        return value * value, threading.current_thread().name

    def worker(value: int) -> tuple[int, str]:
        barrier.wait(BOUND_S)
        return bridge.run(square(value), BOUND_S)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(worker, range(20)))

    assert [value for value, _ in results] == [n * n for n in range(20)]
    assert {name for _, name in results} == {"mcp-bridge"}


def test_close_is_idempotent_cancels_tasks_and_stops_the_thread() -> None:
    bridge = McpBridge()
    pending = bridge.submit(asyncio.sleep(3600))
    thread = bridge.thread
    assert thread is not None

    bridge.close()
    bridge.close()

    assert pending.cancelled()
    assert not thread.is_alive()
    assert bridge.closed and not bridge.available


def test_after_close_run_and_submit_raise_service_unavailable() -> None:
    bridge = McpBridge()
    bridge.run(loop_thread_name(), BOUND_S)
    bridge.close()

    with pytest.raises(errors.ServiceUnavailable) as caught:
        bridge.run(loop_thread_name(), BOUND_S)
    assert caught.value.status == 503
    with pytest.raises(errors.ServiceUnavailable):
        bridge.submit(loop_thread_name())


def test_close_before_first_use_starts_nothing() -> None:
    bridge = McpBridge()
    bridge.close()

    assert bridge.thread is None
    with pytest.raises(errors.ServiceUnavailable):
        bridge.run(loop_thread_name(), BOUND_S)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_starts_its_own_loop_thread(bridge: McpBridge) -> None:
    bridge.run(loop_thread_name(), BOUND_S)
    parent_thread = bridge.thread

    pid = os.fork()
    if pid == 0:  # child: the inherited loop has no thread here, so the bridge must start one
        ok = False
        try:
            ok = (
                bridge.run(loop_thread_name(), BOUND_S) == "mcp-bridge" and bridge.thread is not parent_thread
            )
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert bridge.thread is parent_thread and parent_thread is not None and parent_thread.is_alive()
