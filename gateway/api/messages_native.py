"""The Messages API on Anthropic-type models: the client's body goes to the provider's `/v1/messages` as sent.

Nothing lossy in between: `cache_control`, thinking blocks and their signatures, citations,
documents, server tools, `top_k` and fields the gateway does not know go through. Only `model`
becomes the upstream model id (the `models` fallback list is the gateway's and is not sent); the
provider's key, `anthropic-version` and `anthropic-beta` flags are sent, the client's own
`anthropic-beta` flags after them. The answer comes back as sent except `model` (the public id); a
stream is relayed event by event (gateway.api.messages_native_stream). Admission, holds (the input
estimated from the text of `system`, `messages` and `tools`; the output held for `max_tokens`),
rate limits, stream slots, usage rows and prices are chat's. The path is taken when every candidate
model (`model` and its `models` fallbacks) has only Anthropic-type deployments and the body
has no `mcp_servers` (which the gateway runs itself); otherwise the Messages body is translated.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from gateway import services
from gateway.accounting.tokens import estimate_prompt_tokens, hold_prompt_tokens
from gateway.api import cached, guarded
from gateway.api.chat import admitted, requested_model
from gateway.api.http import event_stream, with_headers
from gateway.api.messages_native_stream import anthropic_usage, relay_events
from gateway.config import ProviderSettings
from gateway.dialects.anthropic_messages import invalid, required_cap
from gateway.errors import GatewayError
from gateway.loop.checks import output_windows
from gateway.upstream import routing
from gateway.upstream.checked_answer import checked_message
from gateway.upstream.prepared import PreparedRequest
from gateway.upstream.providers.anthropic_answer import finish_reason
from gateway.upstream.routing import Route

NATIVE_TYPE = "anthropic"
MESSAGES_PATH = "messages"  # gateway.upstream.wire.NATIVE_PATHS
COUNT_PATH = "messages/count_tokens"
NOT_SENT_UPSTREAM = ("models",)  # the gateway's extensions, never sent upstream
BETA_HEADER = "anthropic-beta"


def native_routes(body: Any) -> list[Route] | None:
    """The candidate routes when the body takes the native path, else None (the translated path decides)."""
    if not isinstance(body, dict) or "mcp_servers" in body:
        return None
    settings = services.settings()
    try:
        routes = routing.candidates(settings, body)
    except GatewayError:
        return None  # the translated path names the problem
    native = all(settings.providers[deployment.provider].type == NATIVE_TYPE
                 for route in routes for deployment in route.deployments)
    return routes if native else None


def client_beta() -> tuple[str, ...]:
    """The client's `anthropic-beta` flags (the header may be repeated or comma-separated)."""
    values = request.headers.getlist(BETA_HEADER)
    return tuple(flag.strip() for value in values for flag in value.split(",") if flag.strip())


def upstream_body(body: dict[str, Any], route: Route) -> dict[str, Any]:
    """The body the provider gets: the client's, with the upstream model id and without the gateway's fields."""
    return {**{name: value for name, value in body.items() if name not in NOT_SENT_UPSTREAM}, "model": route.upstream_model}


def estimate_form(body: dict[str, Any]) -> dict[str, Any]:
    """The text a hold counts, in the shape the token estimator reads: `system`, `messages`, `tools`."""
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    system = [{"role": "system", "content": body["system"]}] if body.get("system") else []
    return {"messages": [*system, *messages], "tools": body.get("tools")}


def prepared(routes: list[Route], body: dict[str, Any], streaming: bool) -> list[PreparedRequest]:
    """One native request per candidate; its hold covers `max_tokens` (the cap the provider is sent)."""
    cap = required_cap(body)
    form = estimate_form(body)
    prompt, held = estimate_prompt_tokens(form), hold_prompt_tokens(form)
    def on(route: Route, _provider: ProviderSettings | None = None) -> PreparedRequest:
        return PreparedRequest(route, MESSAGES_PATH, upstream_body(body, route), streaming, prompt, held, cap, cap, on)

    return [on(route) for route in routes]


def create(body: dict[str, Any], routes: list[Route], endpoint: str) -> Response:
    """A Messages call on the native path, JSON or streamed."""
    streaming = body.get("stream", False)
    if not isinstance(streaming, bool):
        raise invalid("stream", "must be true or false.")
    lookup = cached.look_up(endpoint, body, requested_model(body))
    candidates, meter = admitted(MESSAGES_PATH, body, streaming, endpoint,
                                 lambda: prepared(routes, body, streaming))
    if cached.hit(lookup):
        return cached.marked(with_headers(cached.message_hit(lookup, candidates, meter, streaming), meter), lookup)
    router, beta = services.router(), client_beta()
    client = router.client
    if streaming:
        with meter.closed_on_failure():
            route, stream = router.call(candidates, lambda sent: client.open_stream(
                sent.provider, sent.path, sent.body, beta, sent.read_timeout_s))
        keepalive = services.settings().server.keepalive_interval_s
        events = cached.recorded_events(relay_events(stream, route, meter, keepalive, output_windows(meter)), lookup)
        return cached.marked(with_headers(event_stream(events), meter), lookup)
    with meter.closed_on_failure():
        route, answer = router.call(candidates, lambda sent: client.post_json(
            sent.provider, sent.path, sent.body, beta, sent.read_timeout_s))
        answer["model"] = route.model_id
        usage = anthropic_usage(answer.get("usage")) or meter.estimate(generated_text(answer))
        blocked = checked_message(answer, guarded.output_check())  # charged all the same: it was generated
        meter.finish(usage, blocked.status if blocked else 200, route, finish_reason(answer.get("stop_reason")))
    if blocked is not None:
        raise blocked
    cached.store_message(lookup, answer, usage)
    return cached.marked(with_headers(jsonify(answer), meter), lookup)


def generated_text(message: dict[str, Any]) -> str:
    """The text of a message's blocks, for an estimate when the provider reported no usage."""
    blocks = [block for block in message.get("content") or [] if isinstance(block, dict)]
    return "".join(str(block.get("text") or block.get("thinking") or block.get("input") or "") for block in blocks)


def count_tokens(body: dict[str, Any], route: Route) -> Response:
    """The provider's own `count_tokens` answer for the body (not metered, as Anthropic does not charge it)."""
    answer = services.upstream().post_json(route.provider, COUNT_PATH, upstream_body(body, route), client_beta())
    return jsonify(answer)
