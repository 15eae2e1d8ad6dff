"""What the machine was doing during a run: cores, load, and CPU-heavy processes not ours."""

from __future__ import annotations

import os
import platform
import subprocess

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
        if len(parts) != 4 or int(parts[0]) == os.getpid() or int(parts[1]) in own_groups:
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


def describe() -> list[str]:
    """Lines for the report's Machine section."""
    return [
        f"{os.cpu_count()} CPU cores, {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"load average at start (1/5/15 min): {load_average()}",
    ]
