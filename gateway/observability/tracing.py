"""OpenTelemetry traces (the `otel` extra), off unless `[tracing] enabled = true`.

A traced app opens a server span per request (continuing the client's `traceparent`); under it
the upstream client opens a client span per upstream call, sending `traceparent` upstream, and
each MCP tool call gets a client span too (see outgoing.py), with the GenAI semantic-convention
attributes (`gen_ai.request.model`, `gen_ai.usage.input_tokens`, ...). Child spans exist only
under a recording span, so an app without tracing pays one context lookup per call, and none at
all when OpenTelemetry is not installed.

The tracer provider is the process's global one: set up here on the first traced request (after
gunicorn forks, since its exporter owns a thread), unless something else, such as the operator's
own instrumentation or a test, already set one.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from flask import Flask

from gateway.config import TracingSettings

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the `otel` extra is not installed
    trace = None

if TYPE_CHECKING:
    from gateway.observability.request_record import RequestRecord

EXTENSION = "gateway.tracing"
TRACER = "gateway"
_provider: Any = None  # the provider set up here (flushed by close)
_setup = threading.Lock()


def installed() -> bool:
    """Whether the OpenTelemetry API is importable."""
    return trace is not None


def init_app(app: Flask, settings: TracingSettings) -> None:
    """Remember whether this app traces (checked at startup: see gateway.config.check_tracing)."""
    app.extensions[EXTENSION] = settings if settings.enabled and installed() else None


def tracer() -> Any:
    return trace.get_tracer(TRACER)


def ensure_provider(settings: TracingSettings) -> None:
    """Set up the global tracer provider once per process, unless one is set already."""
    global _provider
    if _provider is not None or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return
    with _setup:
        if _provider is not None or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": settings.service_name}
        provider = TracerProvider(resource=Resource.create(attributes))
        exporter = span_exporter(settings)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _provider = provider


def span_exporter(settings: TracingSettings) -> Any:
    """The configured exporter (None for "none": spans go only where an SDK set up elsewhere sends them)."""
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.endpoint) if settings.endpoint else OTLPSpanExporter()
    return None


def server_span(app: Flask, environ: dict[str, Any], method: str) -> Any:
    """Open and enter a request's server span (None when the app does not trace): (span, token)."""
    settings = app.extensions.get(EXTENSION)
    if settings is None:
        return None
    ensure_provider(settings)
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    parent = propagate.extract(headers)
    span = tracer().start_span(method, context=parent, kind=SpanKind.SERVER, attributes={
        "http.request.method": method, "url.path": environ.get("PATH_INFO", ""),
        "url.scheme": environ.get("wsgi.url_scheme", "http"),
    })
    return span, otel_context.attach(trace.set_span_in_context(span, parent))


def end_server_span(record: RequestRecord) -> None:
    """Name the span after its route, add status and usage, end it and leave its context."""
    if record.span is None:
        return
    span, token = record.span
    span.update_name(f"{record.method} {record.route}")
    span.set_attributes({"http.route": record.route, "http.response.status_code": record.status,
                         "gen_ai.usage.input_tokens": record.input_tokens,
                         "gen_ai.usage.output_tokens": record.output_tokens})
    if record.model:
        span.set_attribute("gen_ai.request.model", record.model)
    if record.provider:
        span.set_attribute("gen_ai.provider.name", record.provider)
    if record.status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()
    try:
        otel_context.detach(token)
    except ValueError:  # closed on another thread than it was opened on: nothing to restore there
        pass


def traced() -> bool:
    """Whether this thread works under a recording span (children are worth opening)."""
    return trace is not None and trace.get_current_span().is_recording()


def close() -> None:
    """Flush the spans of a provider set up here (gunicorn's worker_exit)."""
    if _provider is not None:
        _provider.force_flush(5000)
