"""JSON load with wrk: a Lua script sets the POST body and headers and prints one parseable result line."""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

RESULT_MARK = "BENCH-RESULT"
SCRIPT = """wrk.method = "POST"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{mark} %d %d %d %d %.1f %.1f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: successful requests per second and latency percentiles (ms)."""

    requests: int
    seconds: float
    errors: int        # socket errors and timeouts
    bad_status: int    # responses that were not 2xx/3xx
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        good = self.requests - self.bad_status
        return good / self.seconds if self.seconds > 0 else math.nan


def lua_string(text: str) -> str:
    """A Lua string literal (JSON escaping is valid Lua escaping for what the bench sends)."""
    return json.dumps(text)


def write_script(path: Path, body: bytes, headers: dict[str, str]) -> Path:
    """The Lua script for one scenario."""
    lines = "\n".join(f"wrk.headers[{lua_string(name)}] = {lua_string(value)}" for name, value in headers.items())
    path.write_text(SCRIPT.format(body=lua_string(body.decode()), headers=lines, mark=RESULT_MARK))
    return path


def run(wrk: str, url: str, script: Path, connections: int, seconds: float, timeout_s: float = 10.0) -> WrkResult:
    """Run wrk once (one thread: the machine has two cores, shared with the servers)."""
    command = [wrk, "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", f"{timeout_s:.0f}s", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            requests, duration_us, errors, bad, p50_us, p99_us = line.split()[1:]
            return WrkResult(int(requests), int(duration_us) / 1e6, int(errors), int(bad),
                             float(p50_us) / 1000, float(p99_us) / 1000)
    raise RuntimeError(f"wrk printed no result (exit {done.returncode}): {(done.stderr or done.stdout)[-500:]}")
