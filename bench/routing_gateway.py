"""The gateway's CPU per request, end to end: a one-deployment model beside three-deployment models.

The real `gateway serve` (gunicorn gthread, one worker by default) on a SQLite file, every model on
the same fast stub (`bench.upstream`): `route-one` has one deployment; `route-three-<strategy>` has
three (three providers with the stub's address), one model per strategy; `route-one-again` is a copy of
`route-one`, a control: what it "adds" over `route-one` is the measurement's noise. Requests go one at a time
on one keep-alive connection, the models taking turns in a shuffled order each cycle, so drift and
background work fall on all of them alike; workers are never recycled during the run. A request's CPU is what every thread of the gateway's processes (master and workers)
spent on a CPU between just before it was sent and just after its answer was read
(/proc/<pid>/task/<tid>/schedstat, nanoseconds): its own work, plus whatever a background thread
(the accounting writer, the health copy's refresh) did meanwhile.
"""

from __future__ import annotations

import http.client
import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import processes
from bench.stats import percentile
from tests.live_gateway import children

ONE = "route-one"
CONTROL = "route-one-again"  # the same as ONE: the difference between them is noise
BOOTSTRAP_ROUNDS = 400
STRATEGIES = ("weighted", "least_busy", "latency", "ordered")
REPLICAS = ("json", "replica-b", "replica-c")  # `json` is the bench config's own provider
BODY = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}


def three(strategy: str) -> str:
    """The three-deployment model of a strategy."""
    return f"route-three-{strategy}"


def routing_config(database_url: str, port: int) -> str:
    """The bench's gateway config plus the routing models: one deployment, and three per strategy."""
    prices = "\n".join(f"{name} = {value}" for name, value in processes.PRICES.items())
    lines = [processes.gateway_config(database_url, port), "[server]\nmax_requests = 0\n"]
    lines += [f'[providers."{name}"]\nbase_url = "http://127.0.0.1:{port}/v1"\ntimeout_s = 60\n'
              for name in REPLICAS[1:]]
    lines += [f'[models."{model}"]\nprovider = "json"\nupstream_model = "{model}"\n{prices}\nmax_output_tokens = 64\n'
              for model in (ONE, CONTROL)]
    for strategy in STRATEGIES:
        lines.append(f'[models."{three(strategy)}"]\nrouting = "{strategy}"\n{prices}\nmax_output_tokens = 64\n')
        # its own upstream model id, so its deployments' names (and health) are its own; the stub answers any
        lines += [f'[[models."{three(strategy)}".deployments]]\nprovider = "{name}"\n'
                  f'upstream_model = "{three(strategy)}"\n' for name in REPLICAS]
    return "\n".join(lines)


def tree_cpu_ns(pids: list[int]) -> int:
    """Nanoseconds on a CPU of every thread of these processes, as of now."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that just ended
    return total


@dataclass
class Client:
    """One keep-alive connection to the gateway with the bench's key."""

    port: int
    secret: str
    connection: http.client.HTTPConnection | None = None

    def chat(self, model: str) -> None:
        """One JSON chat completion; raises unless it answered 200."""
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        body = json.dumps({"model": model, **BODY})
        self.connection.request("POST", "/v1/chat/completions", body,
                                {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"})
        response = self.connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"{model}: gateway answered {response.status}: {payload[:300]!r}")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def measure(client: Client, master: int, models: list[str], requests: int, seed: int = 27) -> dict[str, list[float]]:
    """CPU microseconds of each request, per model, the models taking turns (shuffled each cycle)."""
    pids = [master, *children(master)]  # the same processes throughout: no worker is recycled
    samples: dict[str, list[float]] = {model: [] for model in models}
    order, shuffle = list(models), random.Random(seed).shuffle
    for _ in range(requests):
        shuffle(order)
        for model in order:
            before = tree_cpu_ns(pids)
            client.chat(model)
            samples[model].append((tree_cpu_ns(pids) - before) / 1000)
    return samples


def added_interval(values: list[float], base: list[float], seed: int = 27) -> tuple[float, float]:
    """A 95 % bootstrap interval of median(values) - median(base)."""
    draw = random.Random(seed).choices
    differences = sorted(percentile(draw(values, k=len(values)), 0.5) - percentile(draw(base, k=len(base)), 0.5)
                         for _ in range(BOOTSTRAP_ROUNDS))
    return percentile(differences, 0.025), percentile(differences, 0.975)


def summary(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """p50, p99 and mean per model, and the p50 added over the one-deployment model with its 95 % interval."""
    base = samples[ONE]
    found = {}
    for model, values in samples.items():
        low, high = added_interval(values, base) if model != ONE else (0.0, 0.0)
        found[model] = {"p50_us": percentile(values, 0.5), "p99_us": percentile(values, 0.99),
                        "mean_us": sum(values) / len(values),
                        "p50_added_us": percentile(values, 0.5) - percentile(base, 0.5),
                        "added_low_us": low, "added_high_us": high}
    return found


def run(requests: int = 1000, warmup: int = 100, workers: int = 1, threads: int = 8) -> dict[str, dict[str, float]]:
    """Start the stub and the gateway, warm up, measure every model; the summary per model."""
    models = [ONE, CONTROL, *(three(strategy) for strategy in STRATEGIES)]
    upstream, port = processes.start_upstream()
    service, client = None, None
    try:
        with tempfile.TemporaryDirectory() as folder:
            workdir = Path(folder)
            config = workdir / "gateway.toml"
            config.write_text(routing_config(f"sqlite:///{workdir / 'gateway.db'}", port))
            _, secret = processes.create_key(config, "routing bench", processes.CREDITS)
            service = processes.gateway_service("gateway", config, workdir, workers, threads).start()
            service.wait_ready()
            client = Client(service.port, secret)
            measure(client, service.process.pid, models, warmup)
            samples = measure(client, service.process.pid, models, requests)
    finally:
        if client is not None:
            client.close()
        if service is not None:
            service.stop()
        processes.stop_process(upstream)
    return summary(samples)
