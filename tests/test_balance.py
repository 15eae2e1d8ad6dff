"""The choice among a model's deployments (gateway.upstream.balance): a table of states and draws -> the pick."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.upstream.balance import DeploymentView, choose

STEPS = 1000  # draws 0, 1/1000, ... 999/1000: an even spread over [0, 1)


def view(
    weight: float = 1.0,
    priority: int = 0,
    available: bool = True,
    at_limit: bool = False,
    in_flight: int = 0,
    ttft_s: float | None = None,
) -> DeploymentView:
    """One deployment's state, with defaults for what a case does not care about."""
    return DeploymentView(f"d{weight}-{priority}", weight, priority, available, at_limit, in_flight, ttft_s)


COOLING = view(available=False)
EVERY_STRATEGY = ("weighted", "least_busy", "latency", "ordered")

CASES = [
    # (strategy, views, draw, expected index)
    # nothing available
    *[(strategy, [], 0.5, None) for strategy in EVERY_STRATEGY],
    *[(strategy, [COOLING, COOLING], 0.5, None) for strategy in EVERY_STRATEGY],
    # a cooling deployment is never picked, whatever its weight or place
    *[(strategy, [view(weight=9, available=False), view()], 0.0, 1) for strategy in EVERY_STRATEGY],
    # a lone available deployment at its limit is still picked: limits are soft
    *[(strategy, [COOLING, view(at_limit=True)], 0.9, 1) for strategy in EVERY_STRATEGY],
    # priority tiers
    ("weighted", [view(priority=1), view(priority=0)], 0.0, 1),
    ("ordered", [view(priority=1), view(priority=0)], 0.0, 1),
    ("weighted", [view(priority=0, available=False), view(priority=1)], 0.0, 1),
    ("weighted", [view(priority=0, at_limit=True), view(priority=1)], 0.0, 1),
    ("ordered", [view(priority=0, at_limit=True), view(priority=1)], 0.0, 1),
    ("weighted", [view(priority=0, at_limit=True), view(priority=1, at_limit=True)], 0.9, 0),
    ("weighted", [view(priority=1, at_limit=True), view(priority=0, at_limit=True), view(available=False)], 0.0, 1),
    ("weighted", [view(weight=5, at_limit=True), view(weight=1), view(priority=1)], 0.0, 1),
    ("least_busy", [view(at_limit=True), view(in_flight=9), view(priority=1)], 0.0, 1),
    ("latency", [view(ttft_s=0.1, at_limit=True), view(ttft_s=0.5), view(ttft_s=0.2, priority=1)], 0.5, 1),
    # weighted 3:1:0 -> cumulative 3, 4 over a total of 4
    ("weighted", [view(weight=3), view(weight=1), view(weight=0)], 0.0, 0),
    ("weighted", [view(weight=3), view(weight=1), view(weight=0)], 0.749, 0),
    ("weighted", [view(weight=3), view(weight=1), view(weight=0)], 0.75, 1),
    ("weighted", [view(weight=3), view(weight=1), view(weight=0)], 0.999999, 1),
    ("weighted", [view(weight=0), view(weight=1)], 0.0, 1),
    # weight 0 is picked when the weighted ones are at their limit (the tier with room), or all are 0 (uniform)
    ("weighted", [view(weight=1, at_limit=True), view(weight=0)], 0.0, 1),
    ("weighted", [view(weight=0), view(weight=0), view(weight=0)], 0.0, 0),
    ("weighted", [view(weight=0), view(weight=0), view(weight=0)], 0.5, 1),
    ("weighted", [view(weight=0), view(weight=0), view(weight=0)], 0.99, 2),
    # least_busy: fewest in flight; the draw breaks ties among the tied only
    ("least_busy", [view(in_flight=2), view(in_flight=1), view(in_flight=3)], 0.9, 1),
    ("least_busy", [view(in_flight=1), view(in_flight=1), view(in_flight=0)], 0.0, 2),
    ("least_busy", [view(in_flight=1), view(in_flight=1), view(in_flight=3)], 0.0, 0),
    ("least_busy", [view(in_flight=1), view(in_flight=1), view(in_flight=3)], 0.6, 1),
    ("least_busy", [view(), view(), view()], 0.9, 2),
    # latency: unmeasured first (the first of them), else the fastest, exploring the others below `exploration`
    ("latency", [view(ttft_s=0.3), view(), view(ttft_s=0.1), view()], 0.9, 1),
    ("latency", [view(ttft_s=0.3), view(ttft_s=0.2), view(ttft_s=0.1)], 0.5, 2),
    ("latency", [view(ttft_s=0.3), view(ttft_s=0.2), view(ttft_s=0.1)], 0.05, 2),
    ("latency", [view(ttft_s=0.3), view(ttft_s=0.2), view(ttft_s=0.1)], 0.01, 0),  # 0.01 / 0.05 = 0.2: first other
    ("latency", [view(ttft_s=0.3), view(ttft_s=0.2), view(ttft_s=0.1)], 0.04, 1),  # 0.8: second other
    ("latency", [view(ttft_s=0.1), view(ttft_s=0.2), view(ttft_s=0.3)], 0.04, 2),  # others skip the fastest
    ("latency", [view(ttft_s=0.2), view(ttft_s=0.2)], 0.5, 0),  # a tie: the first of them
    ("latency", [view(ttft_s=0.2, available=False), view(ttft_s=0.9)], 0.01, 1),  # nothing else to explore
    # ordered: the first available in the listed order, whatever the load or weights
    ("ordered", [COOLING, view(weight=0, in_flight=5), view(weight=9)], 0.9, 1),
]


@pytest.mark.parametrize(("strategy", "views", "draw", "expected"), CASES)
def test_choose(strategy: str, views: list[DeploymentView], draw: float, expected: int | None) -> None:
    assert choose(strategy, views, draw, exploration=0.05) == expected


def test_latency_without_exploration_always_takes_the_fastest() -> None:
    views = [view(ttft_s=0.3), view(ttft_s=0.1)]
    assert choose("latency", views, 0.0, exploration=0.0) == 1


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="random"):
        choose("random", [view()], 0.5, exploration=0.05)


def shares(strategy: str, views: list[DeploymentView], exploration: float = 0.05) -> list[float]:
    """Each view's share of the picks over an even spread of draws."""
    picks = Counter(choose(strategy, views, step / STEPS, exploration) for step in range(STEPS))
    return [picks[index] / STEPS for index in range(len(views))]


@pytest.mark.parametrize("weights", [(3, 1, 0), (1, 1, 1), (0.5, 2.5, 1), (7, 0, 3), (1, 99), (0.001, 0.999)])
def test_weighted_shares_follow_the_weights(weights: tuple[float, ...]) -> None:
    total = sum(weights)
    measured = shares("weighted", [view(weight=weight) for weight in weights])
    assert measured == pytest.approx([weight / total for weight in weights], abs=1 / STEPS)


def test_weighted_shares_leave_out_cooling_and_lower_tiers() -> None:
    views = [view(weight=3), view(weight=5, available=False), view(weight=1), view(weight=9, priority=1)]
    assert shares("weighted", views) == pytest.approx([0.75, 0, 0.25, 0], abs=1 / STEPS)


def test_least_busy_spreads_ties_evenly() -> None:
    views = [view(in_flight=2), view(in_flight=2), view(in_flight=4), view(in_flight=2)]
    assert shares("least_busy", views) == pytest.approx([1 / 3, 1 / 3, 0, 1 / 3], abs=1 / STEPS)


def test_latency_explores_the_others_evenly_at_the_exploration_rate() -> None:
    views = [view(ttft_s=0.4), view(ttft_s=0.1), view(ttft_s=0.2)]
    assert shares("latency", views, exploration=0.1) == pytest.approx([0.05, 0.9, 0.05], abs=1 / STEPS)
