"""Relays OpenAI-compatible requests upstream (JSON or SSE), with fallbacks and usage rows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from gateway.accounting.credits import to_credits
from gateway.accounting.meter import Meter
from gateway.accounting.output_cap import with_output_cap
from gateway.accounting.tokens import usage_from_openai
from gateway.config import Settings
from gateway.db import own_connection
from gateway.errors import CLIENT_CLOSED, GatewayError, UpstreamError, UpstreamRejected
from gateway.loop.events import Usage
from gateway.upstream import sse
from gateway.upstream.chunks import read_chunks
from gateway.upstream.client import UpstreamClient, UpstreamStream
from gateway.upstream.routing import Route

log = logging.getLogger(__name__)
T = TypeVar("T")


def upstream_body(settings: Settings, route: Route, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The body sent upstream: upstream model id, no `models`, usage asked for on streams."""
    sent = {key: value for key, value in body.items() if key != "models"}
    sent["model"] = route.upstream_model
    if stream:
        sent["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    if settings.providers[route.provider].empty_tool_call_content and "messages" in sent:
        sent["messages"] = [_content_not_null(message) for message in sent["messages"]]
    return sent


def capped_body(settings: Settings, route: Route, body: dict[str, Any], path: str, stream: bool) -> dict[str, Any]:
    """upstream_body with the output cap the hold assumed for this route's model."""
    return upstream_body(settings, route, with_output_cap(body, route.settings, path), stream)


def _content_not_null(message: Any) -> Any:
    if isinstance(message, dict) and message.get("tool_calls") and message.get("content") is None:
        return {**message, "content": ""}
    return message


def with_fallback(routes: list[Route], attempt: Callable[[Route], T]) -> tuple[Route, T]:
    """Try each route in order; move on after 5xx, timeouts and connection failures only."""
    for position, route in enumerate(routes):
        try:
            return route, attempt(route)
        except UpstreamRejected:
            raise
        except UpstreamError as exc:
            if position == len(routes) - 1:
                raise
            log.warning("model %s failed (%s); trying %s", route.model_id, exc.code, routes[position + 1].model_id)
    raise AssertionError("routes must not be empty")


def with_cost(usage_json: Any, meter: Meter, usage: Usage, route: Route) -> dict[str, Any]:
    """The upstream usage object plus OpenRouter's `cost` (credits)."""
    return {**(usage_json if isinstance(usage_json, dict) else {}), "cost": to_credits(meter.cost_of(usage, route))}


def relay_json(
    client: UpstreamClient,
    settings: Settings,
    routes: list[Route],
    path: str,
    body: dict[str, Any],
    meter: Meter,
) -> dict[str, Any]:
    """One JSON round trip with fallbacks; settles the meter either way."""
    with meter.closed_on_failure():
        route, data = with_fallback(
            routes, lambda r: client.post_json(r.provider, path, capped_body(settings, r, body, path, False))
        )
        data["model"] = route.model_id
        usage = usage_from_openai(data.get("usage")) or meter.estimate(
            "".join(_choice_text(choice) for choice in data.get("choices") or [])
        )
        data["usage"] = with_cost(data.get("usage"), meter, usage, route)
        meter.finish(usage, 200, route)
    return data


def _choice_text(choice: dict[str, Any]) -> str:
    """Every generated character of a choice or stream delta, for estimates."""
    part = choice.get("message") or choice.get("delta") or {}
    pieces = [choice.get("text") or "", part.get("content") or "", part.get("reasoning_content") or ""]
    for call in part.get("tool_calls") or []:
        function = call.get("function") or {}
        pieces += [function.get("name") or "", function.get("arguments") or ""]
    return "".join(piece for piece in pieces if isinstance(piece, str))


def open_stream(
    client: UpstreamClient,
    settings: Settings,
    routes: list[Route],
    path: str,
    body: dict[str, Any],
    meter: Meter,
) -> tuple[Route, UpstreamStream]:
    """Open the upstream stream (with fallbacks) before any byte goes to the client."""
    with meter.closed_on_failure():
        return with_fallback(
            routes, lambda r: client.open_stream(r.provider, path, capped_body(settings, r, body, path, True))
        )


def relay_stream(
    stream: UpstreamStream,
    route: Route,
    client_wants_usage: bool,
    meter: Meter,
    keepalive_s: float,
) -> Iterator[bytes]:
    """Relay upstream SSE chunk by chunk; keep-alives on silence; error event on failure."""
    reported: Usage | None = None
    generated: list[str] = []
    status = CLIENT_CLOSED
    try:
        for chunk in read_chunks(stream.events(keepalive_s)):
            if chunk is None:
                yield sse.comment()
                continue
            reported = usage_from_openai(chunk.get("usage")) or reported
            if reported is not None and chunk.get("usage"):
                chunk["usage"] = with_cost(chunk["usage"], meter, reported, route)
            generated += [_choice_text(choice) for choice in chunk.get("choices") or []]
            outgoing = _client_chunk(chunk, route, client_wants_usage)
            if outgoing is not None:
                yield sse.encode(outgoing)
        status = 200
        yield sse.DONE
    except GatewayError as exc:
        status = exc.status
        yield sse.encode(exc.body())
    except Exception:
        status = 500
        raise
    finally:
        stream.close()
        with own_connection():
            meter.finish(reported or meter.estimate("".join(generated)), status, route)


def _client_chunk(chunk: dict[str, Any], route: Route, wants_usage: bool) -> dict[str, Any] | None:
    """The chunk as the client sees it: public model id; usage only if it asked."""
    if not wants_usage:
        if not chunk.get("choices") and chunk.get("usage"):
            return None
        chunk.pop("usage", None)
    if "model" in chunk:
        chunk["model"] = route.model_id
    return chunk
