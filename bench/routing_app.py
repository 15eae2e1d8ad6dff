"""The gateway's request thread CPU per request, in process: one deployment beside three, on the whole request path.

The app (`create_app`, no gunicorn) runs in this process on a SQLite file with the models of
bench/routing_gateway.py, against the same fast stub in its own process; Flask's test client sends
each request on this thread, so `time.thread_time_ns` around it is the request's own CPU on the
whole path (auth, rate limits, preparing, admission and hold, routing, the upstream call, the relay,
settling), without gunicorn and without the accounting writer's thread. Much less noisy than
the end-to-end figure, so it resolves tens of microseconds. The models take turns, shuffled.

The router is timed on this path too (`RouterTimer`): each `Router.call`'s CPU without the upstream
call it makes, i.e. the router's own work as a request does it, with cold caches, unlike the tight
loop of bench/routing_router.py.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import processes, routing_gateway, routing_router
from bench.stats import percentile


def build_app(database_url: str, upstream_port: int):  # -> tuple[Flask, str]
    """The app on the routing bench's config, migrated, and a key with credits (its secret)."""
    from gateway import create_app, db
    from gateway.accounting import credits
    from gateway.accounting.keys import create_key
    from gateway.config import build_settings

    settings = build_settings(tomllib.loads(routing_gateway.routing_config(database_url, upstream_port)))
    app = create_app(settings)
    db.upgrade()
    with db.database.connection_context(), db.database.atomic():
        key, secret = create_key("bench-routing")
        credits.grant_credits(key.account_id, credits.to_micro(float(processes.CREDITS)))
    return app, secret


def sender(app, secret: str) -> Callable[[str], None]:  # app: Flask
    """A function that sends one JSON chat completion for a model through the app and checks it answered 200."""
    client = app.test_client()
    headers = {"Authorization": f"Bearer {secret}"}

    def send(model: str) -> None:
        response = client.post("/v1/chat/completions", json={"model": model, **routing_gateway.BODY}, headers=headers)
        response.get_data()
        if response.status_code != 200:
            raise RuntimeError(f"{model}: the app answered {response.status_code}: {response.get_data()[:300]!r}")

    return send


class RouterTimer:
    """Wraps the app's `Router.call`: the CPU of each call on this thread, the upstream call it makes left out."""

    def __init__(self, router: Any, overhead_ns: float) -> None:
        self._call = router.call
        self._overhead_ns = overhead_ns  # reading the clock four times
        self.last_us = 0.0
        router.call = self.call  # the instance attribute shadows the method

    def call(self, candidates: list[Any], send: Callable[[Any], Any]) -> Any:
        sending = 0

        def timed_send(prepared: Any) -> Any:
            nonlocal sending
            start = time.thread_time_ns()
            try:
                return send(prepared)
            finally:
                sending += time.thread_time_ns() - start

        start = time.thread_time_ns()
        try:
            return self._call(candidates, timed_send)
        finally:
            self.last_us = (time.thread_time_ns() - start - sending - self._overhead_ns) / 1000


def measure(send: Callable[[str], None], models: list[str], requests: int, timer: RouterTimer,
            seed: int = 27) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """This thread's CPU microseconds for each request, and its router's, per model, the models taking turns
    (shuffled each cycle)."""
    samples: dict[str, list[float]] = {model: [] for model in models}
    routed: dict[str, list[float]] = {model: [] for model in models}
    order, shuffle = list(models), random.Random(seed).shuffle
    for _ in range(requests):
        shuffle(order)
        for model in order:
            start = time.thread_time_ns()
            send(model)
            samples[model].append((time.thread_time_ns() - start) / 1000)
            routed[model].append(timer.last_us)
    return samples, routed


def run(requests: int = 2000, warmup: int = 200) -> dict[str, dict[str, float]]:
    """Start the stub, build the app, warm up, measure every model; the summary per model."""
    models = [routing_gateway.ONE, routing_gateway.CONTROL,
              *(routing_gateway.three(strategy) for strategy in routing_gateway.STRATEGIES)]
    folder = Path(tempfile.mkdtemp(prefix="gateway-routing-app-"))
    upstream, port = processes.start_upstream()
    try:
        with routing_router.multiprocess_metrics():
            app, secret = build_app(f"sqlite:///{folder / 'gateway.db'}", port)
            try:
                send = sender(app, secret)
                timer = RouterTimer(app.extensions["gateway.router"], 2 * routing_router.clock_overhead_ns(10000))
                measure(send, models, warmup, timer)
                samples, routed = measure(send, models, requests, timer)
            finally:
                from gateway import db, lifecycle

                lifecycle.close(app)
                db.database.close()
    finally:
        processes.stop_process(upstream)
        shutil.rmtree(folder, ignore_errors=True)
    found = routing_gateway.summary(samples)
    for model, values in routed.items():
        found[model] |= {"router_p50_us": percentile(values, 0.5), "router_p99_us": percentile(values, 0.99)}
    return found
