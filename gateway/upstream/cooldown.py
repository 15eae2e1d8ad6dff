"""A deployment's health as a pure state machine: failures in a window, a cooldown, then one half-open trial.

    healthy --(failures_to_cool failures within window_s, or a 429 with Retry-After)--> cooling
    cooling --(cooling_until passes)--> half_open --(one request claims the trial lease)--> trial
    trial/half_open --success--> healthy;  trial/half_open --failure--> cooling again at once
    trial --(its lease runs out unanswered)--> half_open

Every store of the shared state (gateway.upstream.health_store) applies these functions inside its
own atomic read-modify-write, so the rules live here once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import RoutingSettings

HEALTHY_STATUS = "healthy"
COOLING = "cooling"
HALF_OPEN = "half_open"
TRIAL = "trial"


@dataclass(frozen=True)
class CoolPolicy:
    """When failures put a deployment in cooldown, and for how long."""

    failures_to_cool: int
    window_s: float
    cooldown_s: float
    max_retry_after_s: float

    @classmethod
    def of(cls, routing: RoutingSettings) -> CoolPolicy:
        """The policy of the `[routing]` section."""
        return cls(routing.failures_to_cool, routing.window_s, routing.cooldown_s, routing.max_retry_after_s)

    def cooldown_for(self, retry_after_s: float | None) -> float:
        """Seconds to cool: the upstream's Retry-After (capped) when it sent one, else `cooldown_s`."""
        if retry_after_s is None:
            return self.cooldown_s
        return max(0.0, min(retry_after_s, self.max_retry_after_s))


@dataclass(frozen=True)
class Health:
    """One deployment's shared health; times are epoch seconds (shared by hosts, so wall clock)."""

    failures: int = 0  # failures counted in the window that started at window_start
    window_start: float = 0.0
    cooling_until: float = 0.0
    half_open: bool = False  # after a cooldown: one trial request decides
    trial_until: float = 0.0  # the lease of a claimed trial

    def status(self, now: float) -> str:
        """"healthy", "cooling", "half_open" (a trial may be claimed) or "trial" (claimed, in flight)."""
        if now < self.cooling_until:
            return COOLING
        if self.half_open:
            return TRIAL if now < self.trial_until else HALF_OPEN
        return HEALTHY_STATUS


HEALTHY = Health()


def after_failure(health: Health, now: float, policy: CoolPolicy, retry_after_s: float | None) -> Health:
    """The health after one failure at `now` (`retry_after_s`: a 429's Retry-After, cooling at once).

    A failure during a half-open trial cools the deployment again at once. A cooldown is never
    shortened by a later, shorter one.
    """
    if health.status(now) in (HALF_OPEN, TRIAL):
        return cooled(health, now, policy.cooldown_for(retry_after_s))
    in_window = health.failures > 0 and now - health.window_start < policy.window_s
    failures = health.failures + 1 if in_window else 1
    if retry_after_s is not None or failures >= policy.failures_to_cool:
        return cooled(health, now, policy.cooldown_for(retry_after_s))
    return replace(health, failures=failures, window_start=health.window_start if in_window else now)


def cooled(health: Health, now: float, seconds: float) -> Health:
    """Cooling for `seconds` from `now` (or longer, if a longer cooldown is already set), then half-open."""
    return Health(cooling_until=max(health.cooling_until, now + seconds), half_open=True)


def after_success(health: Health) -> Health:
    """A success ends a cooldown and its half-open trial; failures already counted in the window stay counted
    (a deployment failing every other request still reaches `failures_to_cool`)."""
    return Health(failures=health.failures, window_start=health.window_start)


def with_trial(health: Health, now: float, lease_s: float) -> Health | None:
    """The health once a request claims the half-open trial for `lease_s`; None when no trial may be claimed.

    A healthy deployment needs no claim: it is returned unchanged (the request may go).
    """
    status = health.status(now)
    if status == HALF_OPEN:
        return replace(health, trial_until=now + lease_s)
    return health if status == HEALTHY_STATUS else None
