"""OpenTelemetry spans (the `otel` extra), read back with the SDK's in-memory exporter."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.config import ConfigError, build_settings
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.scripted_model import ScriptedModel

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider():
    """The process's tracer provider (set once; the gateway uses a provider set up before it)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        tracer_provider = TracerProvider()
        trace.set_tracer_provider(tracer_provider)
    tracer_provider = trace.get_tracer_provider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))


@pytest.fixture
def settings(make_settings):
    return make_settings(tracing={"enabled": True, "exporter": "none"},
                         mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]}})


@pytest.fixture
def spans():
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def by_name(exporter: InMemorySpanExporter, name: str):
    found = [span for span in exporter.get_finished_spans() if span.name == name]
    assert found, [span.name for span in exporter.get_finished_spans()]
    return found


def test_a_chat_request_has_a_server_span_and_an_upstream_client_span(client, auth_headers, fake_upstream, spans):
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = client.post("/v1/chat/completions", json=body, headers={**auth_headers, "traceparent": parent},
                           buffered=True)
    assert response.status_code == 200
    [server] = by_name(spans, "POST /v1/chat/completions")
    [upstream] = by_name(spans, "chat upstream-model")
    assert server.kind == SpanKind.SERVER and upstream.kind == SpanKind.CLIENT
    assert format(server.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"  # the client's trace
    assert upstream.parent.span_id == server.context.span_id
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gen_ai.request.model"] == "test-model"
    assert server.attributes["gen_ai.usage.output_tokens"] == 7
    assert upstream.attributes["gen_ai.operation.name"] == "chat"
    assert upstream.attributes["gen_ai.request.model"] == "upstream-model"
    assert upstream.attributes["gen_ai.usage.input_tokens"] == 11
    assert upstream.attributes["gen_ai.usage.output_tokens"] == 7
    sent = fake_upstream.requests[-1][2]
    assert sent["traceparent"].split("-")[1:3] == ["0af7651916cd43dd8448eb211c80319c",
                                                   format(upstream.context.span_id, "016x")]


def test_a_responses_mcp_call_has_a_tool_span_under_the_request(client, auth_headers, fake_upstream, spans):
    fake_upstream.responder = ScriptedModel([("mcp__tools__echo", {"text": "a"})])
    tool = {"type": "mcp", "server_label": "tools", "require_approval": "never"}
    response = client.post("/v1/responses", json={"model": "test-model", "input": "go", "tools": [tool]},
                           headers=auth_headers, buffered=True)
    assert response.status_code == 200
    [server] = by_name(spans, "POST /v1/responses")
    [call] = by_name(spans, "tools/call echo")
    turns = by_name(spans, "chat upstream-model")
    assert call.kind == SpanKind.CLIENT and call.parent.span_id == server.context.span_id
    assert call.attributes["gen_ai.tool.name"] == "echo"
    assert call.attributes["gen_ai.operation.name"] == "execute_tool"
    assert len(turns) == 2 and all(turn.parent.span_id == server.context.span_id for turn in turns)
    assert server.attributes["gen_ai.usage.input_tokens"] == 40


def test_an_app_without_tracing_opens_no_span(make_settings, fake_upstream, spans):
    from gateway import create_app, db, lifecycle
    from gateway.accounting.keys import create_key

    app = create_app(make_settings())
    db.upgrade()
    try:
        with db.database.connection_context():
            _, secret = create_key("untraced")
        body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
        response = app.test_client().post("/v1/chat/completions", json=body, buffered=True,
                                          headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 200
    finally:
        lifecycle.close(app)
    assert spans.get_finished_spans() == ()
    assert "traceparent" not in fake_upstream.requests[-1][2]


def test_tracing_is_refused_at_startup_without_the_sdk(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name.startswith("opentelemetry") else real(name, *args))
    with pytest.raises(ConfigError, match=r"tracing\.enabled"):
        build_settings({"tracing": {"enabled": True}})
