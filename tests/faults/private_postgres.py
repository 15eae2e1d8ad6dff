"""A private PostgreSQL cluster for one test: initdb into a temporary folder, on a free loopback port.

It can be stopped and started again at will (the fault under test). PostgreSQL refuses to run as
root, so as root the binaries run as the `postgres` OS user, in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.ports import free_port

COMMAND_TIMEOUT_S = 60


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian layout), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(Path(path).parts[-3]))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """One cluster: `url` reaches its `postgres` database; `stop()` and `start()` it as often as needed."""

    def __init__(self, bin_dir: Path, folder: Path) -> None:
        self.bin_dir, self.folder, self.port = bin_dir, folder, free_port()
        self.data = folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S, cwd=self.folder)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


def has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres | None]:
    """A started private cluster (None when PostgreSQL is not installed); removed afterwards."""
    bin_dir = binaries()
    as_root = os.geteuid() == 0
    if bin_dir is None or (as_root and not (shutil.which("runuser") and has_user("postgres"))):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="gateway-faults-pg-"))
    if as_root:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    cluster = PrivatePostgres(bin_dir, folder)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
