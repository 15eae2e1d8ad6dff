"""prometheus_client's multiprocess directory under gunicorn: chosen, emptied, compacted, read.

gunicorn's master owns the directory through three hooks (set by `gateway.server.gunicorn_options`,
so `gateway serve` and plain gunicorn with deploy/gunicorn.conf.py both have them):

- `on_starting`: a fresh master uses `$PROMETHEUS_MULTIPROC_DIR` (emptied of an earlier run's
  files) or, when it is unset, a new private temporary folder, which its workers inherit. A master
  started by a `USR2` binary upgrade keeps the old master's folder as it is: those workers still count.
- `child_exit`: a worker that ended (recycled by max_requests, replaced by a reload, killed) has its
  live gauges removed and its counters and histograms added into one archive file per type, so
  totals never go down and the folder does not grow with every recycled worker.
- `on_exit`: a private folder is removed, unless a new master (USR2) has taken it over.
- `pre_exec` (USR2): the new master is exec'd with the environment gunicorn started with, which
  lacks the folder `on_starting` chose; this puts it back, so the new workers add to the same totals.

Compaction and every scrape hold a lock on the folder (exclusive and shared), so a scrape never
sees a dead worker's counts twice or not at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE = ".lock"
PRIVATE_MARK = ".private"  # the folder was created by the master and is removed with it
PRIVATE_PREFIX = "gateway-metrics-"  # then the master's pid
ARCHIVED_KINDS = ("counter", "histogram")


def directory() -> str | None:
    """The multiprocess directory this process writes to, if any."""
    return os.environ.get(ENVIRONMENT) or None


@contextlib.contextmanager
def locked(path: str, exclusive: bool) -> Iterator[None]:
    """Hold the folder's lock: shared to read every file, exclusive to change which files exist."""
    with open(os.path.join(path, LOCK_FILE), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def collect(path: str) -> bytes:
    """The exposition text summed over every worker's files, live and dead."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)
    with locked(path, exclusive=False):
        return generate_latest(registry)


def prepare(path: str | None) -> str:
    """A fresh master's folder: `path` emptied of metric files, or a new private one; returns it."""
    if path is None:
        remove_abandoned_folders()
        path = tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-")
        Path(path, PRIVATE_MARK).touch()
    os.makedirs(path, exist_ok=True)
    with locked(path, exclusive=True):
        for old in Path(path).glob("*.db"):
            old.unlink()
    return path


def remove_abandoned_folders() -> None:
    """Private folders of masters that died without their `on_exit` (killed): nobody reads them any more."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PRIVATE_PREFIX}*-*"):
        master = folder.name[len(PRIVATE_PREFIX):].split("-", 1)[0]
        if master.isdigit() and (folder / PRIVATE_MARK).exists() and not Path(f"/proc/{master}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def archive_worker(path: str, pid: int) -> None:
    """Fold a dead worker's files into the archives and remove them (its live gauges just go)."""
    with locked(path, exclusive=True):
        mark_process_dead(pid, path)
        for kind in ARCHIVED_KINDS:
            dead = Path(path, f"{kind}_{pid}.db")
            if dead.exists():
                add_into(Path(path, f"{kind}_archive.db"), dead)
                dead.unlink()


def add_into(archive: Path, dead: Path) -> None:
    """Add every value of `dead` to the same key of `archive` (counters and histogram buckets add up)."""
    target = MmapedDict(str(archive))
    try:
        for key, value, _timestamp, _position in MmapedDict.read_all_values_from_file(str(dead)):
            total, _ = target.read_value(key)
            target.write_value(key, total + value, 0.0)
    finally:
        target.close()


# -- gunicorn hooks (master process) ---------------------------------------------------------


def on_starting(arbiter: Any) -> None:
    """Choose and prepare the folder before any worker is forked (workers inherit the variable)."""
    if arbiter.master_pid:  # started by USR2: the old master's workers still write there
        return
    os.environ[ENVIRONMENT] = prepare(directory())


def pre_exec(arbiter: Any) -> None:
    """Hand the folder to the new master of a USR2 upgrade (in the forked child, just before exec)."""
    path = directory()
    if path:
        arbiter.cfg.env_orig[ENVIRONMENT] = path


def child_exit(arbiter: Any, worker: Any) -> None:
    """Archive an ended worker's counts."""
    path = directory()
    if path and os.path.isdir(path):
        archive_worker(path, worker.pid)


def on_exit(arbiter: Any) -> None:
    """Remove a private folder, unless a USR2 master took it over (or this one is that new master, unpromoted)."""
    path = directory()
    if not path or not Path(path, PRIVATE_MARK).exists():
        return
    if getattr(arbiter, "reexec_pid", 0) or getattr(arbiter, "master_pid", 0):
        return
    shutil.rmtree(path, ignore_errors=True)
