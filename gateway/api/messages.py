"""Anthropic's Messages API (`/v1/messages`, `/api/v1/messages`) on any model: native, or translated to chat and back.

On a model of an Anthropic-type provider the body goes through natively (gateway.api.messages_native);
otherwise the Messages body becomes the canonical chat request (gateway.dialects.anthropic_messages); it is
prepared, admitted, relayed and charged as chat is (usage rows say `endpoint = "messages"`), and the
answer is rendered as a `message` or as Anthropic's stream events. Errors are in Anthropic's shape
(gateway.errors picks the dialect by path). Keys come as `x-api-key` or `Authorization: Bearer`.
A body with `mcp_servers` runs in the gateway's tool loop on any model (gateway.api.messages_mcp).
"""

from __future__ import annotations

from flask import Response, jsonify

from gateway import services
from gateway.api import cached, guarded, messages_mcp, messages_native
from gateway.api.chat import admitted, requested_model
from gateway.api.http import authenticated_blueprint, event_stream, json_object, with_headers
from gateway.dialects.anthropic_mcp import mcp_request
from gateway.dialects.anthropic_messages import chat_request, count_tokens
from gateway.dialects.anthropic_replies import message_of
from gateway.dialects.anthropic_stream import MessagesStreamEncoder, messages_events
from gateway.errors import OPENROUTER
from gateway.loop.checks import output_windows
from gateway.upstream import relay, routing
from gateway.upstream.dialect import StreamDialect

bp = authenticated_blueprint("messages", __name__)
ENDPOINT = "messages"
DROPPED_HEADER = "X-Gateway-Dropped"  # what the chat upstream could not take (top_k, thinking blocks, ...)
RELAY_FRAMING = StreamDialect(OPENROUTER)  # its error chunk carries the status the error event needs


@bp.post("/messages")
def create_message() -> Response:
    """A Messages API call, JSON or streamed: native on Anthropic-type models, else translated."""
    body = json_object()
    body = guarded.checked_input(ENDPOINT, body, requested_model(body))  # before any path's cache and admission
    if "mcp_servers" in body:  # the gateway runs the servers, on any model (gateway.api.messages_mcp)
        return messages_mcp.create(body, ENDPOINT, DROPPED_HEADER)
    if (routes := messages_native.native_routes(body)) is not None:
        return messages_native.create(body, routes, ENDPOINT)
    translated = chat_request(body)
    chat, model = translated.body, translated.body["model"]
    streaming = bool(chat.get("stream"))
    lookup = cached.look_up(ENDPOINT, body, requested_model(body))  # stored as the message the client got
    candidates, meter = admitted("chat/completions", chat, streaming, ENDPOINT)
    router, stops = services.router(), chat.get("stop") or []
    if cached.hit(lookup):
        response = cached.message_hit(lookup, candidates, meter, streaming)
    elif streaming:
        route, stream = relay.open_stream(router, candidates, meter)
        keepalive = services.settings().server.keepalive_interval_s
        recorder = cached.recorder(lookup, "chat/completions", meter.generation_id,
                                   lambda completion: message_of(completion, completion["model"], stops))
        chunks = relay.relay_stream(stream, route, True, meter, keepalive, RELAY_FRAMING, recorder,
                                    output_windows(meter))
        encoder = MessagesStreamEncoder(route.model_id, candidates[0].input_tokens, stops)  # a fallback's, maybe
        response = event_stream(messages_events(chunks, encoder))
    else:
        completion = relay.relay_json(router, candidates, meter, guarded.output_check())
        message = message_of(completion, completion.get("model") or model, stops)
        cached.store_message(lookup, message, cached.openai_usage(completion))
        response = jsonify(message)
    if translated.dropped:
        response.headers[DROPPED_HEADER] = ", ".join(translated.dropped)
    return cached.marked(with_headers(response, meter), lookup)


@bp.post("/messages/count_tokens")
def count_message_tokens() -> Response:
    """`{"input_tokens": N}`: the provider's own count on an Anthropic-type model, else the gateway's estimate."""
    body = json_object()
    routing.resolve(services.settings(), body.get("model"))
    if (routes := messages_native.native_routes(body)) is not None:
        return messages_native.count_tokens(body, routes[0])
    if "mcp_servers" in body:  # estimated without the servers' tools (they are listed only when the loop runs)
        body = mcp_request(body)[1]
    return jsonify(count_tokens(body))
