"""The router: which deployment each attempt goes to, retries with backoff, and what every attempt teaches.

`Router.call(candidates, send)` takes the prepared candidates (the model, then the client's `models`
fallbacks, each prepared on its first deployment) and a `send` that makes one upstream call. For each
model it picks a deployment (gateway.upstream.balance over this worker's load and the shared health),
prepares the request for it, and sends. A connection failure, a timeout before the first byte, a 429,
a 5xx, an overloaded provider or a rejected credential is retried: on another deployment when one is
left, else on the same one after a capped, jittered exponential backoff (at least its Retry-After),
`retries` times within `retry_budget_s`; then the next candidate model. Any other error is the
request's own and is raised at once. A stream counts as answered once its first event arrived (or
the keep-alive interval passed without one, when the client must start hearing from us): nothing is
retried after a byte may have reached the client.

Every failure is told to the shared health (gateway.upstream.health_store), which cools a failing
deployment down for every worker and host; a success after a failure clears it; a healthy request
reads health from memory only.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from gateway.config import ProviderSettings, Settings
from gateway.errors import GatewayError, UpstreamError, UpstreamOverloaded, UpstreamRejected
from gateway.observability import metrics
from gateway.observability.outgoing import error_kind
from gateway.observability.wsgi_middleware import fallback_taken
from gateway.upstream.balance import DeploymentView, choose
from gateway.upstream.client import UpstreamClient, UpstreamStream
from gateway.upstream.cooldown import HEALTHY, Health
from gateway.upstream.health_store import HealthBoard
from gateway.upstream.load import LoadBoard
from gateway.upstream.prepared import PreparedRequest
from gateway.upstream.routing import Deployment, Route, deployments_of

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRYABLE_STATUSES = (408, 409, 429)  # a 4xx that is the deployment's state, not the request's fault
UNAVAILABLE = ("cooling", "trial")  # statuses that take no request (a half-open one takes its trial)
STATIC_STRATEGIES = frozenset({"weighted", "ordered"})  # picks that read only weights, priorities and order


class NoAvailableDeployment(UpstreamOverloaded):
    """Every deployment of the model is cooling down: 503 with Retry-After; fallbacks move on."""

    code = "no_available_deployment"


@dataclass(frozen=True)
class DeploymentState:
    """One deployment as the admin API, the dashboard and readiness show it."""

    model_id: str
    deployment: str
    provider: str
    upstream_model: str
    weight: float
    priority: int
    status: str  # healthy | cooling | half_open | trial
    cooling_until: float | None  # epoch seconds, while cooling
    failures: int  # counted in the current window
    in_flight: int  # on this worker
    ttft_ms: float | None  # this worker's moving average time to first token


def retryable(error: GatewayError) -> bool:
    """Whether another attempt may succeed: the deployment failed, the request itself was not refused."""
    if isinstance(error, UpstreamRejected):
        return error.status in RETRYABLE_STATUSES
    return isinstance(error, UpstreamError)


def retry_after_s(error: GatewayError, now: float) -> float | None:
    """The error's Retry-After in seconds (a number or an HTTP date), None without one."""
    value = error.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(email.utils.parsedate_to_datetime(value).timestamp() - now, 0.0)
    except (TypeError, ValueError):
        return None


@lru_cache(maxsize=1024)
def unlimited_views(deployments: tuple[Deployment, ...]) -> tuple[DeploymentView, ...] | None:
    """The views of healthy deployments without rpm, tpm or concurrency limits (what a weighted or ordered pick
    reads of them never changes: built once per model); None when one has a limit."""
    if any(d.settings.rpm is not None or d.settings.tpm is not None or d.settings.max_concurrency is not None
           for d in deployments):
        return None
    return tuple(DeploymentView(d.name, d.settings.weight, d.settings.priority, True, False, 0, None)
                 for d in deployments)


def backoff_s(attempt: int, base_s: float, cap_s: float, draw: float) -> float:
    """Full-jitter exponential backoff before the `attempt`-th retry of one deployment (1 first)."""
    return draw * min(cap_s, base_s * 2 ** (attempt - 1))


class Router:
    """Picks deployments, retries, and records outcomes; one per worker process, shared by its threads."""

    def __init__(self, settings: Settings, client: UpstreamClient, health: HealthBoard, load: LoadBoard,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        self._settings = settings
        self.client = client  # the sends of callers use it
        self._providers: Mapping[str, ProviderSettings] = settings.providers
        self._routing = settings.routing
        self._first_event_wait_s = settings.server.keepalive_interval_s
        self.health = health
        self.load = load
        self._clock = clock
        self._sleep = sleep
        self._random = (rng or random.Random()).random

    def call(self, candidates: list[PreparedRequest], send: Callable[[PreparedRequest], T]) -> tuple[Route, T]:
        """Send to the candidates' deployments until one answers; the route that answered, with the attempts made."""
        attempts = 0
        error: GatewayError | None = None
        tried: Route | None = None
        for position, prepared in enumerate(candidates):
            route = prepared.route
            started = time.monotonic()  # each model's retries have their own budget
            failed: dict[str, float | None] = {}  # deployments that failed this request -> their Retry-After
            for retry in range(route.settings.retries + 1):
                deployment = self._pick(route, prepared.held_input_tokens, failed)
                if deployment is None:
                    error = self._none_available(route)
                    break
                if deployment.name in failed:  # no other deployment left: the same one, after a backoff
                    wait = max(backoff_s(retry, self._routing.backoff_s, self._routing.max_backoff_s, self._random()),
                               failed[deployment.name] or 0.0)
                    if time.monotonic() - started + wait > route.settings.retry_budget_s:
                        break
                    self._sleep(wait)
                attempts += 1
                chosen = tried = route.on(deployment)
                try:
                    outcome = self._attempt(chosen, prepared, send)
                except GatewayError as refused:  # the request's own fault: its row names the deployment that said so
                    refused.tried = chosen.after(attempts)
                    raise
                if not isinstance(outcome, GatewayError):
                    return chosen.after(attempts), outcome
                error = outcome
                failed[deployment.name] = retry_after = retry_after_s(outcome, self._clock())
                self.health.failed(deployment.name, retry_after)
                if time.monotonic() - started >= route.settings.retry_budget_s:
                    break
                if retry < route.settings.retries:
                    metrics.deployment_retry(route.model_id, deployment.name)
            if position < len(candidates) - 1:
                after = candidates[position + 1].route.model_id
                log.warning("model %s failed (%s); trying %s", route.model_id, error and error.code, after)
                fallback_taken(route.model_id, after)
        assert error is not None, "candidates must not be empty"
        error.tried = tried.after(attempts) if tried is not None else None
        raise error

    def has_room(self, route: Route, tokens: int, part: float) -> bool:
        """Whether some deployment of the route is below `part` of its limits on this worker (batch lines wait
        until one is: the rest of each deployment's limits is kept for live requests)."""
        return any(not self.load.at_limit(deployment, tokens, part) for deployment in route.deployments)

    def _attempt(self, route: Route, prepared: PreparedRequest, send: Callable[[PreparedRequest], T]) -> T | GatewayError:
        """One call on the route's deployment: its answer, or the retryable error it failed with (others raise).

        The caller tells the health of a failure (with its Retry-After); a success here ends a cooldown.
        """
        deployment = route.deployment
        sent = prepared.on(route, self._providers)
        release = self.load.begin(deployment, sent.held_input_tokens + sent.held_output_tokens)
        began = time.monotonic()
        try:
            answer = send(sent)
            if isinstance(answer, UpstreamStream):
                answer.wait_first_event(self._first_event_wait_s)
        except GatewayError as error:
            release()
            metrics.deployment_request(route.model_id, deployment.name, time.monotonic() - began, error_kind(error))
            if not retryable(error):
                raise
            log.warning("deployment %s of %s failed (%s)", deployment.name, route.model_id, error.code)
            return error
        except BaseException:
            release()
            raise
        seconds = time.monotonic() - began
        self.load.observe_ttft(deployment.name, seconds, self._routing.latency_decay)
        metrics.deployment_request(route.model_id, deployment.name, seconds, None)
        if isinstance(answer, UpstreamStream):
            answer.on_close(release)  # a stream is in flight until it ends
        elif isinstance(answer, Future):
            answer.add_done_callback(lambda _: release())  # a JSON call on the reader pool (its errors: not retried)
        else:
            release()
        self.health.succeeded(deployment.name)
        return answer

    def _pick(self, route: Route, tokens: int, failed: Mapping[str, float | None]) -> Deployment | None:
        """The deployment for the next attempt: one not yet failed if any is available, else a failed one."""
        deployments = route.deployments
        if len(deployments) == 1:
            return deployments[0]  # a lone deployment is never skipped: there is nowhere else to go
        strategy, health = route.settings.routing, self.health.health
        if not failed and strategy in STATIC_STRATEGIES:  # the usual request: no view to build
            views = unlimited_views(deployments)
            if views is not None and all(health(deployment.name) == HEALTHY for deployment in deployments):
                return deployments[choose(strategy, views, self._random(), self._routing.latency_exploration)]
        now = self._clock()
        statuses = [health(deployment.name).status(now) for deployment in deployments]
        for fresh_only in (True, False):
            pool = [index for index, deployment in enumerate(deployments)
                    if not fresh_only or deployment.name not in failed]
            while pool:
                views = [self._view(deployments[index], statuses[index], tokens) for index in pool]
                choice = choose(strategy, views, self._random(), self._routing.latency_exploration)
                if choice is None:
                    break
                chosen = deployments[pool[choice]]
                if statuses[pool[choice]] != "half_open" or self.health.claim_trial(chosen.name, self._lease_s(chosen)):
                    return chosen
                statuses[pool[choice]] = "trial"  # another request holds the trial
            if not failed:
                break  # the second pass would see the same pool
        return None

    def _view(self, deployment: Deployment, status: str, tokens: int) -> DeploymentView:
        """What `choose` reads of one deployment now: its settings, the shared status, this worker's load."""
        settings, load = deployment.settings, self.load
        return DeploymentView(deployment.name, settings.weight, settings.priority, status not in UNAVAILABLE,
                              load.at_limit(deployment, tokens), load.in_flight(deployment.name),
                              load.ttft(deployment.name))

    def _lease_s(self, deployment: Deployment) -> float:
        """How long a claimed trial keeps others off the deployment: its call's read timeout."""
        return deployment.settings.timeout_s or self._providers[deployment.provider].timeout_s

    def _none_available(self, route: Route) -> NoAvailableDeployment:
        now = self._clock()
        ends = [self.health.health(deployment.name).cooling_until for deployment in route.deployments]
        wait = max(min((end for end in ends if end > now), default=now + 1.0) - now, 1.0)
        return NoAvailableDeployment(
            f"Every deployment of {route.model_id!r} is cooling down after failures; retry after {wait:.0f} s.",
            headers={"Retry-After": str(int(wait + 0.999))})

    def deployment_states(self) -> list[DeploymentState]:
        """Every configured deployment with its shared health and this worker's load."""
        now = self._clock()
        states = []
        for model_id, model in self._settings.models.items():
            for deployment in deployments_of(model_id, model):
                health: Health = self.health.health(deployment.name)
                ttft = self.load.ttft(deployment.name)
                states.append(DeploymentState(
                    model_id, deployment.name, deployment.provider, deployment.upstream_model,
                    deployment.settings.weight, deployment.settings.priority, health.status(now),
                    health.cooling_until if health.cooling_until > now else None, health.failures,
                    self.load.in_flight(deployment.name), None if ttft is None else ttft * 1000))
        return states
