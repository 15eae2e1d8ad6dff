"""What the response cache costs on a miss and saves on a hit: side by side with the cache off and the stub direct.

    python -m bench.cache            # about 4 minutes on an idle 2-core machine
    python -m bench.cache --quick    # about a minute

Targets (issue 28): a cache lookup on a miss adds at most 100 us (p50) over the same request with the
cache off, and a hit answers faster than the upstream stub asked directly.

Every request is a JSON chat completion on the fast stub (bench/upstream.py), with the bench's priced
models, auth, rate limits, admission and a usage row per request. Two models on the same provider:
`cache-on` (the cache asked) and `cache-off` (`cache_ttl_s = 0`: never asked). The kinds of request,
taking turns in a shuffled order each cycle so drift falls on all alike:

- `off`: `cache-off`, a body never sent before: the request with no cache at all;
- `miss`: `cache-on`, a new body, `Cache-Control: no-store`: the key and one lookup, nothing stored;
- `miss+store`: `cache-on`, a new body: the lookup, then the answer stored (as a first request is);
- `hit`: `cache-on`, the same body every time: answered from the cache, never sent upstream.

1. In process (the app behind Flask's test client, as bench/routing_app.py): each request's wall time and
   its thread's CPU, on SQLite, then on Redis when `redis-server` is installed.
2. `gateway serve` end to end (one worker, one keep-alive connection): each request's wall time, and the stub
   asked directly on a keep-alive connection of its own (`direct`).

Prints a Markdown report and writes it to bench/CACHE_RESULTS.md (`--output`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import itertools
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

# `python bench/cache.py` from anywhere: the repo root instead of bench/ on the path.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import machine, processes, routing_router  # noqa: E402 - needs the sys.path line
from bench.report import fmt, signed, table  # noqa: E402
from bench.routing_gateway import added_interval  # noqa: E402
from bench.stats import percentile  # noqa: E402
from tests.ports import free_port  # noqa: E402

MISS_TARGET_US = 100.0
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "CACHE_RESULTS.md"
CACHED, UNCACHED = "cache-on", "cache-off"
KINDS = ("off", "miss", "miss+store", "hit")
LOOKUPS = tuple(f"lookup {kind}" for kind in KINDS[1:])  # `look_up` alone, within those requests
HIT_BODY = {"messages": [{"role": "user", "content": "Say hello #hit"}], "max_tokens": 16}
Sample = tuple[float, float]  # (wall us, thread CPU us)
Send = Callable[[str, str, dict, dict[str, str]], None]  # (kind, model, body, headers)


def cache_config(database_url: str, port: int, backend: str = "database", redis_url: str | None = None) -> str:
    """The bench's gateway config, the cache on, and the two models: one cached, one never."""
    prices = "\n".join(f"{name} = {value}" for name, value in processes.PRICES.items())
    cache = f'[cache]\nenabled = true\nbackend = "{backend}"\nmax_entries = 100000\n'
    cache += f'url = "{redis_url}"\n' if redis_url else ""
    models = [f'[models."{model}"]\nprovider = "json"\nupstream_model = "{model}"\n{prices}\nmax_output_tokens = 64\n'
              + ("cache_ttl_s = 0\n" if model == UNCACHED else "") for model in (CACHED, UNCACHED)]
    return "\n".join([processes.gateway_config(database_url, port), "[server]\nmax_requests = 0\n", cache, *models])


class Requests:
    """Each kind's request: its model, body (a new one for misses) and headers."""

    def __init__(self) -> None:
        self._fresh = itertools.count()

    def of(self, kind: str) -> tuple[str, dict, dict[str, str]]:
        if kind == "hit":
            return CACHED, HIT_BODY, {}
        body = {"messages": [{"role": "user", "content": f"Say hello #{next(self._fresh)}"}], "max_tokens": 16}
        headers = {"Cache-Control": "no-store"} if kind == "miss" else {}
        return (UNCACHED if kind == "off" else CACHED), body, headers  # `direct`: the stub answers any model


def measure(send: Send, kinds: tuple[str, ...], count: int, seed: int = 28,
            timer: LookupTimer | None = None) -> dict[str, list[Sample]]:
    """(wall us, thread CPU us) of `count` requests of each kind, the kinds taking turns (shuffled each cycle);
    with a timer, also each cached kind's lookup alone (as `lookup <kind>`)."""
    made, samples = Requests(), {kind: [] for kind in kinds}
    lookups: dict[str, list[Sample]] = {f"lookup {kind}": [] for kind in kinds if kind != "off"} if timer else {}
    order, shuffle = list(kinds), random.Random(seed).shuffle
    for _ in range(count):
        shuffle(order)
        for kind in order:
            model, body, headers = made.of(kind)
            wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
            send(kind, model, body, headers)
            samples[kind].append(((time.perf_counter_ns() - wall) / 1000, (time.thread_time_ns() - cpu) / 1000))
            if timer is not None and kind != "off":
                lookups[f"lookup {kind}"].append(timer.last)
    return samples | lookups


# -- in process ----------------------------------------------------------------------------------------


class LookupTimer:
    """Wraps `gateway.api.cached.look_up` (the faces call it through the module): each call's wall and CPU us."""

    def __init__(self) -> None:
        from gateway.api import cached

        self._module, self._look_up = cached, cached.look_up
        self.last: Sample = (math.nan, math.nan)
        cached.look_up = self.look_up

    def look_up(self, *args: object) -> object:
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        try:
            return self._look_up(*args)
        finally:
            self.last = ((time.perf_counter_ns() - wall) / 1000, (time.thread_time_ns() - cpu) / 1000)

    def close(self) -> None:
        self._module.look_up = self._look_up


def build_app(config: str):  # -> tuple[Flask, str]
    """The app on `config`, migrated, and a key with credits (its secret)."""
    from gateway import create_app, db
    from gateway.accounting import credits
    from gateway.accounting.keys import create_key
    from gateway.config import build_settings

    app = create_app(build_settings(tomllib.loads(config)))
    db.upgrade()
    with db.database.connection_context(), db.database.atomic():
        key, secret = create_key("bench-cache")
        credits.grant_credits(key.account_id, credits.to_micro(float(processes.CREDITS)))
    return app, secret


def app_sender(app, secret: str) -> Send:  # app: Flask
    """Sends one request through the app's test client; raises unless it answered 200."""
    client = app.test_client()

    def send(_kind: str, model: str, body: dict, headers: dict[str, str]) -> None:
        response = client.post("/v1/chat/completions", json={"model": model, **body},
                               headers={"Authorization": f"Bearer {secret}", **headers})
        response.get_data()
        if response.status_code != 200:
            raise RuntimeError(f"{model}: the app answered {response.status_code}: {response.get_data()[:300]!r}")

    return send


def run_in_process(backend: str, requests: int, warmup: int, redis_url: str | None = None) -> dict[str, list[Sample]]:
    """The four kinds through the app in this process, the cache on `backend`."""
    from gateway import db, lifecycle

    folder = Path(tempfile.mkdtemp(prefix="gateway-cache-bench-"))
    upstream, port = processes.start_upstream()
    try:
        app, secret = build_app(cache_config(f"sqlite:///{folder / 'gateway.db'}", port, backend, redis_url))
        timer = LookupTimer()
        try:
            send = app_sender(app, secret)
            send("hit", CACHED, HIT_BODY, {})  # the hit's entry
            measure(send, KINDS, warmup)
            return measure(send, KINDS, requests, timer=timer)
        finally:
            timer.close()
            lifecycle.close(app)
            db.database.close()
    finally:
        processes.stop_process(upstream)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A redis-server of the bench's own on a free port (its URL), or None when it or the client is missing."""
    binary = shutil.which("redis-server")
    try:
        import redis  # noqa: F401 - only whether the client is installed
    except ImportError:
        binary = None
    if binary is None:
        yield None
        return
    port, folder = free_port(), tempfile.mkdtemp(prefix="gateway-cache-redis-")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), http.client.socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


# -- end to end -----------------------------------------------------------------------------------------


class Connection:
    """One keep-alive connection that POSTs chat completions (to the gateway with a key, or to the stub)."""

    def __init__(self, port: int, path: str, secret: str | None = None) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.path, self.secret = path, secret

    def send(self, model: str, body: dict, headers: dict[str, str]) -> None:
        auth = {"Authorization": f"Bearer {self.secret}"} if self.secret else {}
        self.connection.request("POST", self.path, json.dumps({"model": model, **body}),
                                {"Content-Type": "application/json", **auth, **headers})
        response = self.connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"{model}: answered {response.status}: {payload[:300]!r}")


def run_gateway(requests: int, warmup: int) -> dict[str, list[Sample]]:
    """The four kinds through `gateway serve` (SQLite), and the stub asked directly, wall time each."""
    upstream, port = processes.start_upstream()
    service = None
    try:
        with tempfile.TemporaryDirectory() as folder:
            workdir = Path(folder)
            config = workdir / "gateway.toml"
            config.write_text(cache_config(f"sqlite:///{workdir / 'gateway.db'}", port))
            _, secret = processes.create_key(config, "cache bench", processes.CREDITS)
            service = processes.gateway_service("gateway", config, workdir, 1, 8).start()
            service.wait_ready()
            gateway = Connection(service.port, "/v1/chat/completions", secret)
            direct = Connection(port, "/v1/chat/completions")

            def send(kind: str, model: str, body: dict, headers: dict[str, str]) -> None:
                (direct if kind == "direct" else gateway).send(model, body, headers)

            send("hit", CACHED, HIT_BODY, {})  # the hit's entry
            measure(send, (*KINDS, "direct"), warmup)
            return measure(send, (*KINDS, "direct"), requests)
    finally:
        if service is not None:
            service.stop()
        processes.stop_process(upstream)


# -- the report -----------------------------------------------------------------------------------------


def summary(samples: dict[str, list[Sample]], column: int) -> dict[str, dict[str, float]]:
    """p50 and p99 of one column (0 wall, 1 CPU) per kind, and a request kind's p50 added over `off` with its 95 %
    interval (NaN for the lookups timed alone)."""
    base = [sample[column] for sample in samples["off"]]
    found = {}
    for kind, pairs in samples.items():
        values = [sample[column] for sample in pairs]
        compared = kind not in ("off", *LOOKUPS)
        low, high = added_interval(values, base) if compared else (math.nan, math.nan)
        added = percentile(values, 0.5) - percentile(base, 0.5) if compared else math.nan
        found[kind] = {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99), "added": added,
                       "low": low, "high": high}
    return found


def kind_rows(samples: dict[str, list[Sample]], columns: tuple[int, ...]) -> list[list[str]]:
    """One row per kind: for each column, p50, p99, and the p50 added over `off` with its interval."""
    summaries = [summary(samples, column) for column in columns]
    rows = []
    for kind in samples:
        row = [f"`{kind}`"]
        for found in summaries:
            numbers = found[kind]
            compared = not math.isnan(numbers["added"])
            interval = f"{signed(numbers['low'])} .. {signed(numbers['high'])}" if compared else ""
            row += [fmt(numbers["p50"]), fmt(numbers["p99"]), signed(numbers["added"]) if compared else "", interval]
        rows.append(row)
    return rows


def verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else "PASS" if passed else "FAIL"


def target_rows(runs: dict[str, dict[str, list[Sample]]], gateway: dict[str, list[Sample]] | None) -> list[list[str]]:
    """The two targets, on each measurement they apply to."""
    rows = []
    for label, samples in runs.items():
        for column, what in ((0, "wall"), (1, "CPU")):
            found = summary(samples, column)
            alone, added = found["lookup miss"]["p50"], found["miss"]["added"]
            rows += [[f"in process, {label}: the lookup on a miss (`look_up` alone), {what} p50", fmt(alone),
                      verdict(alone <= MISS_TARGET_US)],
                     [f"in process, {label}: a miss (lookup only) over off, {what} p50", signed(added),
                      verdict(None if math.isnan(added) else added <= MISS_TARGET_US)]]
    if gateway is not None:
        found = summary(gateway, 0)
        added = found["miss"]["added"]
        rows.append(["miss (lookup only) over off, `gateway serve`, SQLite, wall p50", signed(added),
                     verdict(added <= MISS_TARGET_US)])
        hit, direct = found["hit"]["p50"], found["direct"]["p50"]
        rows.append([f"hit p50 {fmt(hit)} us vs the stub direct p50 {fmt(direct)} us (`gateway serve`, wall)",
                     fmt(hit / direct, 2, "x"), verdict(hit < direct)])
    return rows


def render(runs: dict[str, dict[str, list[Sample]]], gateway: dict[str, list[Sample]] | None,
           args: argparse.Namespace, started: float, took_s: float, load_at_start: str) -> str:
    """The Markdown report."""
    when = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = ["kind", "wall p50 us", "wall p99 us", "wall p50 added us", "95 % interval",
              "CPU p50 us", "CPU p99 us", "CPU p50 added us", "95 % interval"]
    lines = [
        "# Response cache: what a miss costs, what a hit saves", "",
        f"`python -m bench.cache{' --quick' if args.quick else ''}` (started {when}, took {took_s / 60:.1f} min). "
        f"Targets: a lookup on a miss adds at most {MISS_TARGET_US:.0f} us (p50) over the same request with the "
        "cache off; a hit answers faster than the upstream stub asked directly. The kinds of request are "
        "described in `bench/cache.py`'s docstring.", "",
        "## Targets (this run)", "",
        *table(["measurement", "value", "target"], target_rows(runs, gateway)), "",
    ]
    for label, samples in runs.items():
        lines += [f"## In process, cache on {label}", "",
                  f"{args.app_requests:,} requests per kind after a warm-up; wall time and the request thread's CPU "
                  "from the test client's call to the answer read (the stub's answer included in the wall time).",
                  "", *table(header, kind_rows(samples, (0, 1))), ""]
    if gateway is not None:
        lines += ["## `gateway serve` end to end (SQLite, 1 worker x 8 threads)", "",
                  f"{args.requests:,} requests per kind after a warm-up, one at a time on one keep-alive connection "
                  "each (the gateway's, the stub's); wall time from sending to the answer read.", "",
                  *table(header[:5], kind_rows(gateway, (0,))), ""]
    lines += ["## Reading", "",
              "`lookup miss` is the lookup alone, timed around `gateway.api.cached.look_up` within the `miss` "
              "requests: the key (a SHA-256 of the normalized body), one read of the backend (SQLite: a "
              "primary-key SELECT on a pooled connection; Redis: one round trip), the metric. `miss` over `off` is "
              "the same cost as a difference of two medians, noisier. The stub answers in well under a "
              "millisecond, which no model does: a hit still authenticates, rate-limits, holds and writes a usage "
              "row, so it cannot beat the stub itself; what it saves is routing, the upstream call and the relay "
              "(`hit` against `off`), and against a real model the model's whole answer time.", "",
              "## Machine", "", *(f"- {line}" for line in machine.describe({})[:2]),
              f"- load average at start (1/5/15 min): {load_at_start}",
              f"- load average at end (1/5/15 min): {machine.load_average()}"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 requests per kind in each measurement")
    parser.add_argument("--app-requests", type=int, default=2000, help="in-process requests timed per kind")
    parser.add_argument("--requests", type=int, default=1500, help="gateway serve requests timed per kind")
    parser.add_argument("--no-gateway", action="store_true", help="the in-process measurements only")
    parser.add_argument("--no-redis", action="store_true", help="skip the in-process run on Redis")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.app_requests, args.requests = 300, 300
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the measurements, print the report and write it."""
    args = parse_args(argv)
    started, load_at_start = time.time(), machine.load_average()
    warmup = max(args.app_requests // 10, 20)
    runs = {}
    with routing_router.multiprocess_metrics():
        runs["SQLite"] = run_in_process("database", args.app_requests, warmup)
        if not args.no_redis:
            with redis_server() as url:
                if url is not None:
                    runs["Redis"] = run_in_process("redis", args.app_requests, warmup, url)
    gateway = None if args.no_gateway else run_gateway(args.requests, max(args.requests // 10, 20))
    report = render(runs, gateway, args, started, time.time() - started, load_at_start)
    print(report)
    args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
