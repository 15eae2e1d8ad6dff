"""What `/readyz` checks: the database answers, an upstream is reachable, required MCP servers are up.

While some upstream is reachable, upstreams are probed (GET models, short timeouts) at most once
per `[server] ready_probe_ttl_s`, in the background, so a black-holed upstream never holds a
readiness check up. While none is (and at the first check), each check waits for a fresh round of
probes (bounded), so a gateway becomes ready as soon as an upstream answers.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from flask import Flask

from gateway.db import database

PROBE_WAIT_S = 6.0  # the upstream client's probe timeouts are 3 s


@dataclass
class Report:
    """Each check by name (True when fine) and the names that keep the gateway from being ready."""

    checks: dict[str, bool] = field(default_factory=dict)
    down: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.down

    def body(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "unavailable", "checks": self.checks, "down": self.down}


class Readiness:
    """The app's readiness checks, with the cached upstream probes."""

    EXTENSION = "gateway.readiness"

    def __init__(self, probe_ttl_s: float) -> None:
        self._ttl = probe_ttl_s
        self._lock = threading.Lock()
        self._reachable: dict[str, bool] = {}
        self._probed_at = -math.inf
        self._probing: threading.Thread | None = None

    def check(self, app: Flask) -> Report:
        """Every check, now (upstreams from the last probe)."""
        report = Report()
        add(report, "database", database_answers())
        for name, process in app.extensions["gateway.processes"].items():
            add(report, f"provider:{name}", process.is_ready())
        providers = list(app.extensions["gateway.settings"].providers)
        if providers:
            reachable = self.reachable(app.extensions["gateway.upstream"].probe, providers)
            report.checks.update({f"upstream:{name}": ok for name, ok in reachable.items()})
            if not any(reachable.values()):
                report.down += [f"upstream:{name}" for name in providers]
        settings = app.extensions["gateway.settings"]
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
