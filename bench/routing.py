"""What routing costs in CPU per request: the router in process, and the gateway end to end, side by side.

    python -m bench.routing            # about 3 minutes on an idle 2-core machine
    python -m bench.routing --quick    # under a minute

Target (issue 27): routing adds at most 50 us of CPU per request (p50). Three measurements:

1. `Router.call` in process (bench/routing_router.py): a one-deployment model and a three-deployment
   model per strategy, the upstream call a no-op; p50/p99 of each call's thread CPU.
2. The whole request path in process (bench/routing_app.py): the app behind Flask's test client,
   against one fast stub; the request thread's CPU per request, p50/p99, and what three deployments
   add over one (with a 95 % bootstrap interval, and an identical one-deployment model as a control).
3. `gateway serve` end to end (bench/routing_gateway.py): the same models and stub, the CPU of every
   thread of the gateway's processes per request; the same figures.

Prints a Markdown report and writes it to bench/ROUTING_RESULTS.md (`--output`).
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path

# `python bench/routing.py` from anywhere: the repo root instead of bench/ on the path.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import machine, routing_app, routing_gateway, routing_router  # noqa: E402 - needs the sys.path line
from bench.report import fmt, signed, table  # noqa: E402

TARGET_US = 50.0
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "ROUTING_RESULTS.md"
Summary = dict[str, dict[str, float]]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 router calls and 200 requests per model")
    parser.add_argument("--calls", type=int, default=20000, help="router calls timed per model")
    parser.add_argument("--app-requests", type=int, default=2000, help="in-process requests timed per model")
    parser.add_argument("--requests", type=int, default=1500, help="gateway serve requests timed per model")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--no-gateway", action="store_true", help="the in-process measurements only")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.app_requests, args.requests = 2000, 200, 200
    return args


def verdict(value: float) -> str:
    return "n/a" if math.isnan(value) else "PASS" if value <= TARGET_US else "FAIL"


def router_rows(found: Summary) -> list[list[str]]:
    """One row per model: deployments, strategy, p50, p99, mean, and p50 over the one-deployment model."""
    base = found[routing_router.ONE]["p50_us"]
    rows = []
    for model in (routing_router.ONE, *(routing_router.three(s) for s in routing_router.STRATEGIES)):
        numbers = found[model]
        strategy = "weighted" if model == routing_router.ONE else model.removeprefix("three-")
        rows.append([f"`{model}`", "1" if model == routing_router.ONE else "3", strategy, fmt(numbers["p50_us"]),
                     fmt(numbers["p99_us"]), fmt(numbers["mean_us"]), signed(numbers["p50_us"] - base),
                     verdict(numbers["p50_us"])])
    prepare = found[routing_router.PREPARE]
    rows.append(["the prepared request moved to another deployment (`PreparedRequest.on`)", "", "",
                 fmt(prepare["p50_us"]),
                 fmt(prepare["p99_us"]), fmt(prepare["mean_us"]), "", ""])
    return rows


def deployments_of(model: str) -> str:
    return "3" if model.startswith("route-three-") else "1"


def path_rows(found: Summary) -> list[list[str]]:
    """One row per model: p50, p99, mean, p50 added over the one-deployment model with its interval, its ratio
    (and the router's own p50/p99 on the path, when timed)."""
    base = found[routing_gateway.ONE]
    rows = []
    for model, numbers in found.items():
        first = model == routing_gateway.ONE
        interval = "" if first else f"{signed(numbers['added_low_us'])} .. {signed(numbers['added_high_us'])}"
        router = [fmt(numbers["router_p50_us"]), fmt(numbers["router_p99_us"])] if "router_p50_us" in numbers else []
        rows.append([f"`{model}`", deployments_of(model), fmt(numbers["p50_us"]), fmt(numbers["p99_us"]),
                     fmt(numbers["mean_us"]), signed(numbers["p50_added_us"]), interval,
                     fmt(numbers["p50_us"] / base["p50_us"], 3, "x"), *router])
    return rows


PATH_HEADER = ["model", "deployments", "p50 us", "p99 us", "mean us", "p50 added vs one us", "95 % interval",
               "p50 / one"]
ROUTER_HEADER = ["router p50 us", "router p99 us"]


def worst_three(found: Summary, key: str, models: list[str]) -> tuple[str, float]:
    """The three-deployment model with the highest `key`, and that value."""
    model = max(models, key=lambda name: found[name][key])
    return model, found[model][key]


def target_rows(router: Summary, app: Summary | None, gateway: Summary | None) -> list[list[str]]:
    """The target, checked on each measurement."""
    threes = [routing_router.three(strategy) for strategy in routing_router.STRATEGIES]
    one = router[routing_router.ONE]["p50_us"]
    model, worst = worst_three(router, "p50_us", threes)
    rows = [["`Router.call` CPU p50, one deployment", fmt(one), verdict(one)],
            [f"`Router.call` CPU p50, three deployments (worst: `{model}`)", fmt(worst), verdict(worst)]]
    paths = [routing_gateway.three(strategy) for strategy in routing_gateway.STRATEGIES]
    if app is not None:
        one = app[routing_gateway.ONE]["router_p50_us"]
        model, worst = worst_three(app, "router_p50_us", paths)
        rows += [["`Router.call` CPU p50 on the request path, one deployment", fmt(one), verdict(one)],
                 [f"`Router.call` CPU p50 on the request path, three deployments (worst: `{model}`)", fmt(worst),
                  verdict(worst)]]
    for label, found in (("request thread in process", app), ("`gateway serve`, all threads", gateway)):
        if found is not None:
            model, worst = worst_three(found, "p50_added_us", paths)
            control = found[routing_gateway.CONTROL]["p50_added_us"]
            rows.append([f"{label}: p50 added by three deployments over one (worst: `{model}`; the control "
                         f"adds {signed(control)})", signed(worst), ""])
    return rows


def render(router: Summary, app: Summary | None, gateway: Summary | None, args: argparse.Namespace,
           started: float, took_s: float, load_at_start: str) -> str:
    """The Markdown report."""
    when = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Routing: CPU per request", "",
        f"`python -m bench.routing{' --quick' if args.quick else ''}` (started {when}, took {took_s / 60:.1f} min). "
        f"Target: routing adds at most {TARGET_US:.0f} us of CPU per request (p50).", "",
        "## Targets (this run)", "",
        *table(["measurement", "us", "<= 50 us"], target_rows(router, app, gateway)), "",
        "## The router in process (`Router.call`, the upstream call a no-op)", "",
        f"{args.calls:,} calls per model after a warm-up; each call's CPU with `time.thread_time_ns`, minus the "
        f"clock's own cost ({router[routing_router.CLOCK]['p50_us']:.2f} us). Health on SQLite through the "
        "cached copy, the worker's load board, metrics in multiprocess mode (file-backed). With three "
        "deployments, a pick other than the one the request was prepared for moves the request there "
        "(last row: a copy with the new model id, or preparing again for a provider that prepares bodies "
        "differently).", "",
        *table(["model", "deployments", "routing", "p50 us", "p99 us", "mean us", "p50 vs one us", "p50 <= 50 us"],
               router_rows(router), left=3),
    ]
    if app is not None:
        lines += [
            "", "## The whole request path in process (the app behind Flask's test client, one fast stub)", "",
            f"{args.app_requests:,} JSON chat completions per model after a warm-up, the models taking turns "
            "(shuffled each cycle); SQLite, auth, rate limits, billing on a priced model, a usage row per request, "
            "metrics file-backed. A request's CPU: the request thread's (`time.thread_time_ns`), from the test "
            "client's call to its answer read, the whole path but gunicorn and the accounting writer's thread. "
            f"`{routing_gateway.CONTROL}` is a copy of `{routing_gateway.ONE}`: what it adds is noise. The router "
            "columns: each `Router.call`'s own CPU on this path (the upstream call it makes left out).", "",
            *table(PATH_HEADER + ROUTER_HEADER, path_rows(app), left=2),
        ]
    if gateway is not None:
        lines += [
            "", "## The gateway end to end (`gateway serve`, one fast stub)", "",
            f"{args.requests:,} JSON chat completions per model after a warm-up, one at a time on one keep-alive "
            f"connection, the models taking turns (shuffled each cycle); {args.workers} worker(s) x {args.threads} "
            "threads, SQLite, auth, rate limits, billing on a priced model and a usage row per request. A request's "
            "CPU: every thread of the gateway's processes, from just before it was sent to just after its answer "
            "was read (/proc schedstat), background work (the accounting writer, the health refresh) included.", "",
            *table(PATH_HEADER, path_rows(gateway), left=2),
        ]
    lines += ["", "What three deployments add over one is a difference of two medians of a few milliseconds "
              "each: the 95 % interval and the control say how far to trust it on this machine. The router's "
              "own cost (first table) is measured in a tight loop, with its code and data hot in the CPU's "
              "caches; on the request path they are cold, so the same work costs more there."]
    lines += ["", "## Machine", "", *(f"- {line}" for line in machine.describe({})[:2]),
              f"- load average at start (1/5/15 min): {load_at_start}",
              f"- load average at end (1/5/15 min): {machine.load_average()}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run both measurements, print the report and write it."""
    args = parse_args(argv)
    started, load_at_start = time.time(), machine.load_average()
    with routing_router.multiprocess_metrics():  # one folder for every in-process measurement
        router = routing_router.run(args.calls, max(args.calls // 10, 200))
        app = routing_app.run(args.app_requests, max(args.app_requests // 10, 20))
    gateway = None if args.no_gateway else routing_gateway.run(args.requests, max(args.requests // 10, 20),
                                                               args.workers, args.threads)
    report = render(router, app, gateway, args, started, time.time() - started, load_at_start)
    print(report)
    args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
