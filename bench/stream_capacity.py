"""One key, N slow streams at once, on `gateway serve` with the default stream limits: how many got 429.

    python -m bench.stream_capacity [--streams 1000] [--workers 4] [--threads 256] [--other-tenant]
                                    [--max-streams N]

With `--other-tenant` a second account has a key too (the tenant share applies); `--max-streams`
gives the load key a stream limit of its own (which replaces the share).

The upstream is the bench's stub (its slow model waits 1 s before its first byte); the database
is a SQLite file in a temporary folder; everything runs on loopback and stops at the end.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import processes, streams
from bench.upstream import SLOW_MODEL


def config_without_stream_limits(database_url: str, port: int) -> str:
    """The bench's gateway config with its stream limits left at the defaults (the bench lifts them)."""
    text = processes.gateway_config(database_url, port)
    return "\n".join(line for line in text.splitlines() if not line.startswith("max_streams_per_")) + "\n"


def load_key(config: Path, other_tenant: bool, max_streams: int | None) -> str:
    """The load key's secret (and another account's key when asked)."""
    if other_tenant:
        processes.create_key(config, "another tenant")
    key_id, secret = processes.create_key(config, "one app", processes.CREDITS)
    if max_streams is not None:
        command = [sys.executable, "-m", "gateway.cli", "keys", "update", str(key_id), "--max-streams",
                   str(max_streams), "--config", str(config)]
        subprocess.run(command, cwd=processes.ROOT, env=processes.clean_env(), check=True, capture_output=True)
    return secret


def run(count: int, workers: int, threads: int, timeout_s: float, other_tenant: bool = False,
        max_streams: int | None = None) -> dict[str, object]:
    """Start the stub and the gateway, send `count` slow streams at once with one key, and tally them."""
    upstream, port = processes.start_upstream()
    service = None
    try:
        with tempfile.TemporaryDirectory() as folder:
            workdir = Path(folder)
            config = workdir / "gateway.toml"
            config.write_text(config_without_stream_limits(f"sqlite:///{workdir / 'gateway.db'}", port))
            secret = load_key(config, other_tenant, max_streams)
            service = processes.gateway_service("gateway", config, workdir, workers, threads).start()
            service.wait_ready()
            body = {"model": SLOW_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64,
                    "stream": True}
            request = streams.stream_request(service.port, "/v1/chat/completions", body,
                                             {"Authorization": f"Bearer {secret}"}, b"data: [DONE]")
            samples, wall = streams.concurrent(request, count, timeout_s)
    finally:
        if service is not None:
            service.stop()
        processes.stop_process(upstream)
    ttfbs = sorted(sample.ttfb_s for sample in samples if sample.ttfb_s is not None)
    return {
        "streams": count, "workers": workers, "threads": threads, "other_tenant": other_tenant,
        "max_streams": max_streams, "completed": sum(s.ok for s in samples),
        "outcomes": dict(collections.Counter(sample.error or "ok" for sample in samples)),
        "ttfb_p50_s": round(statistics.median(ttfbs), 3) if ttfbs else None,
        "ttfb_max_s": round(ttfbs[-1], 3) if ttfbs else None, "wall_s": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run once, print the tally."""
    parser = argparse.ArgumentParser(prog="python -m bench.stream_capacity")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=256)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--other-tenant", action="store_true")
    parser.add_argument("--max-streams", type=int)
    args = parser.parse_args(argv)
    print(run(args.streams, args.workers, args.threads, args.timeout_s, args.other_tenant, args.max_streams))
    return 0


if __name__ == "__main__":
    sys.exit(main())
