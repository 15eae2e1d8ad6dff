"""What `/readyz` checks: the database answers, every model can be served, required MCP servers are up.

A model can be served while at least one of its deployments is ready: its provider answers the
probe and the deployment takes requests (healthy, or half-open with its trial to claim; not cooling
down). The deployments' states come from a callable given by whoever builds the checks (the
router's `deployment_states`: observability does not import upstream); without one, every
configured deployment counts as healthy and the probes alone decide.

While some upstream is reachable, upstreams are probed (GET models, short timeouts) at most once
per `[server] ready_probe_ttl_s`, in the background, so a black-holed upstream never holds a
readiness check up. While none is (and at the first check), each check waits for a fresh round of
probes (bounded), so a gateway becomes ready as soon as an upstream answers.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import Flask

from gateway.config import Settings, deployment_names, model_deployments
from gateway.db import database

PROBE_WAIT_S = 6.0  # the upstream client's probe timeouts are 3 s
SERVING_STATUSES = frozenset({"healthy", "half_open"})  # the deployment statuses that take requests


class DeploymentStatus(Protocol):
    """What readiness reads of one deployment's state (gateway.upstream.router.DeploymentState has it)."""

    @property
    def model_id(self) -> str: ...

    @property
    def deployment(self) -> str: ...

    @property
    def provider(self) -> str: ...

    @property
    def status(self) -> str: ...


DeploymentStates = Callable[[], Iterable[DeploymentStatus]]


@dataclass(frozen=True)
class ConfiguredDeployment:
    """A deployment as the config lists it, counted healthy (readiness given no deployment states)."""

    model_id: str
    deployment: str
    provider: str
    status: str = "healthy"


def configured_deployments(settings: Settings) -> list[ConfiguredDeployment]:
    """Every deployment of every model, healthy."""
    return [
        ConfiguredDeployment(model_id, name, deployment.provider)
        for model_id, model in settings.models.items()
        for name, deployment in zip(deployment_names(model_id, model), model_deployments(model_id, model),
                                    strict=True)
    ]


def model_readiness(states: Iterable[DeploymentStatus], reachable: dict[str, bool]) -> dict[str, dict[str, Any]]:
    """Each model: ready while one of its deployments is (provider reachable, status serving), with the counts."""
    models: dict[str, dict[str, Any]] = {}
    for state in states:
        model = models.setdefault(state.model_id, {"ready": False, "deployments": 0, "ready_deployments": 0})
        model["deployments"] += 1
        if reachable.get(state.provider, False) and state.status in SERVING_STATUSES:
            model["ready_deployments"] += 1
            model["ready"] = True
    return models


@dataclass
class Report:
    """Each check by name (True when fine), each model's readiness, and the names that keep the gateway unready."""

    checks: dict[str, bool] = field(default_factory=dict)
    down: list[str] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.down

    def body(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "unavailable", "checks": self.checks, "down": self.down,
                "models": self.models}


class Readiness:
    """The app's readiness checks, with the cached upstream probes."""

    EXTENSION = "gateway.readiness"

    def __init__(self, probe_ttl_s: float, deployment_states: DeploymentStates | None = None) -> None:
        self._ttl = probe_ttl_s
        self._deployment_states = deployment_states
        self._lock = threading.Lock()
        self._reachable: dict[str, bool] = {}
        self._probed_at = -math.inf
        self._probing: threading.Thread | None = None

    def check(self, app: Flask) -> Report:
        """Every check, now (upstreams from the last probe, deployments from their shared states)."""
        report = Report()
        settings = app.extensions["gateway.settings"]
        add(report, "database", database_answers())
        for name, process in app.extensions["gateway.processes"].items():
            add(report, f"provider:{name}", process.is_ready())
        providers = list(settings.providers)
        reachable = self.reachable(app.extensions["gateway.upstream"].probe, providers) if providers else {}
        report.checks.update({f"upstream:{name}": ok for name, ok in reachable.items()})
        states = self._deployment_states() if self._deployment_states else configured_deployments(settings)
        report.models = model_readiness(states, reachable)
        report.down += [f"model:{model_id}" for model_id, model in report.models.items() if not model["ready"]]
        required = [label for label, server in settings.mcpServers.items() if server.required]
        if required:
            statuses = {row["label"]: row["status"] for row in app.extensions["gateway.mcp"].servers.statuses()}
            for label in required:
                add(report, f"mcp:{label}", statuses.get(label) == "available")
        return report

    def reachable(self, probe: Callable[[str], bool], providers: list[str]) -> dict[str, bool]:
        """Each provider's last probe; a new round once the last is too old, or found none reachable."""
        with self._lock:
            unready = not any(self._reachable.values())
            if (unready or time.monotonic() - self._probed_at >= self._ttl) and self._probing is None:
                self._probing = threading.Thread(target=self._probe, args=(probe, providers),
                                                 name="gateway-readiness", daemon=True)
                self._probing.start()
            waited_for = self._probing if unready else None
        if waited_for is not None:
            waited_for.join(PROBE_WAIT_S)
        return {name: self._reachable.get(name, False) for name in providers}

    def _probe(self, probe: Callable[[str], bool], providers: list[str]) -> None:
        results = dict.fromkeys(providers, False)
        try:
            with ThreadPoolExecutor(len(providers), thread_name_prefix="gateway-probe") as pool:
                results = dict(zip(providers, pool.map(probe, providers), strict=True))
        finally:
            with self._lock:
                self._reachable, self._probed_at, self._probing = results, time.monotonic(), None


def add(report: Report, name: str, ok: bool) -> None:
    report.checks[name] = ok
    if not ok:
        report.down.append(name)


def database_answers() -> bool:
    """`SELECT 1` on the app's database."""
    try:
        database.execute_sql("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False
    return True
