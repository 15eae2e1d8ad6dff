"""The bench's child processes: upstream stubs and the contestants, each in its own session, always stopped.

Every child leads its own process group and is stopped by group (SIGTERM, then SIGKILL).
The Python stub exits by itself when its stdin (held by the bench) closes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.upstream import SLOW_MODEL, completion_body
from tests.live_gateway import children
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
FREE_MODEL = "bench-free"
PRICED_MODEL = "bench-chat"    # JSON chat: priced, on the JSON upstream (nginx when installed)
STREAM_MODEL = "bench-stream"  # streams: priced, on the Python stub
SLOW_STREAM_MODEL = SLOW_MODEL  # waits 1 s, then streams: priced, on the Python stub
PRICES = {"input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0}
CREDITS = "1000000"            # far more than any run spends
HIGH_LIMITS = {"rpm": 100_000_000, "tpm": 2_000_000_000, "streams": 1_000_000}  # never a refusal; fits a 32-bit column


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without GATEWAY_* variables (only the bench's config applies), plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    return {**env, **extra}


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


@dataclass
class Service:
    """One long-running child: its command, port, log, and how to tell it is ready."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=clean_env)
    ready_path: str = "/healthz"
    process: subprocess.Popen | None = None

    def start(self) -> Service:
        """Start the child (not waiting for it)."""
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until GET ready_path answers below 500; raises with the log's tail otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=2).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        tail = self.log_path.read_text(errors="replace")[-1500:]
        state = "exited" if self.process.poll() is not None else f"not ready after {timeout_s:.0f} s"
        raise RuntimeError(f"{self.name} {state}; log tail:\n{tail}")

    def stop(self) -> None:
        """Stop the child and its process group (idempotent)."""
        if self.process is not None:
            stop_process(self.process)

    def worker_pids(self) -> list[int]:
        """The serving processes: the children of the master, else the master itself."""
        if self.process is None or self.process.poll() is not None:
            return []
        workers = [pid for pid in children(self.process.pid) if not _is_helper(pid)]
        return workers or [self.process.pid]


def _is_helper(pid: int) -> bool:
    """multiprocessing's resource tracker is no worker."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident set (VmHWM) in MiB, None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --- the JSON upstream: nginx answering one canned chat.completion -------------------------------

NGINX_CONF = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  client_body_temp_path {dir}/nginx-body;
  proxy_temp_path {dir}/nginx-proxy;
  fastcgi_temp_path {dir}/nginx-fastcgi;
  uwsgi_temp_path {dir}/nginx-uwsgi;
  scgi_temp_path {dir}/nginx-scgi;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /healthz {{ return 200 "ok"; }}
    location / {{
      default_type application/json;
      return 200 '{body}';
    }}
  }}
}}
"""


def nginx_service(nginx: str, workdir: Path) -> Service:
    """nginx (one worker) answering every request with the stub's chat.completion JSON."""
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port, body=completion_body().decode()))
    return Service("nginx stub", [nginx, "-e", str(workdir / "nginx-error.log"), "-p", str(workdir), "-c", str(conf)],
                   port, workdir / "nginx.log")


# --- the floor: bench/floor.py under gunicorn gthread ----------------------------------------------

def floor_service(workdir: Path, json_url: str, stream_url: str, workers: int, threads: int) -> Service:
    """The bare Flask + requests relay with the gateway's worker and thread counts."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", str(workers),
               "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "--keep-alive", "5",
               "--timeout", "120", "--backlog", "2048", "--log-level", "warning", "bench.floor:app"]
    env = clean_env(BENCH_FLOOR_JSON_URL=json_url, BENCH_FLOOR_STREAM_URL=stream_url)
    return Service("floor", command, port, workdir / "floor.log", env=env)


# --- the gateway ---------------------------------------------------------------------------------

def gateway_config(database_url: str, json_port: int, stream_port: int | None = None) -> str:
    """TOML: a free model and priced models on the JSON upstream and on the stream upstream."""
    stream_port = stream_port or json_port
    lines = [
        f'[database]\nurl = "{database_url}"',
        # one load key stands for many clients: no per-key stream cap either
        f"[limits]\nrpm = {HIGH_LIMITS['rpm']}\ntpm = {HIGH_LIMITS['tpm']}\n"
        f"max_streams_per_key = {HIGH_LIMITS['streams']}\nmax_streams_per_account = {HIGH_LIMITS['streams']}",
        f'[providers.json]\nbase_url = "http://127.0.0.1:{json_port}/v1"\ntimeout_s = 60\nconnect_timeout_s = 5',
        f'[providers.stream]\nbase_url = "http://127.0.0.1:{stream_port}/v1"\ntimeout_s = 60\nconnect_timeout_s = 5',
        f'[models."{FREE_MODEL}"]\nprovider = "json"\nupstream_model = "{FREE_MODEL}"',
    ]
    prices = "\n".join(f"{name} = {value}" for name, value in PRICES.items())
    for model, provider in ((PRICED_MODEL, "json"), (STREAM_MODEL, "stream"), (SLOW_STREAM_MODEL, "stream")):
        lines.append(f'[models."{model}"]\nprovider = "{provider}"\nupstream_model = "{model}"\n{prices}\n'
                     "max_output_tokens = 64")
    return "\n".join(lines) + "\n"


def create_key(config: Path, name: str, credits: str | None = None) -> tuple[int, str]:
    """`gateway keys create` (which also migrates the database) with high limits; returns (key id, secret)."""
    command = [sys.executable, "-m", "gateway.cli", "keys", "create", "--name", name, "--json",
               "--config", str(config), "--rpm", str(HIGH_LIMITS["rpm"]), "--tpm", str(HIGH_LIMITS["tpm"])]
    if credits is not None:
        command += ["--credits", credits]
    done = subprocess.run(command, cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=START_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"gateway keys create failed: {done.stderr.strip()[-800:]}")
    created = json.loads(done.stdout)
    return created["id"], created["key"]


def gateway_service(label: str, config: Path, workdir: Path, workers: int, threads: int) -> Service:
    """The real `gateway serve` (gunicorn gthread) on that config."""
    port = free_port()
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--threads", str(threads)]
    return Service(label, command, port, workdir / f"{label}.log")


# --- LiteLLM's proxy -------------------------------------------------------------------------------

LITELLM_KEY = "sk-bench-litellm-master"


def litellm_config(json_port: int, stream_port: int) -> str:
    """LiteLLM proxy YAML (JSON is YAML): the stubs as `openai/` models, priced, no database."""
    costs = {"input_cost_per_token": PRICES["input_price_per_mtok"] / 1e6,
             "output_cost_per_token": PRICES["output_price_per_mtok"] / 1e6}
    models = [
        {"model_name": model, "litellm_params": {"model": f"openai/{model}", "api_key": "sk-bench-upstream",
                                                 "api_base": f"http://127.0.0.1:{port}/v1", **costs}}
        for model, port in ((PRICED_MODEL, json_port), (STREAM_MODEL, stream_port), (SLOW_STREAM_MODEL, stream_port))
    ]
    config = {
        "model_list": models,
        "litellm_settings": {"drop_params": True, "request_timeout": 60, "set_verbose": False,
                             "telemetry": False},
        "general_settings": {"master_key": LITELLM_KEY},
    }
    return json.dumps(config, indent=2)


def litellm_service(binary: str, workdir: Path, json_port: int, stream_port: int, workers: int) -> Service:
    """`litellm --config F --num_workers N` from bench/.venv-litellm, offline (local cost map)."""
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(json_port, stream_port))
    command = [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
               "--num_workers", str(workers), "--telemetry", "False"]
    env = clean_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION",
                    DISABLE_ADMIN_UI="True", NO_DOCS="True", NO_REDOC="True")
    for name in ("DATABASE_URL", "REDIS_URL", "REDIS_HOST", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(name, None)
    return Service("litellm", command, port, workdir / "litellm.log", env=env, ready_path="/health/liveliness")
