"""`.ci/run` runs the README's two commands exactly as the README writes them, in a fresh venv (issue 21)."""

from __future__ import annotations

import re

import pytest

from tests.doc_pages import README, REPO, documented_examples

CI_SCRIPT = REPO / ".ci" / "run"


def readme_command(name: str) -> str:
    """The one-line shell command of the README example with this marker name."""
    (example,) = [e for e in documented_examples() if e.page == README.name and e.name == name]
    return example.code.strip()


def ci_command(variable: str) -> str:
    """The command .ci/run keeps in this shell variable (single-quoted)."""
    found = re.search(rf"^{variable}='([^']*)'$", CI_SCRIPT.read_text(), re.MULTILINE)
    assert found, f".ci/run sets no {variable}"
    return found.group(1)


@pytest.mark.parametrize(("example", "variable"), [("first-command", "first_command"), ("tests", "test_command")])
def test_ci_runs_the_readme_command_verbatim(example: str, variable: str) -> None:
    assert ci_command(variable) == readme_command(example)


def test_ci_builds_a_fresh_venv_without_system_packages() -> None:
    script = CI_SCRIPT.read_text()
    assert re.search(r'^python3 -m venv "\$venv"$', script, re.MULTILINE), "no fresh venv"
    assert "--system-site-packages" not in script
    assert re.search(r'^venv="\$\(mktemp -d\)/venv"$', script, re.MULTILINE), "the venv is not new per run"
