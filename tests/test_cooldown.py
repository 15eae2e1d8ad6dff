"""The cooldown state machine: statuses, failures in a window, Retry-After, half-open trials (pure, table-driven)."""

from __future__ import annotations

import pytest

from gateway.config import RoutingSettings
from gateway.upstream.cooldown import (
    HEALTHY,
    CoolPolicy,
    Health,
    after_failure,
    after_success,
    with_trial,
)

POLICY = CoolPolicy(failures_to_cool=3, window_s=60.0, cooldown_s=30.0, max_retry_after_s=300.0)
NOW = 1_000.0


@pytest.mark.parametrize(
    ("health", "now", "status"),
    [
        (HEALTHY, NOW, "healthy"),
        (Health(failures=2, window_start=NOW - 1), NOW, "healthy"),
        (Health(cooling_until=NOW + 1, half_open=True), NOW, "cooling"),
        (Health(cooling_until=NOW, half_open=True), NOW, "half_open"),
        (Health(cooling_until=NOW - 5, half_open=True, trial_until=NOW + 1), NOW, "trial"),
        (Health(cooling_until=NOW - 5, half_open=True, trial_until=NOW), NOW, "half_open"),  # the lease ran out
        (Health(cooling_until=NOW + 1, half_open=True, trial_until=NOW + 9), NOW, "cooling"),
    ],
)
def test_status(health: Health, now: float, status: str) -> None:
    assert health.status(now) == status


@pytest.mark.parametrize(
    ("before", "retry_after_s", "after"),
    [
        # a first failure opens a window
        (HEALTHY, None, Health(failures=1, window_start=NOW)),
        # failures within the window add up, the window keeps its start
        (Health(failures=1, window_start=NOW - 10), None, Health(failures=2, window_start=NOW - 10)),
        # the third within window_s cools for cooldown_s, then half-open; the count restarts
        (Health(failures=2, window_start=NOW - 59), None, Health(cooling_until=NOW + 30, half_open=True)),
        # a window older than window_s restarts at 1
        (Health(failures=2, window_start=NOW - 60), None, Health(failures=1, window_start=NOW)),
        # a 429 with Retry-After cools at once, for Retry-After
        (HEALTHY, 2.0, Health(cooling_until=NOW + 2, half_open=True)),
        # ... capped at max_retry_after_s
        (HEALTHY, 3600.0, Health(cooling_until=NOW + 300, half_open=True)),
        # ... and never shortening a longer cooldown already set
        (Health(cooling_until=NOW + 100, half_open=True), 2.0, Health(cooling_until=NOW + 100, half_open=True)),
        # a failure while cooling (a request sent before it began) counts towards another cooldown, no shorter
        (Health(cooling_until=NOW + 10, half_open=True), None,
         Health(failures=1, window_start=NOW, cooling_until=NOW + 10, half_open=True)),
        (Health(failures=2, window_start=NOW - 1, cooling_until=NOW + 10, half_open=True), None,
         Health(cooling_until=NOW + 30, half_open=True)),
        # a claimed trial that fails cools again at once
        (Health(cooling_until=NOW - 1, half_open=True, trial_until=NOW + 5), None,
         Health(cooling_until=NOW + 30, half_open=True)),
        # so does a failure while half-open (a one-deployment model is never skipped, so claims no trial)
        (Health(cooling_until=NOW - 1, half_open=True), None, Health(cooling_until=NOW + 30, half_open=True)),
        (Health(cooling_until=NOW - 1, half_open=True), 5.0, Health(cooling_until=NOW + 5, half_open=True)),
    ],
)
def test_after_failure(before: Health, retry_after_s: float | None, after: Health) -> None:
    assert after_failure(before, NOW, POLICY, retry_after_s) == after


def test_failures_to_cool_failures_cool_and_then_one_trial_decides() -> None:
    health = HEALTHY
    for second in range(POLICY.failures_to_cool):
        assert health.status(NOW + second) == "healthy"
        health = after_failure(health, NOW + second, POLICY, None)
    assert health.status(NOW + 2) == "cooling"
    reopens = NOW + 2 + POLICY.cooldown_s
    assert health.status(reopens - 0.001) == "cooling" and health.status(reopens) == "half_open"
    trial = with_trial(health, reopens, 10.0)
    assert trial is not None and trial.status(reopens) == "trial"
    assert with_trial(trial, reopens + 1, 10.0) is None  # one trial at a time
    assert trial.status(reopens + 10) == "half_open"  # an unanswered trial's lease runs out
    assert after_success(trial) == HEALTHY


@pytest.mark.parametrize(
    ("health", "claimed"),
    [
        (HEALTHY, HEALTHY),  # nothing to claim: the request may go
        (Health(failures=2, window_start=NOW), Health(failures=2, window_start=NOW)),
        (Health(cooling_until=NOW, half_open=True), Health(cooling_until=NOW, half_open=True, trial_until=NOW + 7)),
        (Health(cooling_until=NOW + 1, half_open=True), None),
        (Health(cooling_until=NOW - 1, half_open=True, trial_until=NOW + 1), None),
    ],
)
def test_with_trial(health: Health, claimed: Health | None) -> None:
    assert with_trial(health, NOW, 7.0) == claimed


@pytest.mark.parametrize(("health", "after"), [
    (HEALTHY, HEALTHY),
    (Health(failures=2, window_start=NOW), Health(failures=2, window_start=NOW)),  # the window's count stays
    (Health(cooling_until=NOW - 1, half_open=True, trial_until=NOW + 1), HEALTHY),  # a trial that passed
])
def test_a_success_ends_a_cooldown_and_keeps_the_windows_count(health: Health, after: Health) -> None:
    assert after_success(health) == after


def test_failures_between_successes_still_cool_within_the_window() -> None:
    cooled = after_failure(after_success(after_failure(HEALTHY, NOW, POLICY, None)), NOW + 1, POLICY, None)
    assert after_failure(cooled, NOW + 2, POLICY, None).status(NOW + 2) == "cooling"


def test_policy_of_the_routing_section() -> None:
    routing = RoutingSettings(failures_to_cool=5, window_s=10, cooldown_s=7, max_retry_after_s=20)
    assert CoolPolicy.of(routing) == CoolPolicy(5, 10.0, 7.0, 20.0)
    assert CoolPolicy.of(routing).cooldown_for(None) == 7.0
    assert CoolPolicy.of(routing).cooldown_for(-3.0) == 0.0
