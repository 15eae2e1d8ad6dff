"""The router's own CPU per request, in process: pick + bookkeeping, with the upstream call a no-op.

`Router.call(candidates, send)` (gateway.upstream.router) as a worker runs it, on the real boards:
the shared health on a SQLite file through its cached copy (refreshed by its own thread, every
`state_refresh_s`), this worker's load board, and the per-deployment metrics in prometheus_client's
multiprocess mode (file-backed, as under gunicorn). `send` returns at once, so what is timed is
the choice (health copy, load, `balance.choose`), moving the request to the chosen deployment
(`PreparedRequest.on`), the load count and release, the metrics, and the health's success path.
Each call is timed with `time.thread_time_ns` (this thread's CPU only; the refresh thread's
SELECT is not a request's cost), minus the median cost of reading that clock twice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.stats import percentile

STRATEGIES = ("weighted", "least_busy", "latency", "ordered")
PROVIDERS = ("replica-a", "replica-b", "replica-c")
BODY = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
ONE = "one"
CLOCK = "clock"  # the cost of reading the clock twice (taken off every sample)
PREPARE = "prepare"  # PreparedRequest.on: the request moved to another deployment of the model


def three(strategy: str) -> str:
    """The three-deployment model of a strategy."""
    return f"three-{strategy}"


def router_config(database_url: str) -> dict[str, Any]:
    """Settings as TOML data: three providers (never called), a one-deployment model, three per strategy."""
    providers = "\n".join(f'[providers."{name}"]\nbase_url = "http://127.0.0.1:9/v1"\n' for name in PROVIDERS)
    models = [f'[models."{ONE}"]\nprovider = "{PROVIDERS[0]}"\ninput_price_per_mtok = 1.0\n']
    for strategy in STRATEGIES:
        model = three(strategy)  # its own upstream model ids, so its deployments' names (and health) are its own
        models.append(f'[models."{model}"]\nrouting = "{strategy}"\ninput_price_per_mtok = 1.0\n')
        models += [f'[[models."{model}".deployments]]\nprovider = "{name}"\nupstream_model = "{model}"\n'
                   for name in PROVIDERS]
    return tomllib.loads(f'[database]\nurl = "{database_url}"\n{providers}\n' + "\n".join(models))


@contextlib.contextmanager
def multiprocess_metrics() -> Iterator[None]:
    """Metrics file-backed, as under gunicorn: a temporary PROMETHEUS_MULTIPROC_DIR unless one is set already.

    The folder must outlive every use of the metrics in this process (they are created once, on first use).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    folder = tempfile.mkdtemp(prefix="gateway-routing-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(folder, ignore_errors=True)


def clock_overhead_ns(samples: int) -> float:
    """The median cost of two back-to-back thread_time_ns reads."""
    costs = []
    for _ in range(samples):
        start = time.thread_time_ns()
        costs.append(time.thread_time_ns() - start)
    return percentile(costs, 0.5)


def summary(samples: list[float]) -> dict[str, float]:
    """p50, p99 and mean of the samples."""
    return {"p50_us": percentile(samples, 0.5), "p99_us": percentile(samples, 0.99),
            "mean_us": sum(samples) / len(samples)}


def time_calls(call: Callable[[], object], count: int, overhead_ns: float) -> list[float]:
    """Microseconds of CPU of each of `count` calls, the clock's own cost taken off."""
    samples = []
    for _ in range(count):
        start = time.thread_time_ns()
        call()
        samples.append((time.thread_time_ns() - start - overhead_ns) / 1000)
    return samples


def run(calls: int = 20000, warmup: int = 2000) -> dict[str, dict[str, float]]:
    """p50, p99 and mean microseconds of `Router.call` per model (one deployment, then three per strategy)."""
    folder = Path(tempfile.mkdtemp(prefix="gateway-routing-bench-"))
    board = None
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        stack.enter_context(multiprocess_metrics())
        stack.callback(lambda: board is not None and board.close())
        from gateway import db
        from gateway.config import build_settings
        from gateway.upstream.client import UpstreamClient
        from gateway.upstream.health_store import health_board
        from gateway.upstream.load import LoadBoard
        from gateway.upstream.prepared import prepare
        from gateway.upstream.router import Router
        from gateway.upstream.routing import resolve

        settings = build_settings(router_config(f"sqlite:///{folder / 'gateway.db'}"))
        db.bind(settings.database.url)
        db.upgrade()
        board = health_board(settings)
        router = Router(settings, UpstreamClient(settings.providers, 4), board, LoadBoard(settings.server.workers))
        answer = object()

        def send(_prepared: object) -> object:
            return answer

        overhead = clock_overhead_ns(10000)
        results: dict[str, dict[str, float]] = {CLOCK: {"p50_us": overhead / 1000, "p99_us": float("nan"),
                                                         "mean_us": float("nan")}}
        for model in (ONE, *(three(strategy) for strategy in STRATEGIES)):
            route = resolve(settings, model)
            candidates = [prepare(route, "chat/completions", BODY, settings.providers[route.provider], False)]

            def call(candidates: list = candidates) -> object:
                return router.call(candidates, send)

            time_calls(call, warmup, overhead)
            samples = time_calls(call, calls, overhead)
            results[model] = summary(samples)
        # what the router adds when it picks a deployment other than the prepared one: moving the request there
        route = resolve(settings, three(STRATEGIES[0]))
        prepared = prepare(route, "chat/completions", BODY, settings.providers[route.provider], False)
        other = route.on(route.deployments[1])
        time_calls(lambda: prepared.on(other, settings.providers), warmup, overhead)
        results[PREPARE] = summary(time_calls(lambda: prepared.on(other, settings.providers), calls, overhead))
        return results
