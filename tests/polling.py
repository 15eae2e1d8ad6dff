"""Waiting on a condition instead of sleeping: the tests' one bounded poll."""

from __future__ import annotations

import time
from collections.abc import Callable

BOUND_S = 15.0  # an upper bound for the condition to hold; never a timing assertion
INTERVAL_S = 0.02


def wait_until(condition: Callable[[], object], what: str, bound_s: float = BOUND_S) -> None:
    """Poll until condition() is truthy; fail naming what was awaited once the bound passes."""
    deadline = time.monotonic() + bound_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {bound_s} s waiting for {what}"
        time.sleep(INTERVAL_S)
