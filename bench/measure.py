"""The scenarios of a run, measured side by side: probes, warm-up, JSON load, streams, slow streams.

JSON load and streams run in rounds, the contestants' order rotated each round, so machine noise
spreads over all of them; the report takes the median of the rounds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench import processes, streams, wrk
from bench.lineup import Contestant

PROMPT = [{"role": "user", "content": "Say hello"}]
CHAT_PATH, RESPONSES_PATH = "/v1/chat/completions", "/v1/responses"
BODIES = {
    ("chat", False): {"model": processes.PRICED_MODEL, "messages": PROMPT, "max_tokens": 64},
    ("chat", True): {"model": processes.STREAM_MODEL, "messages": PROMPT, "max_tokens": 64, "stream": True},
    # the gateway's Responses API always streams from the upstream, so its JSON needs the stream stub too
    ("responses", False): {"model": processes.STREAM_MODEL, "input": "Say hello", "max_output_tokens": 64},
    ("responses", True): {"model": processes.STREAM_MODEL, "input": "Say hello", "max_output_tokens": 64,
                          "stream": True},
    ("slow", True): {"model": processes.SLOW_STREAM_MODEL, "messages": PROMPT, "max_tokens": 64, "stream": True},
}
PATHS = {"chat": CHAT_PATH, "responses": RESPONSES_PATH, "slow": CHAT_PATH}
DONE_MARKERS = {"chat": b"data: [DONE]", "responses": b"response.completed", "slow": b"data: [DONE]"}
JSON_MARKERS = {"chat": b'"choices"', "responses": b'"status":"completed"'}
CONNECTIONS = (1, 64)


@dataclass(frozen=True)
class Plan:
    """How long each part runs."""

    rounds: int
    wrk_seconds: float
    stream_seconds: float
    warmup_seconds: float
    slow_streams: int
    slow_timeout_s: float


@dataclass
class Measurements:
    """Everything measured, keyed by contestant name (and api, connections)."""

    wrk: dict[tuple[str, str, int], list[wrk.WrkResult]] = field(default_factory=dict)
    streams: dict[tuple[str, str], list[tuple[list[streams.StreamSample], float]]] = field(default_factory=dict)
    slow: dict[str, tuple[list[streams.StreamSample], float]] = field(default_factory=dict)
    rss_mb: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    sent_ok: dict[str, int] = field(default_factory=dict)

    def count(self, contestant: Contestant, ok: int) -> None:
        self.sent_ok[contestant.name] = self.sent_ok.get(contestant.name, 0) + ok


def apis(contestant: Contestant) -> list[str]:
    """Chat for everyone; the Responses API for the gateway only."""
    return ["chat", "responses"] if contestant.is_gateway else ["chat"]


def stream_request(contestant: Contestant, api: str) -> streams.StreamRequest:
    return streams.stream_request(contestant.stream_port, PATHS[api], BODIES[(api, True)], contestant.headers,
                                  DONE_MARKERS[api])


def probe(contestant: Contestant, api: str, found: Measurements) -> bool:
    """One JSON and one streamed request; a failure is recorded and that scenario left out."""
    url = f"http://127.0.0.1:{contestant.json_port}{PATHS[api]}"
    try:
        answer = requests.post(url, json=BODIES[(api, False)], headers=contestant.headers, timeout=30)
        if answer.status_code != 200 or JSON_MARKERS[api] not in answer.content:
            raise RuntimeError(f"JSON answered {answer.status_code}: {answer.text[:200]}")
        samples, _ = streams.series(stream_request(contestant, api), 30, max_count=1)
        if not samples[0].ok:
            raise RuntimeError(f"stream failed: {samples[0].error}")
    except (requests.RequestException, RuntimeError) as exc:
        found.failures[(contestant.name, api)] = str(exc)
        return False
    found.count(contestant, 2)
    return True


def rotated(items: list, shift: int) -> list:
    shift %= max(len(items), 1)
    return items[shift:] + items[:shift]


class Runner:
    """Runs a plan over the contestants; `progress` gets one line per step."""

    def __init__(self, contestants: list[Contestant], plan: Plan, wrk_binary: str | None, workdir: Path,
                 progress: Callable[[str], None]) -> None:
        self.contestants, self.plan, self.wrk_binary = contestants, plan, wrk_binary
        self.workdir, self.progress = workdir, progress
        self.found = Measurements()
        self.scenarios: dict[str, list[str]] = {}

    def run(self) -> Measurements:
        """Probe, warm up, then JSON rounds, stream rounds, slow streams, and peak RSS."""
        for contestant in self.contestants:
            self.scenarios[contestant.name] = [api for api in apis(contestant) if probe(contestant, api, self.found)]
        self.warm_up()
        if self.wrk_binary:
            for index in range(self.plan.rounds):
                self.json_round(index)
        for index in range(self.plan.rounds):
            self.stream_round(index)
        for contestant in self.contestants:
            if "chat" in self.scenarios[contestant.name]:
                self.slow_streams(contestant)
        for contestant in self.contestants:
            if contestant.service is not None:
                peaks = [processes.peak_rss_mb(pid) for pid in contestant.service.worker_pids()]
                self.found.rss_mb[contestant.name] = [peak for peak in peaks if peak is not None]
        return self.found

    def script(self, contestant: Contestant, api: str) -> Path:
        body = json.dumps(BODIES[(api, False)]).encode()
        headers = {"Content-Type": "application/json", **contestant.headers}
        return wrk.write_script(self.workdir / f"wrk-{contestant.name}-{api}.lua", body, headers)

    def wrk_once(self, contestant: Contestant, api: str, connections: int, seconds: float) -> wrk.WrkResult | None:
        url = f"http://127.0.0.1:{contestant.json_port}{PATHS[api]}"
        try:
            result = wrk.run(self.wrk_binary, url, self.script(contestant, api), connections, seconds)
        except (RuntimeError, OSError) as exc:
            self.found.failures[(contestant.name, f"{api} wrk")] = str(exc)
            return None
        self.found.count(contestant, result.requests - result.bad_status)
        return result

    def warm_up(self) -> None:
        """Unmeasured load on every scenario (caches, pools, lazy imports)."""
        for contestant in self.contestants:
            self.progress(f"warm-up {contestant.label}")
            for api in self.scenarios[contestant.name]:
                if self.wrk_binary:
                    self.wrk_once(contestant, api, 16, self.plan.warmup_seconds)
                samples, _ = streams.series(stream_request(contestant, api), self.plan.warmup_seconds / 2)
                self.found.count(contestant, sum(s.ok for s in samples))

    def json_round(self, index: int) -> None:
        for connections in CONNECTIONS:
            for contestant in rotated(self.contestants, index):
                for api in self.scenarios[contestant.name]:
                    self.progress(f"round {index + 1}/{self.plan.rounds}: wrk {api} JSON, {connections} "
                                  f"connection(s), {contestant.label}")
                    result = self.wrk_once(contestant, api, connections, self.plan.wrk_seconds)
                    if result is not None:
                        self.found.wrk.setdefault((contestant.name, api, connections), []).append(result)

    def stream_round(self, index: int) -> None:
        for contestant in rotated(self.contestants, index):
            for api in self.scenarios[contestant.name]:
                self.progress(f"round {index + 1}/{self.plan.rounds}: {api} streams, 1 connection, {contestant.label}")
                samples, wall = streams.series(stream_request(contestant, api), self.plan.stream_seconds)
                self.found.count(contestant, sum(s.ok for s in samples))
                self.found.streams.setdefault((contestant.name, api), []).append((samples, wall))

    def slow_streams(self, contestant: Contestant) -> None:
        """N streams at once through a slow upstream (1 s before its first byte)."""
        self.progress(f"{self.plan.slow_streams} concurrent slow streams, {contestant.label}")
        time.sleep(1)  # let the previous contestant's connections close
        request = streams.stream_request(contestant.stream_port, CHAT_PATH, BODIES[("slow", True)],
                                         contestant.headers, DONE_MARKERS["slow"])
        samples, wall = streams.concurrent(request, self.plan.slow_streams, self.plan.slow_timeout_s)
        self.found.count(contestant, sum(s.ok for s in samples))
        self.found.slow[contestant.name] = (samples, wall)
