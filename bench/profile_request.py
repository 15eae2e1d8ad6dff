"""Profile one scenario in-process with cProfile: `python bench/profile_request.py [--database D] ...`.

The app runs in this process (Flask's test client, no gunicorn) against the fake upstream in its
own process, so the numbers are the gateway's own per-request work: views, auth, rate limiting,
accounting and the database driver. Prints wall and CPU time per request without the profiler,
then the top functions by cumulative and by own time under cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Replace bench/ (the script's folder) with the repo root: `python bench/profile_request.py` from anywhere.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import databases, processes  # noqa: E402 - needs the sys.path line above

WARMUP = 20


def build_app(database_url: str, upstream_port: int):
    """The gateway app on `database_url` with the bench's models, plus a fresh key per model."""
    import tomllib

    from gateway import create_app, db
    from gateway.accounting import credits
    from gateway.accounting.keys import create_key
    from gateway.config import build_settings

    settings = build_settings(tomllib.loads(processes.gateway_config(database_url, upstream_port)))
    app = create_app(settings)
    db.upgrade()
    with db.database.connection_context(), db.database.atomic():
        _, free_secret = create_key("bench-free")
        priced_key, priced_secret = create_key("bench-priced")
        credits.grant_credits(priced_key.account_id, credits.to_micro(1000))
    return app, {processes.FREE_MODEL: free_secret, processes.PRICED_MODEL: priced_secret}


def request_sender(app, model: str, secret: str, stream: bool) -> Callable[[], None]:
    """A function that sends one chat completion through the app and checks it succeeded."""
    client = app.test_client()
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16,
            "stream": stream}

    def send() -> None:
        response = client.post("/v1/chat/completions", json=body, headers={"X-API-Key": secret})
        response.get_data()
        if response.status_code != 200:
            raise RuntimeError(f"gateway answered {response.status_code}: {response.get_data()[:300]!r}")

    return send


def time_requests(send: Callable[[], None], count: int) -> str:
    """Wall and CPU time per request without the profiler (the upstream is another process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        send()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return (f"{count} requests unprofiled: {wall / count * 1000:.2f} ms wall, "
            f"{cpu / count * 1000:.2f} ms CPU of this process per request")


def profile_requests(send: Callable[[], None], count: int) -> cProfile.Profile:
    """Profile `count` requests (wall clock, so database waits show)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        send()
    profiler.disable()
    return profiler


def report(profiler: cProfile.Profile, count: int, top: int) -> str:
    """Top functions by cumulative and own time, per request."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"{count} requests profiled: {stats.total_tt / count * 1000:.2f} ms per request under cProfile\n")
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--model", choices=["free", "priced"], default="priced")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    server = databases.postgres_server_url() if args.database == "postgres" else None
    if args.database == "postgres" and server is None:
        raise SystemExit("bench: no PostgreSQL server")
    upstream, upstream_port = processes.start_upstream()
    app = None
    try:
        url = databases.create_postgres_database(server) if server else databases.sqlite_url(workdir)
        app, secrets = build_app(url, upstream_port)
        model = processes.FREE_MODEL if args.model == "free" else processes.PRICED_MODEL
        send = request_sender(app, model, secrets[model], args.stream)
        for _ in range(WARMUP):
            send()
        print(time_requests(send, args.requests))
        print(report(profile_requests(send, args.requests), args.requests, args.top))
    finally:
        if app is not None:
            from gateway import db, lifecycle

            lifecycle.close(app)
            db.database.close()
        if server:
            databases.drop_postgres_database(server)
        processes.stop_process(upstream)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
