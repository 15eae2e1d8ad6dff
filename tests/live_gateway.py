"""The tests' one launcher of a live `gateway serve` (real gunicorn workers) in a child process.

The config is TOML text or a dict of tables. The server runs in its folder, on a free loopback
port, and everything it prints (its logs, the access log on stderr, the first key on stdout) goes
to `<folder>/gateway.log`, never into pytest's output; when a test fails, tests/conftest.py shows
the logs of the gateways it used. Every wait has a deadline, and the server is stopped (killed
past its bound) whatever the test did.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.config import ServerSettings
from tests.ports import free_port

__all__ = ["LiveGateway", "accepting", "children", "environment", "free_port", "live_gateway", "rss_kib", "start_gateway",
           "toml_text"]
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 8_000  # of each log shown with a failing test
LAUNCHED: list[LiveGateway] = []  # every gateway this session started, in order (for failure reports)


def toml_value(value: Any) -> str:
    """A scalar or list as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def toml_text(tables: dict[str, Any], prefix: str = "") -> str:
    """Nested dicts as TOML tables (keys quoted, so ids with dots stay whole)."""
    scalars = {key: value for key, value in tables.items() if not isinstance(value, dict)}
    text = f"[{prefix}]\n" if prefix and scalars else ""
    text += "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in scalars.items())
    for key, value in tables.items():
        if isinstance(value, dict):
            text += toml_text(value, f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key))
    return text


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def listening_inodes(port: int) -> set[str]:
    """Socket inodes of the IPv4 sockets listening on this loopback port (/proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
            found.add(fields[9])
    return found


def accepting(pid: int, port: int) -> bool:
    """Whether the process polls its listening socket on `port`: a gunicorn worker told to stop
    takes it out of its epoll set before it finishes the requests in flight."""
    sockets = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    try:
        links = {fd.name: os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        listeners = {fd for fd, target in links.items() if target in sockets}
        polled = "".join(Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                         for fd, target in links.items() if target == "anon_inode:[eventpoll]")
    except OSError:  # the process or one of its descriptors went away
        return False
    return any(f"tfd: {fd:>8} " in polled for fd in listeners)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def healthy(port: int) -> bool:
    """Whether /healthz answers 200 on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:  # not listening yet, or too busy starting to answer
        return False
    finally:
        connection.close()


class LiveGateway:
    """A running `gateway serve`: its port, folder (config, log) and gunicorn master."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, folder: Path, graceful: bool,
                 log_offset: int = 0) -> None:
        self.process = process
        self.port = port
        self.folder = folder
        self.graceful = graceful  # SIGTERM and wait on stop; else SIGKILL at once
        self.log_offset = log_offset  # where this run's output starts in a log an earlier run wrote to
        self.upgraded: list[int] = []  # masters a USR2 upgrade started (not children of this process)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        """The config file it was started with (for `gateway` commands on the same database)."""
        return self.folder / "gateway.toml"

    @property
    def log(self) -> Path:
        return self.folder / "gateway.log"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        """Everything this run of the server printed so far."""
        with self.log.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def workers(self) -> list[int]:
        """The gunicorn worker pids (children of the master)."""
        return children(self.process.pid)

    def wait_ready(self, workers: int) -> None:
        """Until /healthz answers and every worker is up; fails if the server exits or the bound passes."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.running, f"gateway serve exited with {self.process.returncode} (log: {self.log})"
            if len(self.workers()) >= workers and healthy(self.port):
                return
            time.sleep(0.1)
        raise AssertionError(f"gateway serve did not start within {START_TIMEOUT_S} s (log: {self.log})")

    def binary_upgrade(self, pidfile: Path, workers: int) -> int:
        """Send USR2; once the new master (its pid in `<pidfile>.2`) has its workers accepting, return its pid."""
        self.process.send_signal(signal.SIGUSR2)
        fresh = Path(f"{pidfile}.2")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.running, f"gateway serve exited (log: {self.log})"
            text = fresh.read_text().strip() if fresh.exists() else ""
            if text.isdigit() and int(text) not in self.upgraded:
                self.upgraded.append(int(text))
            started = children(self.upgraded[-1]) if self.upgraded else []
            if len(started) == workers and all(accepting(pid, self.port) for pid in started):
                return self.upgraded[-1]
            time.sleep(0.1)
        raise AssertionError(f"no new master after USR2 (log: {self.log})")

    def stop(self) -> None:
        """SIGTERM the master and wait for it (if graceful), then SIGKILL every master and worker left."""
        if self.graceful and self.running:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT_S)
        masters = [pid for pid in self.upgraded if Path(f"/proc/{pid}").exists()]
        masters += [self.process.pid] if self.running else []
        for pid in [worker for master in masters for worker in children(master)] + masters:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)


def expected_workers(workers: int | None, config: str | dict[str, Any] | None) -> int:
    """How many workers the server will fork: the flag, else the config's, else the default."""
    tables = tomllib.loads(config) if isinstance(config, str) else config or {}
    return workers or tables.get("server", {}).get("workers") or ServerSettings.model_fields["workers"].default


def environment(extra: dict[str, str] | None) -> dict[str, str]:
    """This environment without GATEWAY_* / VR_MCP_* settings, the repo importable, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("GATEWAY_", "VR_MCP_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **(extra or {})}


def start_gateway(
    folder: Path, config: str | dict[str, Any] | None, *, workers: int | None = None, threads: int | None = None,
    env: dict[str, str] | None = None, program: list[str] | None = None, graceful: bool = True,
) -> LiveGateway:
    """Start `gateway serve` in `folder` on a free port and wait until it is ready; the caller stops it.

    `config` is written to `<folder>/gateway.toml` and passed with --config (None: the folder's own
    ./config.toml, or the embedded defaults). `program` replaces `python -m gateway.cli`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [*(program or [sys.executable, "-m", "gateway.cli"]), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if config is not None:
        (folder / "gateway.toml").write_text(config if isinstance(config, str) else toml_text(config))
        argv += ["--config", str(folder / "gateway.toml")]
    argv += ["--workers", str(workers)] if workers else []
    argv += ["--threads", str(threads)] if threads else []
    with (folder / "gateway.log").open("ab") as log:
        offset = log.tell()  # an earlier run's output stays before it
        process = subprocess.Popen(argv, cwd=folder, env=environment(env), stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
    server = LiveGateway(process, port, folder, graceful, offset)
    LAUNCHED.append(server)
    try:
        server.wait_ready(expected_workers(workers, config))
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def live_gateway(folder: Path, config: str | dict[str, Any] | None, **options: Any) -> Iterator[LiveGateway]:
    """`start_gateway` until the block ends, then stop it (the same options)."""
    server = start_gateway(folder, config, **options)
    try:
        yield server
    finally:
        server.stop()


def failure_logs(first: int) -> list[tuple[str, str]]:
    """(title, log tail) of each gateway launched since LAUNCHED[first], or still running."""
    shown = [server for index, server in enumerate(LAUNCHED) if index >= first or server.running]
    return [(f"gateway serve log ({server.log})", server.log_text()[-LOG_TAIL_CHARS:]) for server in shown]
