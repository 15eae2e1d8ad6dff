"""The gateway's Prometheus metrics, and the small functions the rest of the code calls to feed them.

Metrics belong to the process, not to an app: under gunicorn each worker writes its own files in
the multiprocess directory (see multiprocess.py) and `/metrics`, whichever worker answers it,
adds up every worker's, the live and the dead. So they are created once per process, on first
use (after the fork), by `metrics()`. Without `PROMETHEUS_MULTIPROC_DIR` (tests, a plain
development server) they live in this process's memory.

Labels only ever take values from the config or the code (routes, configured model ids,
deployments and providers, statuses), never a client's raw input, so their number stays bounded.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.observability import multiprocess

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOOL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """Every metric the gateway exports (names follow Prometheus conventions: base units, `_total`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def counter(name: str, text: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, text, labels, registry=registry)

        def histogram(name: str, text: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, text, labels, buckets=buckets, registry=registry)

        self.requests = counter("gateway_requests", "HTTP requests answered, by route, method, status and model.",
                                ("route", "method", "status", "model"))
        self.request_seconds = histogram("gateway_request_duration_seconds",
                                         "Time from a request's arrival to its last byte (streams included).",
                                         ("route", "model"), REQUEST_BUCKETS)
        self.first_token_seconds = histogram("gateway_time_to_first_token_seconds",
                                             "Time from a stream's arrival to the first generated token.",
                                             ("model",), REQUEST_BUCKETS)
        self.upstream_seconds = histogram("gateway_upstream_request_duration_seconds",
                                          "Time an upstream took to answer (to its headers, for streams).",
                                          ("provider",), UPSTREAM_BUCKETS)
        self.upstream_errors = counter("gateway_upstream_errors", "Failed upstream calls, by provider and kind.",
                                       ("provider", "kind"))
        self.fallbacks = counter("gateway_fallbacks", "Requests moved to their next model after an upstream failure.",
                                 ("from_model", "to_model"))
        self.tokens = counter("gateway_tokens", "Tokens billed, by model and type (input or output).",
                              ("model", "type"))
        self.credits = counter("gateway_credits_charged", "Credits charged, by model.", ("model",))
        self.open_streams = Gauge("gateway_open_streams", "SSE responses being streamed right now.",
                                  registry=registry, multiprocess_mode="livesum")
        self.tool_calls = counter("gateway_mcp_tool_calls", "MCP tool calls, by server and outcome (ok or error).",
                                  ("server", "outcome"))
        self.tool_seconds = histogram("gateway_mcp_tool_call_duration_seconds", "Time one MCP tool call took.",
                                      ("server",), TOOL_BUCKETS)
        self.server_up = Gauge("gateway_mcp_server_up", "1 while a built-in MCP server is connected in every worker.",
                               ("server",), registry=registry, multiprocess_mode="livemin")
        self.refusals = counter("gateway_refusals", "Requests refused for rate limits (429) or balance (402).",
                                ("reason",))
        self.batch_size = histogram("gateway_db_write_batch_size",
                                    "Accounting operations committed together in one transaction.",
                                    (), BATCH_SIZES)
        self.batch_seconds = histogram("gateway_db_write_batch_duration_seconds",
                                       "Time one accounting batch took: write lock, statements and commit.",
                                       (), BATCH_BUCKETS)
        self.deployment_requests = counter("gateway_deployment_requests",
                                           "Attempts on each deployment of a model, by outcome: ok, or the "
                                           "upstream error's kind (timeout, unavailable, http_429, error, ...).",
                                           ("model", "deployment", "outcome"))
        self.deployment_seconds = histogram("gateway_deployment_request_duration_seconds",
                                            "Time one attempt on a deployment took, to its answer (to the first "
                                            "event, for streams), whatever its outcome.",
                                            ("model", "deployment"), UPSTREAM_BUCKETS)
        self.deployment_series: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # deployment_request's, kept
        self.deployment_retries = counter("gateway_deployment_retries",
                                          "Failed attempts on a deployment after which the request was tried "
                                          "again (on another deployment, or the same one).", ("model", "deployment"))
        # livemax: 1 while any live worker sees it cooling; a dead worker's last view goes with it
        self.deployment_cooling = Gauge("gateway_deployment_cooling",
                                        "1 while a deployment is cooling down or on its half-open trial, 0 while "
                                        "healthy (the highest view of the live workers).",
                                        ("deployment",), registry=registry, multiprocess_mode="livemax")
        self.cache_hits = counter("gateway_cache_hits", "Response cache lookups answered from the cache.")
        self.cache_misses = counter("gateway_cache_misses", "Response cache lookups that found no fresh answer "
                                    "(backend errors included).")
        self.cache_stored_bytes = counter("gateway_cache_stored_bytes", "Bytes of answers stored in the response "
                                          "cache (answer and usage JSON).")
        self.cache_not_stored = counter("gateway_cache_not_stored", "Answers the response cache declined, by "
                                        "reason (too_large).", ("reason",))
        self.cache_evictions = counter("gateway_cache_evictions", "Entries removed from the response cache, by "
                                       "reason: expired, or size (the least recently used beyond max_entries).",
                                       ("reason",))
        self.cache_errors = counter("gateway_cache_errors", "Response cache operations skipped after a backend "
                                    "error, by operation (get, put, decode).", ("operation",))
        self.guardrail_failures = counter("gateway_guardrail_failures", "Webhook and moderation guardrail calls "
                                          "that failed, by guardrail, reason (timeout, connection, refused, "
                                          "status, malformed) and outcome (allowed: fail_open, or blocked).",
                                          ("guardrail", "reason", "outcome"))
        self.guardrail_actions = counter("gateway_guardrail_actions", "Guardrails that acted on a text, by "
                                         "guardrail, action (block, redact, log) and stage (input, output, "
                                         "tool_input, tool_output).", ("guardrail", "action", "stage"))


_metrics: Metrics | None = None
_pid = 0
_lock = threading.Lock()


def metrics() -> Metrics:
    """This process's metrics, created on first use (file-backed when PROMETHEUS_MULTIPROC_DIR is set)."""
    global _metrics, _pid
    if _metrics is None or _pid != os.getpid():
        with _lock:
            if _metrics is None or _pid != os.getpid():
                use_multiprocess_values()
                disable_created_metrics()  # `_created` series: absent in multiprocess mode, so absent here too
                _metrics, _pid = Metrics(CollectorRegistry(auto_describe=True)), os.getpid()
    return _metrics


def use_multiprocess_values() -> None:
    """File-backed values when the directory is set, even if prometheus_client was imported before it was.

    prometheus_client picks its value class when it is imported, from the environment; gunicorn's
    master imports the gateway (and so prometheus_client) before its `on_starting` hook sets the
    directory, so the choice is made again here, before this process creates its metrics.
    """
    if multiprocess.directory() and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


def render() -> tuple[bytes, str]:
    """The exposition text of every worker (or of this process alone) and its content type."""
    path = multiprocess.directory()
    if path:
        metrics()  # this worker's files exist from its first scrape on
        return multiprocess.collect(path), CONTENT_TYPE_LATEST
    return generate_latest(metrics().registry), CONTENT_TYPE_LATEST


# -- what the rest of the gateway calls ------------------------------------------------------


def observe_request(route: str, method: str, status: int, model: str, seconds: float) -> None:
    """One answered request."""
    current = metrics()
    current.requests.labels(route, method, str(status), model).inc()
    current.request_seconds.labels(route, model).observe(seconds)


def observe_first_token(model: str, seconds: float) -> None:
    """A stream's first generated token."""
    metrics().first_token_seconds.labels(model).observe(seconds)


def observe_upstream(provider: str, seconds: float, error_kind: str | None = None) -> None:
    """One upstream call (to its headers) and, if it failed, how."""
    current = metrics()
    current.upstream_seconds.labels(provider).observe(seconds)
    if error_kind is not None:
        current.upstream_errors.labels(provider, error_kind).inc()


def upstream_error(provider: str, kind: str) -> None:
    """An upstream failure found after the headers (a broken stream)."""
    metrics().upstream_errors.labels(provider, kind).inc()


def fallback_taken(from_model: str, to_model: str) -> None:
    """A request moved on to its next model."""
    metrics().fallbacks.labels(from_model, to_model).inc()


def observe_charge(model: str, input_tokens: int, output_tokens: int, credits: float) -> None:
    """A settled request: its tokens and what it cost."""
    current = metrics()
    if input_tokens:
        current.tokens.labels(model, "input").inc(input_tokens)
    if output_tokens:
        current.tokens.labels(model, "output").inc(output_tokens)
    if credits:
        current.credits.labels(model).inc(credits)


def stream_opened() -> None:
    metrics().open_streams.inc()


def stream_closed() -> None:
    metrics().open_streams.dec()


def observe_tool_call(server: str, ok: bool, seconds: float) -> None:
    """One MCP tool call and its outcome."""
    current = metrics()
    current.tool_calls.labels(server, "ok" if ok else "error").inc()
    current.tool_seconds.labels(server).observe(seconds)


def mcp_server_state(server: str, status: str) -> None:
    """A built-in MCP server changed state in this worker."""
    metrics().server_up.labels(server).set(1 if status == "available" else 0)


def refused(reason: str) -> None:
    """A request refused with 429 (rate_limited) or 402 (insufficient_balance)."""
    metrics().refusals.labels(reason).inc()


def deployment_request(model: str, deployment: str, seconds: float, error: str | None) -> None:
    """One attempt on one of a model's deployments: its time and outcome (`error`: the failure's kind, None: ok).

    Every request makes one: the labelled series are kept per (model, deployment, outcome), not looked up again.
    """
    current = metrics()
    key = (model, deployment, error or "ok")
    series = current.deployment_series.get(key)
    if series is None:
        series = current.deployment_series[key] = (current.deployment_requests.labels(*key),
                                                   current.deployment_seconds.labels(model, deployment))
    series[0].inc()
    series[1].observe(seconds)


def deployment_retry(model: str, deployment: str) -> None:
    """An attempt on `deployment` failed and the request goes on to another attempt."""
    metrics().deployment_retries.labels(model, deployment).inc()


def deployment_status(deployment: str, status: str) -> None:
    """This worker's view of a deployment's health changed: healthy (0), or cooling, half_open or trial (1)."""
    metrics().deployment_cooling.labels(deployment).set(0 if status == "healthy" else 1)


@contextlib.contextmanager
def observed_write_batch(size: int) -> Iterator[None]:
    """Time one accounting batch of `size` operations (the accounting writer wraps its transaction in it)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        current = metrics()
        current.batch_size.observe(size)
        current.batch_seconds.observe(time.perf_counter() - started)


def cache_lookup(hit: bool) -> None:
    """One response cache lookup: a hit or a miss."""
    current = metrics()
    (current.cache_hits if hit else current.cache_misses).inc()


def cache_stored(size: int, expired: int, evicted: int) -> None:
    """An answer of `size` bytes stored; the store removed `expired` and `evicted` (beyond the bound) entries."""
    current = metrics()
    current.cache_stored_bytes.inc(size)
    if expired:
        current.cache_evictions.labels("expired").inc(expired)
    if evicted:
        current.cache_evictions.labels("size").inc(evicted)


def cache_not_stored(reason: str) -> None:
    """An answer the cache declined (too_large)."""
    metrics().cache_not_stored.labels(reason).inc()


def cache_error(operation: str) -> None:
    """A cache operation skipped after an error (get, put or decode)."""
    metrics().cache_errors.labels(operation).inc()


def guardrail_acted(guardrail: str, action: str, stage: str) -> None:
    """A guardrail blocked, redacted or logged a text at a stage (gateway.guardrails)."""
    metrics().guardrail_actions.labels(guardrail, action, stage).inc()


def guardrail_failed(guardrail: str, reason: str, outcome: str) -> None:
    """A webhook or moderation guardrail call failed; the text was allowed (fail open) or blocked."""
    metrics().guardrail_failures.labels(guardrail, reason, outcome).inc()
