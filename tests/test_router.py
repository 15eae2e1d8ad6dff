"""The router's attempt loop in process: which deployment each attempt takes, what is retried, the backoff,
Retry-After, cooldowns and the half-open trial, fallbacks, and the route it answers with.

The health board runs over an in-memory store (the database and Redis stores are tests/test_health_store.py's),
the clock and sleep are injected, and `send` is a script of answers and errors per deployment.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.config import build_settings
from gateway.errors import (
    InvalidRequest,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.upstream.cooldown import HEALTHY, CoolPolicy, Health
from gateway.upstream.health_store import HealthBoard
from gateway.upstream.load import LoadBoard
from gateway.upstream.prepared import PreparedRequest, prepare_candidates
from gateway.upstream.router import NoAvailableDeployment, Router, backoff_s, retry_after_s, retryable
from gateway.upstream.routing import candidates

NOW = 1_000_000.0


class MemoryStore:
    """A HealthStore in a dict: atomic enough for one thread."""

    errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self) -> None:
        self.rows: dict[str, Health] = {}

    def load(self) -> dict[str, Health]:
        return dict(self.rows)

    def change(self, name: str, transition: Any) -> Health | None:
        changed = transition(self.rows.get(name, HEALTHY))
        if changed is not None:
            self.rows[name] = changed
        return changed

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = NOW
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def settings_of(model: dict[str, Any], **routing: Any) -> Any:
    providers = {name: {"base_url": f"http://127.0.0.1:9/{name}/v1"} for name in ("a", "b", "c")}
    return build_settings({
        "providers": providers,
        "models": {"m": model, "backup": {"provider": "c", "upstream_model": "backup-up", "retries": 0}},
        "routing": {"failures_to_cool": 2, "cooldown_s": 10, "backoff_s": 0.5, "max_backoff_s": 2, **routing},
    })


THREE = {"routing": "ordered", "deployments": [
    {"provider": "a", "upstream_model": "ua"}, {"provider": "b", "upstream_model": "ub"},
    {"provider": "c", "upstream_model": "uc", "priority": 1}]}


class Harness:
    """A router over the settings, with a scripted send: `script[deployment]` is a list of outcomes in order
    (an exception is raised, anything else answered); an empty script answers "ok"."""

    def __init__(self, settings: Any, seed: int = 7) -> None:
        self.settings = settings
        self.clock = Clock()
        self.board = HealthBoard(MemoryStore(), CoolPolicy.of(settings.routing), 3600, clock=self.clock)
        self.router = Router(settings, client=None, health=self.board, load=LoadBoard(1), clock=self.clock,
                             sleep=self.clock.sleep, rng=random.Random(seed))
        self.script: dict[str, list[Any]] = {}
        self.sent: list[tuple[str, str]] = []  # (deployment, upstream model in the body)

    def send(self, prepared: PreparedRequest) -> Any:
        self.sent.append((prepared.route.deployment.name, prepared.body["model"]))
        outcomes = self.script.get(prepared.route.deployment.name) or ["ok"]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def call(self, body: dict[str, Any] | None = None) -> tuple[Any, Any]:
        body = body or {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        prepared = prepare_candidates(candidates(self.settings, body), "chat/completions", body,
                                      self.settings.providers, False)
        return self.router.call(prepared, self.send)

    def deployments(self) -> list[str]:
        return [name for name, _ in self.sent]


def rejected(status: int, retry_after: str | None = None) -> UpstreamRejected:
    return UpstreamRejected("no", status=status, headers={"Retry-After": retry_after} if retry_after else None)


@pytest.mark.parametrize(("error", "expected"), [
    (UpstreamUnavailable("down"), True),
    (UpstreamTimeout("slow"), True),
    (UpstreamError("500"), True),
    (UpstreamOverloaded("529"), True),
    (rejected(429), True),
    (rejected(408), True),
    (rejected(400), False),
    (rejected(404), False),
    (rejected(413), False),
    (InvalidRequest("bad"), False),
])
def test_what_is_retried(error: Exception, expected: bool) -> None:
    assert retryable(error) is expected


@pytest.mark.parametrize(("value", "seconds"), [("2", 2.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None),
                                                ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0)])
def test_retry_after_in_seconds(value: str, seconds: float | None) -> None:
    assert retry_after_s(rejected(429, value), NOW) == seconds


def test_backoff_doubles_is_capped_and_jittered() -> None:
    assert [backoff_s(attempt, 0.5, 2.0, 1.0) for attempt in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.0]
    assert backoff_s(3, 0.5, 2.0, 0.25) == 0.5


def test_a_failure_moves_to_the_next_deployment_prepared_for_it() -> None:
    harness = Harness(settings_of(THREE))
    harness.script["a/ua"] = [UpstreamUnavailable("down")]
    route, answer = harness.call()
    assert answer == "ok" and harness.sent == [("a/ua", "ua"), ("b/ub", "ub")]
    assert (route.deployment.name, route.provider, route.attempts) == ("b/ub", "b", 2)
    assert harness.clock.slept == []  # another deployment: no backoff


def test_a_request_error_is_raised_at_once_and_teaches_the_health_nothing() -> None:
    harness = Harness(settings_of(THREE))
    harness.script["a/ua"] = [rejected(400)]
    with pytest.raises(UpstreamRejected) as refused:
        harness.call()
    assert harness.deployments() == ["a/ua"] and harness.board.health("a/ua") == HEALTHY
    assert (refused.value.tried.deployment.name, refused.value.tried.attempts) == ("a/ua", 1)  # for its usage row


def test_retries_are_bounded_and_the_last_error_is_raised() -> None:
    harness = Harness(settings_of({**THREE, "retries": 1}))
    for name in ("a/ua", "b/ub", "c/uc"):
        harness.script[name] = [UpstreamError("boom")]
    with pytest.raises(UpstreamError) as failed:
        harness.call({"model": "m", "messages": []})
    assert harness.deployments() == ["a/ua", "b/ub"]  # 1 + retries attempts
    assert (failed.value.tried.deployment.name, failed.value.tried.attempts) == ("b/ub", 2)


def test_a_lone_deployment_is_retried_after_a_backoff_that_honours_retry_after() -> None:
    harness = Harness(settings_of({"provider": "a", "upstream_model": "ua", "retries": 2}))
    harness.script["a/ua"] = [rejected(429, "3"), UpstreamTimeout("slow"), "ok"]
    route, answer = harness.call()
    assert answer == "ok" and route.attempts == 3 and harness.deployments() == ["a/ua"] * 3
    assert harness.clock.slept[0] == 3.0  # at least the Retry-After
    assert 0 <= harness.clock.slept[1] <= 1.0  # the second backoff: jittered, at most base x 2


def test_a_retry_after_beyond_the_budget_ends_the_models_attempts() -> None:
    harness = Harness(settings_of({"provider": "a", "upstream_model": "ua", "retry_budget_s": 5}))
    harness.script["a/ua"] = [rejected(429, "60")]
    with pytest.raises(UpstreamRejected):
        harness.call()
    assert harness.deployments() == ["a/ua"] and harness.clock.slept == []


def test_the_clients_fallbacks_come_after_the_models_own_deployments() -> None:
    harness = Harness(settings_of({**THREE, "retries": 2}))
    for name in ("a/ua", "b/ub", "c/uc"):
        harness.script[name] = [UpstreamError("boom")]
    route, answer = harness.call({"model": "m", "models": ["backup"], "messages": []})
    assert answer == "ok" and harness.deployments() == ["a/ua", "b/ub", "c/uc", "c/backup-up"]
    assert (route.model_id, route.attempts) == ("backup", 4)


def test_a_failing_deployment_cools_down_is_skipped_then_gets_one_trial() -> None:
    harness = Harness(settings_of(THREE))
    harness.script["a/ua"] = [UpstreamUnavailable("down")]
    harness.call()
    harness.call()  # the second failure within the window cools a/ua (failures_to_cool = 2)
    assert harness.board.health("a/ua").status(harness.clock.now) == "cooling"
    harness.sent.clear()
    harness.call()
    assert harness.deployments() == ["b/ub"]  # skipped while cooling
    harness.clock.now += 11  # past the cooldown: half-open
    harness.script["a/ua"] = ["ok"]
    harness.sent.clear()
    harness.call()
    assert harness.deployments() == ["a/ua"] and harness.board.health("a/ua").status(harness.clock.now) == "healthy"


def test_a_429_with_retry_after_cools_at_once_for_that_long() -> None:
    harness = Harness(settings_of(THREE))
    harness.script["a/ua"] = [rejected(429, "2")]
    harness.call()
    assert harness.board.health("a/ua").cooling_until == NOW + 2
    harness.sent.clear()
    harness.call()
    assert harness.deployments() == ["b/ub"]


def test_a_higher_priority_number_is_used_only_when_the_others_are_cooling() -> None:
    harness = Harness(settings_of({**THREE, "routing": "weighted"}))
    for _ in range(20):
        harness.call()
    assert "c/uc" not in harness.deployments()
    for name in ("a/ua", "b/ub"):
        harness.board.failed(name, 30.0)
    harness.sent.clear()
    harness.call()
    assert harness.deployments() == ["c/uc"]


def test_when_every_deployment_cools_the_fallback_answers_else_503_with_retry_after() -> None:
    harness = Harness(settings_of(THREE))
    for name in ("a/ua", "b/ub", "c/uc"):
        harness.board.failed(name, 7.0)
    route, _ = harness.call({"model": "m", "models": ["backup"], "messages": []})
    assert route.model_id == "backup" and harness.deployments() == ["c/backup-up"]
    with pytest.raises(NoAvailableDeployment) as refused:
        harness.call()
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "7"


def test_only_one_request_takes_the_half_open_trial() -> None:
    harness = Harness(settings_of(THREE))
    harness.board.failed("a/ua", 1.0)
    harness.clock.now += 2  # half-open now
    assert harness.router.health.claim_trial("a/ua", 60.0)  # another request holds the trial
    harness.sent.clear()
    harness.call()
    assert harness.deployments() == ["b/ub"]


def test_weighted_shares_follow_the_weights() -> None:
    model = {"deployments": [{"provider": "a", "weight": 3}, {"provider": "b", "weight": 1},
                             {"provider": "c", "weight": 0}]}
    harness = Harness(settings_of(model))
    for _ in range(400):
        harness.call()
    counts = {name: harness.deployments().count(name) for name in ("a/m", "b/m", "c/m")}
    assert counts["c/m"] == 0 and abs(counts["a/m"] - 300) <= 35 and abs(counts["b/m"] - 100) <= 35, counts



@pytest.mark.parametrize("strategy", ["weighted", "ordered"])
@pytest.mark.parametrize("limits", [{}, {"rpm": 1000}])
def test_the_healthy_unlimited_shortcut_picks_what_the_full_pick_picks(strategy: str, limits: dict) -> None:
    """With every deployment healthy and none limited, the router picks from views built once per model; a
    deployment that failed once (still healthy) or a limit takes the full pick, which must agree, draw for draw."""
    model = {"routing": strategy, "deployments": [
        {"provider": "a", "weight": 3, **limits}, {"provider": "b", "weight": 1}, {"provider": "c", "weight": 2},
        {"provider": "c", "upstream_model": "other", "weight": 5, "priority": 1}]}
    shortcut, full = Harness(settings_of(model), seed=11), Harness(settings_of(model), seed=11)
    full.board.failed("b/m", None)  # one failure: counted, not cooling (failures_to_cool = 2)
    if not limits:
        shortcut.router._view = None  # the shortcut builds no view: calling one would fail the test
    assert full.board.health("b/m").status(NOW) == "healthy" and full.board.health("b/m") != HEALTHY
    for harness in (shortcut, full):
        for _ in range(200):
            harness.call()
    assert shortcut.deployments() == full.deployments()
    assert set(shortcut.deployments()) == ({"a/m"} if strategy == "ordered" else {"a/m", "b/m", "c/m"})

def test_deployment_states_show_health_and_load() -> None:
    harness = Harness(settings_of(THREE))
    harness.board.failed("a/ua", 5.0)
    states = {state.deployment: state for state in harness.router.deployment_states() if state.model_id == "m"}
    assert states["a/ua"].status == "cooling" and states["a/ua"].cooling_until == NOW + 5
    assert states["b/ub"].status == "healthy" and states["c/uc"].priority == 1
