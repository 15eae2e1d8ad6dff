"""The bench's setup step: wrk and nginx from Debian, LiteLLM's proxy from PyPI in its own venv.

`python bench/run.py` runs it first (`--no-setup` skips it; `--setup-only` runs only it).
Each tool that cannot be installed is reported with the reason, and its contestant is skipped.
Nothing is installed into the gateway's own environment: LiteLLM lives in bench/.venv-litellm
(git-ignored), so its dependency pins never touch the gateway's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_REQUIREMENT = "litellm[proxy]==1.106.12"
APT_PACKAGES = {"wrk": "wrk", "nginx": "nginx-light"}
APT_TIMEOUT_S = 600
PIP_TIMEOUT_S = 900


@dataclass
class Tools:
    """What the run can use: paths of the tools found, and why the others are missing."""

    wrk: str | None = None
    nginx: str | None = None
    litellm: str | None = None
    missing: dict[str, str] = field(default_factory=dict)


def _run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> str | None:
    """Run a setup command; None on success, else a one-line reason."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{' '.join(command[:3])}` failed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"`{' '.join(command[:4])}` exited {done.returncode}: {tail[0][:200]}"
    return None


def ensure_apt(tools: Tools, log: list[str]) -> None:
    """Install wrk and nginx-light with apt-get when missing (needs root; services are not started)."""
    wanted = [name for name in APT_PACKAGES if shutil.which(name) is None]
    if wanted and shutil.which("apt-get") and os.geteuid() == 0:
        log.append(f"setup: apt-get install {' '.join(APT_PACKAGES[n] for n in wanted)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        reason = _run(["apt-get", "update", "-qq"], APT_TIMEOUT_S, env) or _run(
            ["apt-get", "install", "-y", "-qq", *(APT_PACKAGES[n] for n in wanted)], APT_TIMEOUT_S, env)
        if reason:
            log.append(f"setup: {reason}")
    for name, package in APT_PACKAGES.items():
        path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
        setattr(tools, name, path)
        if path is None:
            tools.missing[name] = f"`{name}` is not installed and `apt-get install {package}` was not possible"


def litellm_binary() -> Path:
    """The `litellm` proxy command inside the bench's venv."""
    return LITELLM_VENV / "bin" / "litellm"


def ensure_litellm(tools: Tools, log: list[str], requirement: str = LITELLM_REQUIREMENT) -> None:
    """Create bench/.venv-litellm and pip-install LiteLLM's proxy there, unless it already works."""
    binary = litellm_binary()
    python = LITELLM_VENV / "bin" / "python"
    if not (binary.exists() and _installed(python, requirement)):
        log.append(f"setup: pip install '{requirement}' into {LITELLM_VENV.relative_to(BENCH.parent)}"
                   " (a few minutes the first time)")
        reason = None
        if not python.exists():
            reason = _run([sys.executable, "-m", "venv", str(LITELLM_VENV)], 120)
        reason = reason or _run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                                PIP_TIMEOUT_S)
        reason = reason or _run([str(python), "-m", "pip", "install", "--quiet", requirement], PIP_TIMEOUT_S)
        if reason:
            tools.missing["litellm"] = f"LiteLLM could not be installed: {reason}"
            return
    if binary.exists():
        tools.litellm = str(binary)
    else:
        tools.missing["litellm"] = f"{binary} is missing after the install"


def _installed(python: Path, requirement: str) -> bool:
    """True when the venv's LiteLLM has the pinned version."""
    if not python.exists():
        return False
    wanted = requirement.split("==", 1)[1] if "==" in requirement else None
    probe = "import importlib.metadata as m; print(m.version('litellm'))"
    try:
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and (wanted is None or done.stdout.strip() == wanted)


def setup(install: bool = True, with_litellm: bool = True) -> tuple[Tools, list[str]]:
    """Find (and, with `install`, install) every tool; returns them and the log lines."""
    tools, log = Tools(), []
    if install:
        ensure_apt(tools, log)
    else:
        for name in APT_PACKAGES:
            setattr(tools, name, shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                                          else None))
            if getattr(tools, name) is None:
                tools.missing[name] = f"`{name}` is not installed (run without --no-setup)"
    if not with_litellm:
        tools.missing["litellm"] = "left out with --no-litellm"
    elif install:
        ensure_litellm(tools, log)
    elif litellm_binary().exists():
        tools.litellm = str(litellm_binary())
    else:
        tools.missing["litellm"] = f"{litellm_binary()} is missing (run without --no-setup)"
    return tools, log
