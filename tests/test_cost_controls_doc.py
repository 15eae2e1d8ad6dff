"""docs/cost-controls.md, run: the cache's shell example against a live gateway with the page's `[cache]` on.

The README test (tests/test_readme.py) runs the page's other examples on the embedded defaults, where the
cache is off; this one needs it on, so it runs here with the page's own `[cache]` table, on a model named as
the page names it. The example's lines print the `X-Cache` and `Age` headers of the same request four times.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib

import pytest

from tests.doc_pages import REPO, Example, documented_examples

PAGE = "docs/cost-controls.md"
BOUND_S = 60


def example(name: str) -> Example:
    """The page's example called `name`."""
    return next(found for found in documented_examples() if found.page == PAGE and found.name == name)


@pytest.fixture
def settings(make_settings):
    cache = tomllib.loads(example("cost-cache-config").code)["cache"]
    return make_settings(cache=cache, models={"smollm2": {"provider": "fake", "upstream_model": "smollm2"}})


def headers_printed(output: str) -> list[dict[str, str]]:
    """Each request's X-Cache (and Age) as the example printed them, one dict per request."""
    answers: list[dict[str, str]] = []
    for line in output.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-cache":
            answers.append({"x-cache": value.strip()})
        elif name.strip().lower() == "age" and answers:
            answers[-1]["age"] = value.strip()
    return answers


def test_the_cache_example_misses_then_hits(live_server, make_key, fake_upstream):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    code = example("cost-cache-curl").code.replace("localhost:8080", live_server.removeprefix("http://"))
    done = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=BOUND_S, cwd=REPO,
                          env={**os.environ, "KEY": make_key("docs-cache")}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = headers_printed(done.stdout)
    assert [answer["x-cache"] for answer in answers] == ["MISS", "HIT", "MISS", "HIT"], done.stdout
    assert all(re.fullmatch(r"\d+", answers[index]["age"]) for index in (1, 3))
    assert "age" not in answers[0] and "age" not in answers[2]
    assert len(fake_upstream.bodies()) == 2  # the first request and the no-cache one; the hits never went up
