"""Entry point: `python bench/run.py [--requests N] [--concurrency C] [--database sqlite|postgres|both]`.

Starts a fake upstream and one real gunicorn gateway per database, warms every scenario up,
then runs them interleaved in round-robin blocks and reports medians, percentiles and ratios.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Replace bench/ (the script's folder) with the repo root: `python bench/run.py` from anywhere.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import databases, machine, processes, report  # noqa: E402 - needs the sys.path line above
from bench.load import Block, Target, chat_target, run_block  # noqa: E402 - needs the sys.path line above
from bench.stats import summarize  # noqa: E402 - needs the sys.path line above

RESULTS = Path(__file__).resolve().parent / "results" / "latest.md"
PRICED_CREDITS = "1000"  # far more than any run spends
LIMITS = {"requests": 50_000, "concurrency": 64, "rounds": 1000, "warmup": 5000, "workers": 8, "threads": 256,
          "max_seconds": 3600}


@dataclass(frozen=True)
class Deployment:
    """A running gateway: its port, database URL and {model: (key id, secret)}."""

    port: int
    url: str
    keys: dict[str, tuple[int, str]]


@dataclass
class Scenario:
    """One line of the table: a target and the blocks measured against it."""

    name: str
    database: str
    target: Target
    key_id: int | None = None
    sent_ok: int = 0
    blocks: list[Block] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="measured requests per scenario")
    parser.add_argument("--concurrency", type=int, default=4, help="client connections in flight")
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both",
                        help="both = SQLite, plus PostgreSQL when a server answers")
    parser.add_argument("--rounds", type=int, default=20, help="round-robin blocks per scenario")
    parser.add_argument("--warmup", type=int, default=40, help="unmeasured requests per scenario first")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per gateway")
    parser.add_argument("--threads", type=int, default=16, help="gthread threads per worker")
    parser.add_argument("--max-seconds", type=float, default=150, help="hard bound on the measured phase")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the Markdown goes")
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency, args.rounds, args.workers, args.threads) < 1 or args.warmup < 0:
        parser.error("counts must be positive")
    for name, limit in LIMITS.items():
        if getattr(args, name) > limit:
            parser.error(f"--{name.replace('_', '-')} is at most {limit}")
    return args


def chosen_databases(choice: str, notes: list[str]) -> list[tuple[str, str | None]]:
    """(label, PostgreSQL server URL or None for SQLite) for each database to measure."""
    wanted = ["sqlite", "postgres"] if choice == "both" else [choice]
    chosen: list[tuple[str, str | None]] = []
    for name in wanted:
        if name == "sqlite":
            chosen.append(("sqlite", None))
            continue
        server = databases.postgres_server_url() if databases.has_postgres_driver() else None
        if server is None and choice == "postgres":
            raise SystemExit("bench: no PostgreSQL (needs psycopg2, and GATEWAY_TEST_DATABASE_URL or a server "
                             "on 127.0.0.1:5432)")
        if server is None:
            notes.append("PostgreSQL skipped: no psycopg2, or GATEWAY_TEST_DATABASE_URL unset and nothing "
                         "on 127.0.0.1:5432.")
        else:
            chosen.append(("postgres", server))
    return chosen


class Run:
    """Owns every process and temporary resource of one run; `close()` releases them all."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
        self.upstream = None
        self.gateways: list[processes.Gateway] = []
        self.postgres_servers: list[str] = []

    def start_upstream(self) -> int:
        self.upstream, port = processes.start_upstream()
        return port

    def start_gateway(self, label: str, server_url: str | None, upstream_port: int) -> Deployment:
        """Database, config, one key per model and gunicorn for one database."""
        if server_url is None:
            url = databases.sqlite_url(self.workdir)
        else:
            self.postgres_servers.append(server_url)
            url = databases.create_postgres_database(server_url)
        config = self.workdir / f"{label}.toml"
        config.write_text(processes.gateway_config(url, upstream_port))
        keys = {
            processes.FREE_MODEL: processes.create_key(config, "bench-free"),
            processes.PRICED_MODEL: processes.create_key(config, "bench-priced", PRICED_CREDITS),
        }
        gateway = processes.Gateway(label, config, self.workdir / f"{label}.log")
        self.gateways.append(gateway)
        gateway.start(self.args.workers, self.args.threads)
        return Deployment(gateway.port, url, keys)

    def own_groups(self) -> set[int]:
        """Process groups of the children (each leads its own session, so group id == pid)."""
        return {p.pid for p in [self.upstream, *[g.process for g in self.gateways]] if p is not None}

    def close(self) -> None:
        """Stop gateways, drop the bench database, stop the upstream, delete the workdir; each step runs."""
        steps: list[Callable[[], object]] = [gateway.stop for gateway in self.gateways]
        steps += [functools.partial(databases.drop_postgres_database, server) for server in self.postgres_servers]
        if self.upstream is not None:
            steps.append(functools.partial(processes.stop_process, self.upstream))
        steps.append(functools.partial(shutil.rmtree, self.workdir, ignore_errors=True))
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - report and go on: the other steps must still run
                print(f"bench: cleanup step failed: {exc!r}", file=sys.stderr)


def build_scenarios(run: Run, chosen: list[tuple[str, str | None]]) -> tuple[list[Scenario], dict[str, str]]:
    """The direct floors plus free/priced per database (and one priced stream on the first)."""
    upstream_port = run.start_upstream()
    scenarios = [
        Scenario(report.DIRECT, "-", chat_target("direct", upstream_port, "/v1/chat/completions",
                                                 "bench-upstream", None)),
        Scenario(report.DIRECT_STREAM, "-", chat_target("direct-stream", upstream_port, "/v1/chat/completions",
                                                        "bench-upstream", None, stream=True)),
    ]
    urls = {}
    for position, (label, server) in enumerate(chosen):
        deployment = run.start_gateway(label, server, upstream_port)
        urls[label] = deployment.url
        for name, model in ((report.FREE, processes.FREE_MODEL), (report.PRICED, processes.PRICED_MODEL)):
            key_id, secret = deployment.keys[model]
            target = chat_target(f"{label}-{model}", deployment.port, "/v1/chat/completions", model, secret)
            scenarios.append(Scenario(name, label, target, key_id))
        if position == 0:
            key_id, secret = deployment.keys[processes.PRICED_MODEL]
            target = chat_target(f"{label}-stream", deployment.port, "/v1/chat/completions", processes.PRICED_MODEL,
                                 secret, stream=True)
            scenarios.append(Scenario(report.PRICED_STREAM, label, target, key_id))
    return scenarios, urls


def block_sizes(total: int, rounds: int) -> list[int]:
    """`total` requests split into `rounds` blocks (no empty blocks)."""
    base, extra = divmod(total, rounds)
    return [base + (1 if index < extra else 0) for index in range(rounds) if base or index < extra]


def measure(
    scenarios: list[Scenario], args: argparse.Namespace, notes: list[str], observe: Callable[[], None]
) -> None:
    """Warm up every scenario, then interleave them: each round runs one block of each, rotated.

    `observe` runs before every round (it samples what else the machine is doing).
    """
    deadline = time.monotonic() + args.max_seconds
    for scenario in scenarios:
        if args.warmup:
            warm = run_block(scenario.target, args.warmup, args.concurrency, deadline)
            scenario.sent_ok += sum(sample.ok for sample in warm.samples)
    sizes = block_sizes(args.requests, args.rounds)
    for index, size in enumerate(sizes):
        if time.monotonic() > deadline:
            notes.append(f"Stopped at the {args.max_seconds:.0f} s bound after {index} of {len(sizes)} rounds.")
            return
        observe()
        shift = index % len(scenarios)
        for scenario in scenarios[shift:] + scenarios[:shift]:
            block = run_block(scenario.target, size, args.concurrency, deadline)
            scenario.blocks.append(block)
            scenario.sent_ok += sum(sample.ok for sample in block.samples)


def accounting_checks(scenarios: list[Scenario], urls: dict[str, str]) -> list[str]:
    """Did the gateway really account? Rows written per key against successful requests sent."""
    expected: dict[tuple[str, int], int] = {}
    for scenario in scenarios:
        if scenario.key_id is not None:
            slot = (scenario.database, scenario.key_id)
            expected[slot] = expected.get(slot, 0) + scenario.sent_ok
    lines = []
    for (database, key_id), sent in sorted(expected.items()):
        counts = databases.accounting_counts(urls[database], key_id)
        lines.append(
            f"{database}, key {key_id}: {sent} successful requests -> {counts['usage_rows']} usage rows, "
            f"{counts['charges']} ledger charges, {counts['open_reservations']} open reservations"
        )
    return lines


def setup_line(args: argparse.Namespace) -> str:
    return (
        f"Each gateway: real gunicorn, {args.workers} gthread workers x {args.threads} threads, on loopback, "
        f"in front of one fake upstream process (bench/upstream.py). Client: {args.concurrency} keep-alive "
        f"connections (http.client threads); {args.warmup} warm-up requests per scenario, then "
        f"{args.requests} measured requests per scenario in {args.rounds} interleaved round-robin blocks."
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the Markdown report and write it to --output."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` cleans up on kill too
    started, clock = datetime.datetime.now().astimezone(), time.monotonic()
    notes: list[str] = []
    chosen = chosen_databases(args.database, notes)
    info = report.RunInfo(
        command=shlex.join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        started=started.strftime("%Y-%m-%d %H:%M %Z"), duration_s=0.0, setup=setup_line(args),
        machine=machine.describe(), notes=notes,
    )
    run = Run(args)
    busy: set[str] = set()
    try:
        scenarios, urls = build_scenarios(run, chosen)
        measure(scenarios, args, notes, lambda: busy.update(machine.busy_processes(run.own_groups())))
        info.checks = accounting_checks(scenarios, urls)
    finally:
        run.close()
    info.machine.append(f"load average at end (1/5/15 min): {machine.load_average()}")
    if busy:
        notes.append(machine.busy_note(busy))
    info.duration_s = time.monotonic() - clock
    text = report.render([summarize(s.name, s.database, s.blocks, args.concurrency) for s in scenarios], info)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
