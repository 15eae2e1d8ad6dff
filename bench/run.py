"""The benchmark, one command: `python bench/run.py [--quick]`.

Installs what it needs (wrk and nginx from Debian, LiteLLM in bench/.venv-litellm), starts the
stubs and every contestant side by side (direct, the floor, the gateway on SQLite and on
PostgreSQL, LiteLLM's proxy), measures JSON chat with wrk at 1 and 64 connections, streams,
1,000 concurrent slow streams and the gateway's /v1/responses, then prints the report and
writes it to bench/RESULTS.md. `--quick` is a ~3 minute smoke run; the default takes ~10.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import shlex
import signal
import sys
import time
from pathlib import Path

# Replace bench/ (the script's folder) with the repo root: `python bench/run.py` from anywhere.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import databases, install, machine, report  # noqa: E402 - needs the sys.path line above
from bench.lineup import Lineup  # noqa: E402 - needs the sys.path line above
from bench.measure import Measurements, Plan, Runner  # noqa: E402 - needs the sys.path line above

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
FULL = {"rounds": 3, "wrk_seconds": 8.0, "stream_seconds": 5.0, "warmup_seconds": 3.0}
QUICK = {"rounds": 1, "wrk_seconds": 2.0, "stream_seconds": 1.5, "warmup_seconds": 1.0}
LIMITS = {"rounds": 10, "wrk_seconds": 60, "stream_seconds": 60, "warmup_seconds": 30, "slow_streams": 5000,
          "slow_timeout": 300, "workers": 8, "threads": 256}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 s wrk runs, 1.5 s streams")
    parser.add_argument("--rounds", type=int, help=f"interleaved rounds ({FULL['rounds']}; quick {QUICK['rounds']})")
    parser.add_argument("--wrk-seconds", type=float, help=f"each wrk run ({FULL['wrk_seconds']:.0f})")
    parser.add_argument("--stream-seconds", type=float, help=f"each stream series ({FULL['stream_seconds']:.0f})")
    parser.add_argument("--warmup-seconds", type=float, help=f"warm-up per scenario ({FULL['warmup_seconds']:.0f})")
    parser.add_argument("--slow-streams", type=int, default=1000, help="concurrent slow streams (1000)")
    parser.add_argument("--slow-timeout", type=float, default=120.0, help="bound on each slow stream, s (120)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the gateway, floor and LiteLLM (2)")
    parser.add_argument("--threads", type=int, default=32, help="gthread threads per worker (32)")
    parser.add_argument("--no-setup", action="store_true", help="install nothing; skip what is missing")
    parser.add_argument("--setup-only", action="store_true", help="install wrk, nginx and LiteLLM, then stop")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument("--no-postgres", action="store_true", help="leave the PostgreSQL gateway out")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the Markdown goes")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name, limit in LIMITS.items():
        value = getattr(args, name)
        if not 0 < value <= limit:
            parser.error(f"--{name.replace('_', '-')} must be in (0, {limit}]")
    return args


def raise_file_limit(needed: int) -> None:
    """Enough descriptors for the slow streams' sockets (the children inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard == resource.RLIM_INFINITY else min(needed, hard),
                                                    hard))


def setup_line(args: argparse.Namespace) -> str:
    return (
        f"Gateway and floor: gunicorn gthread, {args.workers} workers x {args.threads} threads; LiteLLM: "
        f"{args.workers} workers, no database. Gateway: auth, rate limits (high rpm/tpm, never denying), "
        "billing on a priced model (reserve -> settle -> ledger), a usage row per request. Same stubs for all: "
        "nginx answers JSON chat, a Python asyncio stub streams (32 content chunks). JSON load: wrk (1 thread) "
        f"for {args.wrk_seconds:g} s per run, {args.rounds} interleaved round(s), after "
        f"{args.warmup_seconds:g} s of warm-up per scenario. Streams: {args.stream_seconds:g} s of back-to-back "
        "streams per round on one connection (raw asyncio client). Everything on loopback, on one machine: "
        "the client, the stubs and the contestant share its cores."
    )


def accounting_checks(lineup: Lineup, found: Measurements) -> list[str]:
    """Did each gateway really account? Its rows against the successful requests the clients saw."""
    lines = []
    for contestant in lineup.running():
        if not contestant.is_gateway:
            continue
        try:
            counts = databases.accounting_counts(contestant.database_url, contestant.key_id)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is reported, not fatal
            lines.append(f"{contestant.label}: could not count rows: {exc}")
            continue
        lines.append(
            f"{contestant.label}: {found.sent_ok.get(contestant.name, 0):,} successful requests seen by the clients "
            f"-> {counts['usage_rows']:,} usage rows ({counts['usage_ok']:,} with status 200), "
            f"{counts['charges']:,} ledger charges, {counts['open_reservations']} open reservations")
    return lines


def versions(tools: install.Tools) -> dict[str, str]:
    found = {}
    if tools.wrk:
        found["wrk"] = machine.tool_version([tools.wrk, "-v"]).split(" [")[0]
    if tools.nginx:
        found["nginx"] = machine.tool_version([tools.nginx, "-v"]).split(": ")[-1]
    if tools.litellm:
        found["LiteLLM"] = machine.tool_version([str(install.LITELLM_VENV / "bin" / "python"), "-c",
                                                 "import importlib.metadata as m; print(m.version('litellm'))"])
    found["PostgreSQL"] = machine.tool_version(["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres",
                                                "-d", "test", "-c", "SHOW server_version"])
    return found


def progress(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Set up, run every scenario on every contestant, print the report and write it to --output."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` cleans up on kill too
    started, clock = datetime.datetime.now().astimezone(), time.monotonic()
    tools, log = install.setup(install=not args.no_setup, with_litellm=not args.no_litellm)
    for line in log:
        progress(line)
    if args.setup_only:
        for name in ("wrk", "nginx", "litellm"):
            progress(f"{name}: {getattr(tools, name) or 'missing, ' + tools.missing[name]}")
        return 0 if not tools.missing else 1
    raise_file_limit(args.slow_streams * 2 + 1024)
    info = report.RunInfo(
        command=shlex.join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        started=started.strftime("%Y-%m-%d %H:%M %Z"), setup=setup_line(args), slow_streams=args.slow_streams,
        rounds=args.rounds, machine=machine.describe(versions(tools)),
    )
    if tools.wrk is None:
        info.notes.append(f"No JSON load: {tools.missing['wrk']}.")
    plan = Plan(args.rounds, args.wrk_seconds, args.stream_seconds, args.warmup_seconds, args.slow_streams,
                args.slow_timeout)
    lineup = Lineup(args.workers, args.threads)
    busy: set[str] = set()
    try:
        progress("starting the stubs and the contestants")
        lineup.start(tools, postgres=not args.no_postgres, litellm=not args.no_litellm)
        busy.update(machine.busy_processes(lineup.own_groups()))
        runner = Runner(lineup.running(), plan, tools.wrk, lineup.workdir, progress)
        found = runner.run()
        busy.update(machine.busy_processes(lineup.own_groups()))
        lineup.stop_services()  # the rows are counted once every worker has finished and flushed
        info.checks = accounting_checks(lineup, found)
    finally:
        lineup.close()
    info.notes += lineup.notes
    info.machine.append(f"load average at end (1/5/15 min): {machine.load_average()}")
    if busy:
        info.notes.append(machine.busy_note(busy))
    info.duration_s = time.monotonic() - clock
    text = report.render(found, lineup.contestants, info)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
