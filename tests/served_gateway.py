"""`gateway serve` in a subprocess on loopback, and the probes and hostile clients of the load tests.

Everything is bounded: each loop has a deadline, each socket a timeout, and the server is
killed whatever the test did.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

START_TIMEOUT_S = 20.0
PROBE_TIMEOUT_S = 5.0


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


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class ServedGateway:
    """A running `gateway serve`; `port` is its loopback port."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.upgraded: list[int] = []  # masters a USR2 upgrade started (not children of this process)

    def workers(self) -> list[int]:
        """The gunicorn worker pids (children of the serving process)."""
        return children(self.process.pid)

    def wait_ready(self, workers: int) -> None:
        """Until /healthz answers and every worker is up, or fail with the server's log."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            if len(self.workers()) == workers and request(self.port, "GET", "/healthz", timeout=1.0) == 200:
                return
            time.sleep(0.1)
        raise AssertionError("gateway serve did not start:\n" + self.log.read_text())

    def binary_upgrade(self, pidfile: Path, workers: int) -> int:
        """Send USR2; once the new master (its pid in `<pidfile>.2`) has its workers accepting, return its pid."""
        self.process.send_signal(signal.SIGUSR2)
        fresh = Path(f"{pidfile}.2")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            text = fresh.read_text().strip() if fresh.exists() else ""
            if text.isdigit() and int(text) not in self.upgraded:
                self.upgraded.append(int(text))
            started = children(self.upgraded[-1]) if self.upgraded else []
            if len(started) == workers and all(accepting(pid, self.port) for pid in started):
                return self.upgraded[-1]
            time.sleep(0.1)
        raise AssertionError("no new master after USR2:\n" + self.log.read_text())

    def stop(self) -> None:
        """SIGKILL every master and its workers: the tests leave hostile connections open, and a
        graceful stop would wait for them (nothing here tests shutting down)."""
        masters = [pid for pid in self.upgraded if Path(f"/proc/{pid}").exists()]
        masters += [self.process.pid] if self.process.poll() is None else []
        for pid in [worker for master in masters for worker in children(master)] + masters:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)


@contextmanager
def served_gateway(folder: Path, tables: dict[str, Any]) -> Iterator[ServedGateway]:
    """Run `gateway serve --config` with these tables (a free port added) until the block ends."""
    port = free_port()
    tables = {**tables, "server": {**tables.get("server", {}), "host": "127.0.0.1", "port": port}}
    config = folder / "served.toml"
    config.write_text(toml_text(tables))
    log = folder / "served.log"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
            stdout=output, stderr=subprocess.STDOUT, env=environment,
        )
    server = ServedGateway(process, port, log)
    try:
        server.wait_ready(tables["server"].get("workers", 2))
        yield server
    finally:
        server.stop()


def request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
    timeout: float = PROBE_TIMEOUT_S, source: str | None = None,
) -> int | None:
    """One request on a fresh connection; its status, or None if it failed or timed out."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        data = None if body is None else json.dumps(body).encode()
        sent = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


class Probes:
    """Threads that each repeat one request until stopped; records (status, seconds) per attempt."""

    def __init__(self, probes: list[Callable[[], int | None]], pause_s: float) -> None:
        self.results: list[tuple[int | None, float]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(probe, pause_s), daemon=True) for probe in probes]

    def _loop(self, probe: Callable[[], int | None], pause_s: float) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            status = probe()
            with self._lock:
                self.results.append((status, time.monotonic() - started))
            self._stop.wait(pause_s)

    def run_for(self, seconds: float) -> list[tuple[int | None, float]]:
        """Probe for `seconds`, then wait for the last attempts (each bounded by its timeout)."""
        for thread in self._threads:
            thread.start()
        time.sleep(seconds)
        self._stop.set()
        for thread in self._threads:
            thread.join(PROBE_TIMEOUT_S + 1)
        return self.results


def answered_ratio(results: list[tuple[int | None, float]]) -> float:
    """Share of probes answered 200 within the probe timeout."""
    return sum(1 for status, _ in results if status == 200) / max(len(results), 1)


def percentile(results: list[tuple[int | None, float]], share: float) -> float:
    """Latency at this share of all probes (a failed probe counts as infinitely slow)."""
    latencies = sorted(seconds if status == 200 else float("inf") for status, seconds in results)
    return latencies[min(int(share * len(latencies)), len(latencies) - 1)]


SLOW_HEADER = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Pad: "
SLOW_BODY = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100000\r\n\r\n")
# A whole request whose connection the server closes, then more bytes: the close has to linger.
CLOSE_THEN_TRICKLE = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


class SlowSenders:
    """`count` sockets that send `prefix`, then one byte every `interval_s`; a dropped one reconnects."""

    def __init__(self, port: int, prefix: bytes, count: int, interval_s: float = 2.0) -> None:
        self.port, self.prefix, self.count, self.interval_s = port, prefix, count, interval_s
        self.connects = 0
        self.dropped = 0
        self._sockets: list[socket.socket | None] = [None] * count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self._sockets:
            if sock is not None:
                sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for index in range(self.count):
                self._sockets[index] = self._trickle(self._sockets[index])
            self._stop.wait(self.interval_s)

    def _trickle(self, sock: socket.socket | None) -> socket.socket | None:
        """One more byte on the socket, or a fresh connection with the prefix if it was dropped."""
        try:
            if sock is not None and not answered(sock):
                sock.send(b"x")
                return sock
            if sock is not None:
                raise ConnectionAbortedError  # the server answered (408) or closed: reconnect
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            sock.sendall(self.prefix)
            self.connects += 1
            return sock
        except OSError:
            if sock is not None:
                sock.close()
                self.dropped += 1
            return None


def answered(sock: socket.socket) -> bool:
    """Whether the server sent something or closed (a slow sender expects nothing back)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True
