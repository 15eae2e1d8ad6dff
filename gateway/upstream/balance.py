"""Which of a model's deployments a request tries next: a pure function of their state and one random draw.

The router (gateway.upstream.router) builds one `DeploymentView` per deployment from the shared health
board and this worker's load board, draws a uniform number, and asks `choose`. Nothing here reads a clock,
a lock or a random source, so every rule is a row in tests/test_balance.py.

Rules, in order:
- only available deployments (not cooling down) are candidates;
- the tier: the lowest `priority` among the candidates with room (not at their rpm/tpm/concurrency share on
  this worker), or, when every candidate is at its limit, the lowest among them all (limits are soft: the
  gateway spreads load before a quota is reached, it never refuses for one);
- inside the tier, the model's strategy picks one: weighted, least_busy, latency or ordered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple


class DeploymentView(NamedTuple):
    """What the choice needs to know about one deployment, at the moment of the request (a tuple: one per
    deployment per request, so cheap to make)."""

    name: str
    weight: float
    priority: int  # 0 first
    available: bool  # not cooling down (a half-open deployment whose trial can be claimed counts)
    at_limit: bool  # its rpm/tpm/max_concurrency share is used up on this worker
    in_flight: int  # requests in flight on it from this worker
    ttft_s: float | None  # moving average time to first token on this worker; None: not measured yet


def choose(strategy: str, views: Sequence[DeploymentView], draw: float, exploration: float) -> int | None:
    """Index into `views` of the deployment to try (draw: uniform in [0, 1)), or None when none is available."""
    pick = STRATEGIES.get(strategy)
    if pick is None:
        raise ValueError(f"unknown routing strategy {strategy!r}; expected one of {sorted(STRATEGIES)}")
    tier = candidate_tier(views)
    if not tier:
        return None
    if len(tier) == 1:
        return tier[0]
    return pick(views, tier, draw, exploration)


def candidate_tier(views: Sequence[DeploymentView]) -> list[int]:
    """Indices of the views the strategy picks among (listed order), in one pass: the best tier with room,
    else the best tier at its limits; empty when nothing is available."""
    with_room: list[int] = []
    at_limit: list[int] = []
    room_priority = limit_priority = None
    for index, view in enumerate(views):
        if not view.available:
            continue
        priority = view.priority
        if not view.at_limit:
            if room_priority is None or priority < room_priority:
                room_priority, with_room = priority, [index]
            elif priority == room_priority:
                with_room.append(index)
        elif not with_room:  # only needed while nothing has room
            if limit_priority is None or priority < limit_priority:
                limit_priority, at_limit = priority, [index]
            elif priority == limit_priority:
                at_limit.append(index)
    return with_room or at_limit


def pick_weighted(views: Sequence[DeploymentView], tier: list[int], draw: float, exploration: float) -> int:
    """By weight: `draw` times the tier's total weight walks the cumulative weights; all zero: uniform."""
    total = 0.0
    for index in tier:
        total += views[index].weight
    if total <= 0:
        return pick_uniform(tier, draw)
    target = draw * total
    cumulative = 0.0
    chosen = tier[-1]
    for index in tier:
        weight = views[index].weight
        if weight > 0:
            chosen = index  # the last positive weight, should rounding leave target at the very end
            cumulative += weight
            if target < cumulative:
                return index
    return chosen


def pick_least_busy(views: Sequence[DeploymentView], tier: list[int], draw: float, exploration: float) -> int:
    """Fewest requests in flight on this worker; `draw` breaks ties, so equally idle deployments share evenly."""
    fewest: int | None = None
    tied: list[int] = []
    for index in tier:
        in_flight = views[index].in_flight
        if fewest is None or in_flight < fewest:
            fewest, tied = in_flight, [index]
        elif in_flight == fewest:
            tied.append(index)
    return tied[0] if len(tied) == 1 else pick_uniform(tied, draw)


def pick_fastest(views: Sequence[DeploymentView], tier: list[int], draw: float, exploration: float) -> int:
    """Lowest time to first token; an unmeasured deployment first; with probability `exploration`, another one.

    Exploration keeps measuring the others, so a deployment that was slow and has recovered wins traffic back.
    The draw is reused: below `exploration`, draw / exploration is uniform again and picks among the others.
    """
    fastest = tier[0]
    fastest_s: float | None = None
    for index in tier:
        ttft_s = views[index].ttft_s
        if ttft_s is None:
            return index
        if fastest_s is None or ttft_s < fastest_s:
            fastest, fastest_s = index, ttft_s
    if draw < exploration:
        others = [index for index in tier if index != fastest]
        return pick_uniform(others, draw / exploration)
    return fastest


def pick_first(views: Sequence[DeploymentView], tier: list[int], draw: float, exploration: float) -> int:
    """The first in the listed order."""
    return tier[0]


def pick_uniform(indices: list[int], draw: float) -> int:
    """One of `indices`, each with the same chance, by a draw in [0, 1)."""
    return indices[min(int(draw * len(indices)), len(indices) - 1)]


STRATEGIES: dict[str, Callable[[Sequence[DeploymentView], list[int], float, float], int]] = {
    "weighted": pick_weighted,
    "least_busy": pick_least_busy,
    "latency": pick_fastest,
    "ordered": pick_first,
}
