"""Calls the gateway makes, observed: upstream model calls and MCP tool calls (metrics and client spans)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from gateway.errors import GatewayError, UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from gateway.observability import metrics, tracing

OPERATIONS = {"chat/completions": "chat", "completions": "text_completion", "embeddings": "embeddings"}


def error_kind(error: GatewayError) -> str:
    """The `kind` label of an upstream failure."""
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamUnavailable):
        return "unavailable"
    if isinstance(error, UpstreamRejected):
        return f"http_{error.status}"
    return "stream" if "stream" in error.message else "error"


class UpstreamCall:
    """One upstream call: its latency and errors by provider; a client span when the request is traced."""

    def __init__(self, provider: str, path: str, body: Any, url: str) -> None:
        self.provider = provider
        self.url = url
        self.on_end: Callable[[], None] | None = None  # run once when the call ends, however it ends
        self.started = time.perf_counter()
        self.headers: dict[str, str] = {}
        self.span = self._open_span(path, body, url) if tracing.traced() else None
        self.ended = False

    def _open_span(self, path: str, body: Any, url: str) -> Any:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind

        model = body.get("model") if isinstance(body, dict) else None
        operation = OPERATIONS.get(path.strip("/"), path.strip("/"))
        attributes = {"gen_ai.operation.name": operation, "gen_ai.provider.name": self.provider,
                      "server.address": url.split("/")[2] if "://" in url else url, "url.full": url}
        if isinstance(model, str):
            attributes["gen_ai.request.model"] = model
        for field, name in (("max_tokens", "gen_ai.request.max_tokens"), ("temperature", "gen_ai.request.temperature")):
            if isinstance(body, dict) and isinstance(body.get(field), int | float):
                attributes[name] = body[field]
        span = tracing.tracer().start_span(f"{operation} {model or ''}".strip(), kind=SpanKind.CLIENT,
                                           attributes=attributes)
        propagate.inject(self.headers, context=trace.set_span_in_context(span))
        return span

    def answered(self, status: int) -> None:
        """The upstream's headers arrived."""
        metrics.observe_upstream(self.provider, time.perf_counter() - self.started)
        if self.span is not None:
            self.span.set_attribute("http.response.status_code", status)

    def failed(self, error: GatewayError, answered: bool = False, status: int | None = None) -> None:
        """The call failed: before its headers, with an error `status`, or after its headers (`answered`)."""
        kind = f"http_{status}" if status else error_kind(error)
        if answered:
            metrics.upstream_error(self.provider, kind)
        else:
            metrics.observe_upstream(self.provider, time.perf_counter() - self.started, kind)
        if self.span is not None and not self.ended:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_attribute("error.type", error.code or type(error).__name__)
            self.span.set_status(Status(StatusCode.ERROR, error.message[:200]))
        self.end()

    def finished(self, answer: Any) -> None:
        """The whole answer is in: a decoded JSON body, or the last SSE data of a stream (usage, model)."""
        if self.span is not None and not self.ended:
            if isinstance(answer, str):
                answer = last_chunk(answer)
            if isinstance(answer, dict):
                self.span.set_attributes(answer_attributes(answer))
        self.end()

    def end(self) -> None:
        if self.span is not None and not self.ended:
            self.span.end()
        if self.on_end is not None and not self.ended:
            self.on_end()
        self.ended = True


def last_chunk(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def answer_attributes(answer: dict[str, Any]) -> dict[str, Any]:
    """GenAI attributes of a completion or of a stream's last chunk."""
    attributes: dict[str, Any] = {}
    if isinstance(answer.get("model"), str):
        attributes["gen_ai.response.model"] = answer["model"]
    if isinstance(answer.get("id"), str):
        attributes["gen_ai.response.id"] = answer["id"]
    usage = answer.get("usage")
    if isinstance(usage, dict):
        for field, name in (("prompt_tokens", "gen_ai.usage.input_tokens"),
                            ("completion_tokens", "gen_ai.usage.output_tokens")):
            if isinstance(usage.get(field), int):
                attributes[name] = usage[field]
    reasons = [choice.get("finish_reason") for choice in answer.get("choices") or []
               if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str)]
    if reasons:
        attributes["gen_ai.response.finish_reasons"] = reasons
    return attributes


def observed_tool_call(server: str, tool: str, call: Callable[..., Any], *args: Any) -> Any:
    """Run one MCP tool call (it returns a ToolOutcome): counted, timed, and spanned when traced."""
    span = None
    if tracing.traced():
        from opentelemetry.trace import SpanKind

        span = tracing.tracer().start_span(f"tools/call {tool}", kind=SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool, "mcp.method.name": "tools/call",
            "gateway.mcp.server_label": server,
        })
    started = time.perf_counter()
    outcome = None
    try:
        outcome = call(*args)
        return outcome
    finally:
        ok = outcome is not None and getattr(outcome, "error", None) is None
        metrics.observe_tool_call(server, ok, time.perf_counter() - started)
        if span is not None:
            if not ok:
                from opentelemetry.trace import Status, StatusCode

                span.set_attribute("error.type", "tool_error")
                span.set_status(Status(StatusCode.ERROR))
            span.end()
