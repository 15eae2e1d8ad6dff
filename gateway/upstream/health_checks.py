"""Active health checks: providers with `health_check` set are checked every `health_interval_s`.

`models` asks the provider for its model list (UpstreamClient.probe: an answer below 500 is up) and
judges every deployment on it at once; `completion` sends each deployment on it a 1-token chat
completion (not metered) and judges each by its own answer, failing it only for what the router
would retry (gateway.upstream.router.retryable: a connection failure, a timeout, a 429, a 5xx, a
rejected credential); a 400 means the provider answered.

A failed check cools the deployment in the shared health (gateway.upstream.health_store) until the
next check is due at the latest (`failed(name, check_cooldown_s(interval))`, as a Retry-After
would), so a dead provider stops taking traffic after one check. Counted as a plain failure instead,
checks alone would never cool it with the defaults: three failures within `window_s` (60 s) from
checks every 30 s. The next passing check ends the cooldown (`succeeded`). A passing check never
clears a cooldown the checks did not cause (a 429's Retry-After stays honoured).

One daemon thread per worker process runs every check; each wait is the interval with ±10 %
jitter, and the first ones are spread over the first interval, so workers do not check in step.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gateway.config import ProviderSettings, Settings
from gateway.errors import GatewayError
from gateway.upstream.router import retryable
from gateway.upstream.routing import Deployment, deployments_of
from gateway.upstream.wire import CHAT_PATH

if TYPE_CHECKING:
    from gateway.upstream.client import UpstreamClient
    from gateway.upstream.health_store import HealthBoard

log = logging.getLogger(__name__)
JITTER = 0.1  # each wait is the interval times a factor in [1 - JITTER, 1 + JITTER)
CLOSE_WAIT_S = 5.0  # how long close() waits for a check in progress
PING = [{"role": "user", "content": "ping"}]


@dataclass(frozen=True)
class CheckTarget:
    """One provider's check: how it is checked, how often, and the deployments it judges."""

    provider: str
    kind: Literal["models", "completion"]
    interval_s: float
    deployments: tuple[Deployment, ...]


def check_targets(settings: Settings) -> list[CheckTarget]:
    """The providers to check, each with the deployments on it (a name shared by models: once)."""
    on_provider: dict[str, dict[str, Deployment]] = {}
    for model_id, model in settings.models.items():
        for deployment in deployments_of(model_id, model):
            on_provider.setdefault(deployment.provider, {}).setdefault(deployment.name, deployment)
    return [
        CheckTarget(name, provider.health_check, provider.health_interval_s,
                    tuple(on_provider.get(name, {}).values()))
        for name, provider in settings.providers.items()
        if provider.health_check != "none" and on_provider.get(name)
    ]


def jittered(interval_s: float, draw: float) -> float:
    """The wait before a check: the interval, off by up to ±JITTER of it (draw: uniform in [0, 1))."""
    return interval_s * (1 - JITTER + 2 * JITTER * draw)


def check_cooldown_s(interval_s: float) -> float:
    """How long a failed check cools its deployments: until the next check, however late its jitter makes it."""
    return interval_s * (1 + JITTER)


def completion_timeout_s(deployment: Deployment, provider: ProviderSettings, interval_s: float) -> float:
    """A completion check's read timeout: the deployment's own, never past the next check."""
    return min(deployment.settings.timeout_s or provider.timeout_s, interval_s)


class HealthChecks:
    """The worker's active checks: `start()` after the fork, `close()` at worker exit (both idempotent)."""

    def __init__(self, settings: Settings, client: UpstreamClient, board: HealthBoard,
                 draw: Callable[[], float] = random.random) -> None:
        self._providers = settings.providers
        self._targets = check_targets(settings)
        self._client = client
        self._board = board
        self._draw = draw
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failing: set[str] = set()  # deployments the checks cooled (only they are cleared by a check)

    @property
    def targets(self) -> list[CheckTarget]:
        """What is checked (empty: no provider sets `health_check`, and no thread starts)."""
        return list(self._targets)

    def start(self) -> None:
        """Start the checking thread, once, if any provider is checked."""
        with self._lock:
            if self._thread is not None or self._stop.is_set() or not self._targets:
                return
            self._thread = threading.Thread(target=self._run, name="gateway-health-checks", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop checking (a check in progress ends within its timeouts); later start() does nothing."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(CLOSE_WAIT_S)

    def _run(self) -> None:
        now = time.monotonic()
        due = {target.provider: now + target.interval_s * self._draw() for target in self._targets}
        while not self._stop.is_set():
            target = min(self._targets, key=lambda each: due[each.provider])
            if self._stop.wait(max(due[target.provider] - time.monotonic(), 0.0)):
                return
            try:
                self.check(target)
            except Exception:  # one bad check must not end the checks
                log.exception("health check of provider %s failed unexpectedly", target.provider)
            due[target.provider] = max(due[target.provider] + jittered(target.interval_s, self._draw()),
                                       time.monotonic())

    def check(self, target: CheckTarget) -> dict[str, bool]:
        """Check one provider now and record the outcome; each deployment's name -> whether it passed."""
        if target.kind == "models":
            up = self._client.probe(target.provider)
            passed = {deployment.name: up for deployment in target.deployments}
        else:
            passed = {deployment.name: self._completes(target, deployment) for deployment in target.deployments}
        for name, ok in passed.items():
            self._record(name, ok, target.interval_s)
        return passed

    def _completes(self, target: CheckTarget, deployment: Deployment) -> bool:
        """Whether a 1-token completion on the deployment got an answer that is not the deployment's failure."""
        body = {"model": deployment.upstream_model, "messages": PING, "max_tokens": 1}
        timeout_s = completion_timeout_s(deployment, self._providers[target.provider], target.interval_s)
        try:
            self._client.post_json(target.provider, CHAT_PATH, body, read_timeout_s=timeout_s)
        except GatewayError as error:
            if retryable(error):
                log.warning("health check: deployment %s failed (%s)", deployment.name, error.code)
                return False
        return True

    def _record(self, name: str, ok: bool, interval_s: float) -> None:
        """Cool a failing deployment until the next check; clear one the checks cooled once it passes."""
        if not ok:
            self._failing.add(name)
            self._board.failed(name, check_cooldown_s(interval_s))
        elif name in self._failing:
            self._failing.discard(name)
            self._board.succeeded(name)
