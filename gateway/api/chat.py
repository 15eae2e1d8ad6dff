"""Chat completions, legacy completions and embeddings: relayed upstream, or run as a tool loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, jsonify, request
from pydantic import BaseModel

from gateway import services
from gateway.accounting.keys import Caller, current_caller
from gateway.accounting.meter import Meter, refusals_recorded
from gateway.accounting.streams import hold_stream_slot
from gateway.api import cached, chat_render, guarded
from gateway.api.http import (
    authenticated_blueprint,
    event_stream,
    json_object,
    parse_model,
    stream_requested,
    with_headers,
)
from gateway.api.openai_requests import ChatRequest, CompletionRequest, EmbeddingRequest
from gateway.errors import InvalidRequest, dialect_of
from gateway.loop.checks import output_windows
from gateway.loop.run import Run
from gateway.loop.tool_loop import first_turn
from gateway.mcp.assemble import profile_toolset
from gateway.mcp.toolset import Toolset
from gateway.serving.http_conventions import request_id
from gateway.upstream import relay, routing
from gateway.upstream.dialect import StreamDialect
from gateway.upstream.prepared import PreparedRequest, prepare_candidates

bp = authenticated_blueprint("chat", __name__)
EXECUTED_CALLS_HEADER = "X-Gateway-Executed-Calls"


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """OpenAI chat completions, JSON or SSE; `tools: "auto"` runs the default profile's MCP tools."""
    body = checked("chat/completions", validated(ChatRequest))
    if body.get("tools") == "auto":
        profile = services.settings().mcp.default_profile
        labels = services.settings().profiles[profile].mcp_servers if profile else []
        return run_with_tools(body, labels, executed_calls_form(body))
    return relay_upstream("chat/completions", body)


@bp.post("/completions")
def completions() -> Response:
    """Legacy text completions, JSON or SSE."""
    return relay_upstream("completions", checked("completions", validated(CompletionRequest)))


@bp.post("/embeddings")
def embeddings() -> Response:
    """Embeddings (never streamed)."""
    body = validated(EmbeddingRequest)
    body.pop("stream", None)
    return relay_upstream("embeddings", checked("embeddings", body))


def relay_upstream(path: str, body: dict[str, Any]) -> Response:
    """Authenticate, meter, then answer from the response cache or route and relay upstream (a miss is stored)."""
    streaming = stream_requested(body)
    lookup = cached.look_up(path, body, requested_model(body))
    candidates, meter = admitted(path, body, streaming)
    if cached.hit(lookup):
        hit = cached.openai_hit(lookup, candidates, meter, streaming, wants_usage(body), stream_dialect())
        return cached.marked(with_headers(hit, meter), lookup)
    settings = services.settings()
    router = services.router()
    if streaming:
        route, stream = relay.open_stream(router, candidates, meter)
        keepalive = settings.server.keepalive_interval_s
        chunks = relay.relay_stream(stream, route, wants_usage(body), meter, keepalive, stream_dialect(),
                                    cached.recorder(lookup, path, meter.generation_id), output_windows(meter))
        return cached.marked(with_headers(event_stream(chunks), meter), lookup)
    answer = relay.relay_json(router, candidates, meter, guarded.output_check())
    cached.store_openai(lookup, answer)
    return cached.marked(with_headers(jsonify(answer), meter), lookup)


def admitted(path: str, body: dict[str, Any], streaming: bool, endpoint: str | None = None,
             prepared: Callable[[], list[PreparedRequest]] | None = None) -> tuple[list[PreparedRequest], Meter]:
    """The prepared candidates and the admitted meter (a stream slot held first); `endpoint` names the usage row.

    `prepared` prepares the candidates another way (the native Messages path); by default, prepare_candidates.
    """
    caller = current_caller()
    settings = services.settings()
    endpoint = endpoint or path
    with refusals_recorded(caller, endpoint, requested_model(body), request_id()):
        if streaming:
            hold_stream_slot()
        candidates = prepared() if prepared is not None else prepare_candidates(
            routing.candidates(settings, body), path, body, settings.providers, streaming)
        estimates = [prepared.estimate() for prepared in candidates]
        return candidates, Meter.admit(caller, estimates, endpoint, request_id(), settings, services.limiter())


def run_with_tools(body: dict[str, Any], labels: list[str], form: str = chat_render.SEED_FORM) -> Response:
    """Run the tool loop with these built-in servers' tools; answer with the final message.

    `form` says where executed calls are listed (gateway.api.chat_render).
    """
    run = loop_run(body, lambda caller: profile_toolset(services.mcp(), labels, caller.account.scope,
                                                         caller.mcp_allow_list))
    if stream_requested(body):
        chunks = chat_render.stream(run, wants_usage(body), stream_dialect(), form)
        return with_headers(event_stream(chunks, run), run.meter)
    return with_headers(jsonify(chat_render.complete(run, form)), run.meter)


def loop_run(body: dict[str, Any], open_toolset: Callable[[Caller], Toolset | None],
             endpoint: str = "chat/completions") -> Run:
    """The admitted run of a chat body's tool loop; `open_toolset(caller)` opens its MCP servers after admission."""
    caller = current_caller()
    settings = services.settings()
    with refusals_recorded(caller, endpoint, body.get("model"), request_id()):
        if stream_requested(body):
            hold_stream_slot()
        plan = chat_render.loop_plan(body, routing.resolve(settings, body.get("model")), None)
        first = first_turn(plan, settings).estimate()  # MCP tools are held when turn 1 is sent
        meter = Meter.admit(caller, [first], endpoint, request_id(), settings, services.limiter())
    with meter.closed_on_failure():
        plan.toolset = open_toolset(caller)
        return Run(plan, meter, services.router(), settings)


def executed_calls_form(body: dict[str, Any]) -> str:
    """Where executed MCP calls are listed: the `X-Gateway-Executed-Calls` header, else by the request.

    `tools: "auto"` keeps the seed's form (`message.tool_calls`); a request that sent its own
    function tools, or none, gets `mcp_calls` (its `tool_calls` are only the calls it must run).
    """
    asked = request.headers.get(EXECUTED_CALLS_HEADER, "").strip().lower()
    if asked not in ("", chat_render.SEED_FORM, chat_render.AGENTS_FORM):
        raise InvalidRequest(f"{EXECUTED_CALLS_HEADER} must be `{chat_render.SEED_FORM}` or "
                             f"`{chat_render.AGENTS_FORM}`.", param=EXECUTED_CALLS_HEADER)
    if body.get("tools") != "auto" and body.get("tools"):
        return chat_render.AGENTS_FORM  # executed calls beside the client's calls would be run twice
    return asked or (chat_render.SEED_FORM if body.get("tools") == "auto" else chat_render.AGENTS_FORM)


def checked(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body through the input guardrails (gateway.api.guarded), before the cache and admission see it."""
    return guarded.checked_input(path, body, requested_model(body))


def validated(schema: type[BaseModel]) -> dict[str, Any]:
    """The body through the gate, its core fields checked against `schema`; forwarded as sent."""
    body = json_object()
    parse_model(schema, body)
    return body


def requested_model(body: dict[str, Any]) -> Any:
    """The model a request names first: `model`, else the first of its fallback list `models`."""
    fallbacks = body.get("models")
    return body.get("model") or (fallbacks[0] if isinstance(fallbacks, list) and fallbacks else None)


def stream_dialect() -> StreamDialect:
    """The stream framing of this request's base path."""
    return StreamDialect(dialect_of(request.path))


def wants_usage(body: dict[str, Any]) -> bool:
    """Whether a streaming client asked for the usage chunk."""
    return bool((body.get("stream_options") or {}).get("include_usage"))
