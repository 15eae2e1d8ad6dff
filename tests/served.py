"""`gateway serve` in a child process (real gunicorn workers) for the multi-process tests.

Like `served_gateway` of tests/served_gateway.py, but for a config given as TOML text and extra
environment; the process helpers are that module's.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.served_gateway import children, free_port

__all__ = ["Served", "free_port", "gateway_serve"]
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30


@dataclass
class Served:
    """A running `gateway serve`: its base URL and the gunicorn master's process."""

    base_url: str
    master: subprocess.Popen

    def worker_pids(self) -> list[int]:
        """The master's live children (gunicorn workers)."""
        return children(self.master.pid)


@contextlib.contextmanager
def gateway_serve(config_text: str, tmp_path: Path, workers: int = 3, threads: int = 8,
                  env: dict[str, str] | None = None) -> Iterator[Served]:
    """Run `gateway serve` on a free port with this config until the block ends."""
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(config_text)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    master = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port),
         "--workers", str(workers), "--threads", str(threads)],
        env={**clean, **(env or {})}, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    served = Served(f"http://127.0.0.1:{port}", master)
    try:
        wait_until_up(served, workers)
        yield served
    finally:
        master.terminate()
        master.wait(30)


def wait_until_up(served: Served, workers: int) -> None:
    """Wait for /healthz and for every worker to have been forked."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{served.base_url}/healthz", timeout=1).ok and len(served.worker_pids()) >= workers:
                return
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            pass
        time.sleep(0.1)
    raise TimeoutError("gateway serve did not start")
