"""What routing costs in CPU per request: the router in process, and the gateway end to end, side by side.

    python -m bench.routing            # about 3 minutes: 20,000 router calls per model, 1,500 requests per model
    python -m bench.routing --quick    # under a minute

Target (issue 27): routing adds at most 50 us of CPU per request (p50). Two measurements:

1. `Router.call` in process (bench/routing_router.py): a one-deployment model and a three-deployment
   model per strategy, the upstream call a no-op; p50/p99 of each call's thread CPU.
2. `gateway serve` end to end (bench/routing_gateway.py): the same models against one fast stub, the
   gateway's CPU per request (every thread of its processes); p50/p99, and what three deployments
   add over one.

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

from bench import machine, routing_gateway, routing_router  # noqa: E402 - needs the sys.path line above
from bench.report import fmt, signed, table  # noqa: E402

TARGET_US = 50.0
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "ROUTING_RESULTS.md"
Summary = dict[str, dict[str, float]]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 router calls and 200 requests per model")
    parser.add_argument("--calls", type=int, default=20000, help="router calls timed per model")
    parser.add_argument("--requests", type=int, default=1500, help="gateway requests timed per model")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--no-gateway", action="store_true", help="the in-process router only")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.requests = 2000, 200
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
    rows.append(["preparing again for another deployment (`PreparedRequest.on`)", "", "", fmt(prepare["p50_us"]),
                 fmt(prepare["p99_us"]), fmt(prepare["mean_us"]), "", ""])
    return rows


def gateway_rows(found: Summary) -> list[list[str]]:
    """One row per model: p50, p99, mean, p50 added over the one-deployment model, and its ratio."""
    base = found[routing_gateway.ONE]
    rows = []
    for model, numbers in found.items():
        added = numbers["p50_added_us"]
        rows.append([f"`{model}`", "1" if model == routing_gateway.ONE else "3", fmt(numbers["p50_us"]),
                     fmt(numbers["p99_us"]), fmt(numbers["mean_us"]), signed(added),
                     fmt(numbers["p50_us"] / base["p50_us"], 3, "x"),
                     "" if model == routing_gateway.ONE else verdict(added)])
    return rows


def render(router: Summary, gateway: Summary | None, args: argparse.Namespace, started: float, took_s: float,
           load_at_start: str) -> str:
    """The Markdown report."""
    when = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Routing: CPU per request", "",
        f"`python -m bench.routing{' --quick' if args.quick else ''}` (started {when}, took {took_s / 60:.1f} min). "
        f"Target: routing adds at most {TARGET_US:.0f} us of CPU per request (p50).", "",
        "## The router in process (`Router.call`, the upstream call a no-op)", "",
        f"{args.calls:,} calls per model after a warm-up; each call's CPU with `time.thread_time_ns`, minus the "
        f"clock's own cost ({router[routing_router.CLOCK]['p50_us']:.2f} us). Health on SQLite through the "
        "cached copy, the worker's load board, metrics in multiprocess mode (file-backed). With three "
        "deployments, a pick other than the one the request was prepared for prepares it again (last row).", "",
        *table(["model", "deployments", "routing", "p50 us", "p99 us", "mean us", "p50 vs one us", "p50 <= 50 us"],
               router_rows(router), left=3),
    ]
    if gateway is not None:
        lines += [
            "", "## The gateway end to end (`gateway serve`, one fast stub)", "",
            f"{args.requests:,} JSON chat completions per model after a warm-up, one at a time on one keep-alive "
            f"connection, the models taking turns (shuffled each cycle); {args.workers} worker(s) x {args.threads} "
            "threads, SQLite, auth, rate limits, billing on a priced model and a usage row per request. A request's "
            "CPU: every thread of the gateway's processes, from just before it was sent to just after its answer "
            "was read (/proc schedstat), background work (the accounting writer, the health refresh) included.", "",
            *table(["model", "deployments", "p50 us", "p99 us", "mean us", "p50 added vs one us", "p50 / one",
                    "added <= 50 us"], gateway_rows(gateway), left=2),
            "", "The end-to-end difference is a difference of two medians of a few milliseconds each: on a "
            "shared machine its noise is tens of microseconds either way; the in-process numbers above are "
            "the router's own cost.",
        ]
    lines += ["", "## Machine", "", *(f"- {line}" for line in machine.describe({})[:2]),
              f"- load average at start (1/5/15 min): {load_at_start}",
              f"- load average at end (1/5/15 min): {machine.load_average()}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run both measurements, print the report and write it."""
    args = parse_args(argv)
    started, load_at_start = time.time(), machine.load_average()
    router = routing_router.run(args.calls, max(args.calls // 10, 200))
    gateway = None if args.no_gateway else routing_gateway.run(args.requests, max(args.requests // 10, 20),
                                                               args.workers, args.threads)
    report = render(router, gateway, args, started, time.time() - started, load_at_start)
    print(report)
    args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
