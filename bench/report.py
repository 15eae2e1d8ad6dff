"""Renders a bench run as Markdown: the scenario table, ratios, stream TTFB, checks and notes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.stats import Summary, ratio

DIRECT = "direct"
DIRECT_STREAM = "direct, stream"
FREE = "gateway, free model"
PRICED = "gateway, priced model"
PRICED_STREAM = "gateway, priced model, stream"


@dataclass
class RunInfo:
    """Everything around the numbers: how the run was made and what the machine was doing."""

    command: str
    started: str
    duration_s: float
    setup: str
    machine: list[str]
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def number(value: float | None, digits: int = 2) -> str:
    """A table cell: fixed decimals, or n/a."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def scenario_table(summaries: Sequence[Summary]) -> list[str]:
    """One row per scenario."""
    lines = [
        "| scenario | database | requests | errors | concurrency | median ms | p90 ms | p99 ms | req/s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.scenario} | {s.database} | {s.requests} | {s.errors} | {s.concurrency} | "
            f"{number(s.median_ms)} | {number(s.p90_ms)} | {number(s.p99_ms)} | {number(s.throughput, 0)} |"
        )
    return lines


def find(summaries: Sequence[Summary], scenario: str, database: str | None = None) -> Summary | None:
    """The summary of one scenario (on one database), if it ran."""
    for s in summaries:
        if s.scenario == scenario and (database is None or s.database == database):
            return s
    return None


def ratio_table(summaries: Sequence[Summary]) -> list[str]:
    """Per database: gateway/direct, priced/free and the accounting cost in ms (all medians)."""
    direct = find(summaries, DIRECT)
    databases = [s.database for s in summaries if s.scenario == FREE]
    lines = [
        "| database | free / direct | priced / direct | priced / free | accounting cost per request (ms) |",
        "|---|--:|--:|--:|--:|",
    ]
    for database in databases:
        free, priced = find(summaries, FREE, database), find(summaries, PRICED, database)
        if direct is None or free is None or priced is None:
            continue
        lines.append(
            f"| {database} | {number(ratio(free.median_ms, direct.median_ms))}x "
            f"| {number(ratio(priced.median_ms, direct.median_ms))}x "
            f"| {number(ratio(priced.median_ms, free.median_ms))}x "
            f"| {number(priced.median_ms - free.median_ms)} |"
        )
    return lines


def stream_table(summaries: Sequence[Summary]) -> list[str]:
    """Time to first byte and total time of the streamed scenarios."""
    lines = ["| scenario | database | TTFB median ms | total median ms |", "|---|---|--:|--:|"]
    for s in summaries:
        if s.ttfb_median_ms is not None:
            lines.append(f"| {s.scenario} | {s.database} | {number(s.ttfb_median_ms)} | {number(s.median_ms)} |")
    return lines


def render(summaries: Sequence[Summary], info: RunInfo) -> str:
    """The whole report."""
    sections = [
        "# Gateway accounting benchmark",
        "",
        f"`{info.command}` (started {info.started}, took {info.duration_s:.0f} s)",
        "",
        info.setup,
        "",
        *scenario_table(summaries),
        "",
        "## Ratios (medians)",
        "",
        "Accounting cost per request = median(priced) - median(free): reserve -> settle -> ledger row.",
        "",
        *ratio_table(summaries),
        "",
        "## Streaming",
        "",
        *stream_table(summaries),
        "",
        "## Checks",
        "",
        *[f"- {line}" for line in info.checks],
        "",
        "## Machine",
        "",
        *[f"- {line}" for line in info.machine],
    ]
    if info.notes:
        sections += ["", "## Notes", "", *[f"- {line}" for line in info.notes]]
    return "\n".join(sections) + "\n"
