"""The bench's child processes: the fake upstream and real gunicorn gateways, always cleaned up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
FREE_MODEL = "bench-free"
PRICED_MODEL = "bench-priced"


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict[str, str]:
    """This environment without GATEWAY_* variables, so only the bench's config applies."""
    return {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM the process group, wait, then SIGKILL it (idempotent)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_S)
        except ProcessLookupError:
            pass
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def start_upstream() -> tuple[subprocess.Popen, int]:
    """Start `python -m bench.upstream` in its own process group; returns it and its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--port", "0"], cwd=ROOT, env=clean_env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    line = process.stdout.readline()  # "ready <port>"; empty if it died
    if not line.startswith("ready "):
        stop_process(process)
        raise RuntimeError("the bench upstream did not start")
    return process, int(line.split()[1])


def gateway_config(database_url: str, upstream_port: int) -> str:
    """TOML for a gateway with one free and one priced model on the fake upstream."""
    return (
        f'[database]\nurl = "{database_url}"\n'
        "[limits]\nrpm = 100000000\ntpm = 100000000000\n"  # the bench measures cost, not refusals
        f'[providers.bench]\nbase_url = "http://127.0.0.1:{upstream_port}/v1"\n'
        "timeout_s = 30\nconnect_timeout_s = 5\n"
        f'[models."{FREE_MODEL}"]\nprovider = "bench"\nupstream_model = "bench-upstream"\n'
        f'[models."{PRICED_MODEL}"]\nprovider = "bench"\nupstream_model = "bench-upstream"\n'
        "input_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\nmax_output_tokens = 64\n"
    )


def create_key(config: Path, name: str, credits: str | None = None) -> tuple[int, str]:
    """`gateway keys create` (which also migrates the database); returns (key id, secret)."""
    command = [sys.executable, "-m", "gateway.cli", "keys", "create", "--name", name, "--json",
               "--config", str(config)]
    if credits is not None:
        command += ["--credits", credits]
    done = subprocess.run(command, cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=START_TIMEOUT_S, check=True)
    created = json.loads(done.stdout)
    return created["id"], created["key"]


@dataclass
class Gateway:
    """One `gateway serve` under gunicorn, logging to a file."""

    name: str
    config: Path
    log_path: Path
    port: int = 0
    process: subprocess.Popen | None = None

    def start(self, workers: int, threads: int) -> Gateway:
        """Start gunicorn and wait until /healthz answers."""
        self.port = free_port()
        command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config),
                   "--port", str(self.port), "--workers", str(workers), "--threads", str(threads)]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        tail = self.log_path.read_text()[-2000:]
        raise RuntimeError(f"gateway {self.name} did not become ready; log tail:\n{tail}")

    def stop(self) -> None:
        """Stop gunicorn and its workers (idempotent)."""
        if self.process is not None:
            stop_process(self.process)
