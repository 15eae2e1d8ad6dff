"""Pure statistics over timed samples: percentiles, per-scenario summaries, ratios."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.load import Block


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    """One scenario's numbers; times in milliseconds."""

    scenario: str
    database: str
    requests: int
    errors: int
    concurrency: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float
    ttfb_median_ms: float | None


def summarize(scenario: str, database: str, blocks: Sequence[Block], concurrency: int) -> Summary:
    """Latency percentiles of the successful requests; throughput = all requests / block time."""
    samples = [sample for block in blocks for sample in block.samples]
    good = [sample for sample in samples if sample.ok]
    latencies = [sample.latency_s * 1000 for sample in good]
    ttfbs = [sample.ttfb_s * 1000 for sample in good if sample.ttfb_s is not None]
    wall = sum(block.wall_s for block in blocks)
    return Summary(
        scenario=scenario,
        database=database,
        requests=len(samples),
        errors=len(samples) - len(good),
        concurrency=concurrency,
        median_ms=percentile(latencies, 0.5),
        p90_ms=percentile(latencies, 0.9),
        p99_ms=percentile(latencies, 0.99),
        throughput=len(good) / wall if wall > 0 else math.nan,
        ttfb_median_ms=percentile(ttfbs, 0.5) if ttfbs else None,
    )


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when undefined."""
    if not denominator or math.isnan(denominator) or math.isnan(numerator):
        return math.nan
    return numerator / denominator
