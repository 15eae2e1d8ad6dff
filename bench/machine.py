"""What the machine was doing during a run: cores, load, and CPU-heavy processes not ours."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

BUSY_PERCENT = 20.0


def load_average() -> str:
    """The 1/5/15-minute load averages."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def busy_processes(own_groups: set[int]) -> set[str]:
    """Commands of other processes using more than BUSY_PERCENT of a core (ps: CPU time / age).

    `own_groups` are the process groups of the bench's children (each runs in its own session);
    the bench process itself is left out too.
    """
    try:
        listing = subprocess.run(["ps", "-eo", "pid=,pgid=,pcpu=,args="], capture_output=True, text=True,
                                 timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    busy = set()
    for line in listing.splitlines():
        parts = line.split(None, 3)
        if len(parts) != 4 or int(parts[0]) == os.getpid() or int(parts[1]) in own_groups or parts[3].startswith("ps "):
            continue
        if float(parts[2]) > BUSY_PERCENT:
            busy.add(short_command(parts[3]))
    return busy


def busy_note(busy: set[str], shown: int = 8) -> str:
    """One line naming (some of) the other busy commands."""
    names = sorted(busy)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (f"Machine busy: other processes used over {BUSY_PERCENT:.0f}% of a core during the run: "
            + ", ".join(f"`{name}`" for name in names[:shown]) + more
            + ". Absolute times are inflated and noisier than on an idle machine; the interleaving "
            "spreads that noise over all scenarios, so compare ratios rather than milliseconds.")


def short_command(args: str, words: int = 3) -> str:
    """The first words of a command line, programs without their directories: `python -m pytest -q`."""
    return " ".join(word.rsplit("/", 1)[-1] if index == 0 else word
                    for index, word in enumerate(args.split()[:words]))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    """Total memory in GiB from /proc/meminfo."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def tool_version(command: list[str]) -> str:
    """The first line a tool prints about its version, or `not found`."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return "not found"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "not found"


def package_version(name: str) -> str:
    """An installed Python package's version in this environment."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe(versions: dict[str, str]) -> list[str]:
    """Lines for the report's Machine section; `versions` names the tools the run used."""
    return [
        f"{cpu_model()}, {os.cpu_count()} cores, {memory_gib():.0f} GiB; {platform.system()} {platform.release()}",
        f"Python {platform.python_version()}, gunicorn {package_version('gunicorn')}, "
        f"Flask {package_version('flask')}, requests {package_version('requests')}, "
        f"peewee {package_version('peewee')}",
        "; ".join(f"{name}: {version}" for name, version in versions.items()),
        f"load average at start (1/5/15 min): {load_average()}",
    ]
