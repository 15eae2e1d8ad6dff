"""Renders a run as Markdown: side-by-side tables with ratios to the floor and LiteLLM, targets, machine."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import stats
from bench.lineup import Contestant
from bench.measure import Measurements
from bench.streams import StreamSample


@dataclass
class RunInfo:
    """Everything around the numbers: how the run was made and what the machine was doing."""

    command: str
    started: str
    setup: str
    slow_streams: int
    rounds: int
    duration_s: float = 0.0
    machine: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    """A table cell: fixed decimals, or n/a."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def signed(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:+,.{digits}f}"


class Numbers:
    """Read access to the measurements: medians over rounds, stream and slow-stream summaries."""

    def __init__(self, found: Measurements) -> None:
        self.found = found

    def wrk(self, name: str, api: str, connections: int, metric: str) -> float:
        runs = self.found.wrk.get((name, api, connections), [])
        return stats.median([getattr(run, metric) for run in runs])

    def stream_samples(self, name: str, api: str) -> tuple[list[StreamSample], float]:
        rounds = self.found.streams.get((name, api), [])
        return [s for samples, _ in rounds for s in samples], sum(wall for _, wall in rounds)

    def ttfb_ms(self, samples: list[StreamSample], fraction: float) -> float:
        return stats.percentile([s.ttfb_s * 1000 for s in samples if s.ok and s.ttfb_s is not None], fraction)

    def stream(self, name: str, api: str, metric: str) -> float:
        samples, wall = self.stream_samples(name, api)
        if metric == "chunks_per_s":
            return sum(s.events for s in samples if s.ok) / wall if wall else math.nan
        return self.ttfb_ms(samples, {"ttfb_p50": 0.5, "ttfb_p99": 0.99}[metric])

    def slow(self, name: str, metric: str) -> float:
        samples, wall = self.found.slow.get(name, ([], math.nan))
        if metric == "completed":
            return float(sum(s.ok for s in samples)) if samples else math.nan
        if metric == "wall_s":
            return wall
        return self.ttfb_ms(samples, {"ttfb_p50": 0.5, "ttfb_p99": 0.99}[metric])

    def rss(self, name: str) -> float:
        peaks = self.found.rss_mb.get(name, [])
        return max(peaks) if peaks else math.nan


def table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Markdown table lines: the first `left` columns left-aligned, the others right-aligned."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * left + "--:|" * (len(header) - left),
            *("| " + " | ".join(row) + " |" for row in rows)]


def ratio_cell(value: float, base: float) -> str:
    return fmt(stats.ratio(value, base), 2, "x")


def json_table(numbers: Numbers, contestants: list[Contestant]) -> list[str]:
    def w(name: str, conns: int, metric: str) -> float:
        return numbers.wrk(name, "chat", conns, metric)

    rows = []
    for c in contestants:
        rps64 = w(c.name, 64, "rps")
        rows.append([
            c.label, fmt(w(c.name, 1, "rps"), 0), fmt(w(c.name, 1, "p50_ms"), 2),
            signed(w(c.name, 1, "p50_ms") - w("direct", 1, "p50_ms"), 2), fmt(w(c.name, 1, "p99_ms"), 2),
            fmt(rps64, 0), fmt(w(c.name, 64, "p50_ms"), 1), fmt(w(c.name, 64, "p99_ms"), 1),
            ratio_cell(rps64, w("floor", 64, "rps")), ratio_cell(rps64, w("litellm", 64, "rps")),
            ratio_cell(w(c.name, 64, "p99_ms"), w("floor", 64, "p99_ms")),
        ])
    header = ["contestant", "req/s @1", "p50 @1 ms", "p50 added vs direct ms", "p99 @1 ms", "req/s @64",
              "p50 @64 ms", "p99 @64 ms", "req/s @64 / floor", "req/s @64 / LiteLLM", "p99 @64 / floor"]
    return table(header, rows)


def stream_table(numbers: Numbers, contestants: list[Contestant]) -> list[str]:
    rows = []
    direct_p50 = numbers.stream("direct", "chat", "ttfb_p50")
    for c in contestants:
        samples, _ = numbers.stream_samples(c.name, "chat")
        chunks = numbers.stream(c.name, "chat", "chunks_per_s")
        rows.append([
            c.label, f"{len(samples)} ({sum(not s.ok for s in samples)})",
            fmt(numbers.stream(c.name, "chat", "ttfb_p50"), 2),
            signed(numbers.stream(c.name, "chat", "ttfb_p50") - direct_p50, 2),
            fmt(numbers.stream(c.name, "chat", "ttfb_p99"), 2), fmt(chunks, 0),
            ratio_cell(chunks, numbers.stream("floor", "chat", "chunks_per_s")),
            ratio_cell(chunks, numbers.stream("litellm", "chat", "chunks_per_s")),
        ])
    header = ["contestant", "streams (failed)", "TTFB p50 ms", "TTFB added vs direct ms", "TTFB p99 ms",
              "chunks/s", "chunks/s / floor", "chunks/s / LiteLLM"]
    return table(header, rows)


def slow_table(numbers: Numbers, contestants: list[Contestant], count: int) -> list[str]:
    rows = []
    for c in contestants:
        rows.append([
            c.label, f"{fmt(numbers.slow(c.name, 'completed'), 0)} / {count:,}",
            fmt(numbers.slow(c.name, "ttfb_p50"), 0),
            signed(numbers.slow(c.name, "ttfb_p50") - numbers.slow("direct", "ttfb_p50"), 0),
            fmt(numbers.slow(c.name, "ttfb_p99"), 0),
            signed(numbers.slow(c.name, "ttfb_p99") - numbers.slow("direct", "ttfb_p99"), 0),
            fmt(numbers.slow(c.name, "wall_s"), 1), fmt(numbers.rss(c.name), 0),
            ratio_cell(numbers.rss(c.name), numbers.rss("floor")),
            ratio_cell(numbers.rss(c.name), numbers.rss("litellm")),
        ])
    header = ["contestant", "completed", "TTFB p50 ms", "added p50 ms", "TTFB p99 ms", "added p99 ms",
              "all done in s", "peak RSS / worker MB", "RSS / floor", "RSS / LiteLLM"]
    return table(header, rows)


def responses_table(numbers: Numbers, contestants: list[Contestant]) -> list[str]:
    rows = []
    for c in contestants:
        if not c.is_gateway:
            continue
        rps64 = numbers.wrk(c.name, "responses", 64, "rps")
        rows.append([
            c.label, fmt(numbers.wrk(c.name, "responses", 1, "rps"), 0),
            fmt(numbers.wrk(c.name, "responses", 1, "p50_ms"), 2), fmt(rps64, 0),
            fmt(numbers.wrk(c.name, "responses", 64, "p99_ms"), 1),
            ratio_cell(rps64, numbers.wrk(c.name, "chat", 64, "rps")),
            ratio_cell(rps64, numbers.wrk("floor", "chat", 64, "rps")),
            fmt(numbers.stream(c.name, "responses", "ttfb_p50"), 2),
            fmt(numbers.stream(c.name, "responses", "chunks_per_s"), 0),
        ])
    header = ["contestant", "req/s @1", "p50 @1 ms", "req/s @64", "p99 @64 ms", "req/s @64 / own chat",
              "req/s @64 / floor chat", "stream TTFB p50 ms", "stream events/s"]
    return table(header, rows)


@dataclass(frozen=True)
class Target:
    """One line of the issue's targets: a measured value against a limit."""

    text: str
    contestants: tuple[str, ...]
    measure: Callable[[Numbers, str], float]
    limit: float
    at_least: bool
    unit: str


def targets(slow_count: int) -> list[Target]:
    def rps64(n: Numbers, name: str, base: str) -> float:
        return stats.ratio(n.wrk(name, "chat", 64, "rps"), n.wrk(base, "chat", 64, "rps"))

    return [
        Target("req/s @64 / floor", ("sqlite",), lambda n, c: rps64(n, c, "floor"), 0.7, True, "x"),
        Target("req/s @64 / LiteLLM", ("sqlite",), lambda n, c: rps64(n, c, "litellm"), 3.0, True, "x"),
        Target("req/s @64 / floor", ("postgres",), lambda n, c: rps64(n, c, "floor"), 0.5, True, "x"),
        Target("p50 added over direct @1", ("sqlite", "postgres"),
               lambda n, c: n.wrk(c, "chat", 1, "p50_ms") - n.wrk("direct", "chat", 1, "p50_ms"), 2.0, False, " ms"),
        Target("p99 @64 / floor's p99", ("sqlite", "postgres"),
               lambda n, c: stats.ratio(n.wrk(c, "chat", 64, "p99_ms"), n.wrk("floor", "chat", 64, "p99_ms")),
               2.0, False, "x"),
        Target(f"slow streams completed (of {slow_count:,})", ("sqlite", "postgres"),
               lambda n, c: n.slow(c, "completed"), slow_count, True, ""),
        Target("slow-stream TTFB added p50", ("sqlite", "postgres"),
               lambda n, c: n.slow(c, "ttfb_p50") - n.slow("direct", "ttfb_p50"), 200, False, " ms"),
        Target("slow-stream TTFB added p99", ("sqlite", "postgres"),
               lambda n, c: n.slow(c, "ttfb_p99") - n.slow("direct", "ttfb_p99"), 500, False, " ms"),
        Target("peak RSS per worker", ("sqlite", "postgres"), lambda n, c: n.rss(c), 150, False, " MB"),
    ]


def target_table(numbers: Numbers, contestants: list[Contestant], slow_count: int) -> list[str]:
    labels = {c.name: c.label for c in contestants}
    rows = []
    for target in targets(slow_count):
        for name in target.contestants:
            value = target.measure(numbers, name)
            limit = f"{'>=' if target.at_least else '<='} {fmt(target.limit, 2 if target.unit == 'x' else 0)}"
            if math.isnan(value):
                verdict = "n/a"
            else:
                verdict = "PASS" if (value >= target.limit if target.at_least else value <= target.limit) else "FAIL"
            digits = 2 if target.unit == "x" else (0 if target.unit in {"", " MB"} else 1)
            rows.append([target.text, labels.get(name, name), fmt(value, digits, target.unit),
                         limit + target.unit, verdict])
    return table(["target", "contestant", "measured", "limit", "result"], rows, left=2)


def render(found: Measurements, contestants: list[Contestant], info: RunInfo) -> str:
    """The whole report."""
    numbers = Numbers(found)
    running = [c for c in contestants if not c.skipped]
    skipped = [f"{c.label}: skipped, {c.skipped}" for c in contestants if c.skipped]
    failures = [f"{name}, {scenario}: {reason}" for (name, scenario), reason in found.failures.items()]
    failures += [f"{name}, {api} JSON @{conns}: wrk saw {sum(r.errors for r in runs):,} socket errors or timeouts "
                 f"and {sum(r.bad_status for r in runs):,} non-2xx answers (left out of req/s)"
                 for (name, api, conns), runs in found.wrk.items() if any(r.errors or r.bad_status for r in runs)]
    sections = [
        "# Gateway benchmark: side by side with the floor and LiteLLM",
        "",
        f"`{info.command}` (started {info.started}, took {info.duration_s / 60:.1f} min)",
        "",
        info.setup,
        "",
        "## Targets (this run)",
        "",
        *target_table(numbers, contestants, info.slow_streams),
        "",
        f"## JSON chat completions (wrk; median of {info.rounds} round(s))",
        "",
        *json_table(numbers, running),
        "",
        "## Streaming chat completions (1 connection, streams back to back, 34 events each)",
        "",
        *stream_table(numbers, running),
        "",
        f"## {info.slow_streams:,} concurrent slow streams (the upstream waits 1 s, then streams)",
        "",
        *slow_table(numbers, running, info.slow_streams),
        "",
        "## Responses API (`/v1/responses`, gateway only; JSON with wrk, stream with 1 connection)",
        "",
        *responses_table(numbers, running),
        "",
        "## Accounting checks",
        "",
        "Rows the gateway wrote for the bench's key, counted after it stopped, against the successful requests "
        "the clients saw. Rows may exceed that count by the requests in flight when each wrk run stopped "
        "(served and recorded, not counted by wrk).",
        "",
        *[f"- {line}" for line in info.checks or ["none (no gateway ran)"]],
        "",
        "## Machine",
        "",
        *[f"- {line}" for line in info.machine],
    ]
    if skipped or failures or info.notes:
        sections += ["", "## Notes", "", *[f"- {line}" for line in [*skipped, *failures, *info.notes]]]
    return "\n".join(sections) + "\n"
