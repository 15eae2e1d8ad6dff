"""The one place the faces ask the response cache (gateway.cache): look a request up, answer a hit, store a miss.

When: `[cache] enabled`, the requested model's `cache_ttl_s` is not 0 (unset: `[cache] ttl_s`) and the
body is cacheable (gateway.cache.key: never `store: true`, MCP tool runs, several samples). The
client's `Cache-Control` is obeyed: `no-cache` skips the lookup (the answer is still stored),
`no-store` skips storing, `max-age=N` bounds a hit's age. Such an answer says `X-Cache: HIT` or
`MISS` (a hit also `Age`), and so does the request record.

A hit is admitted like any request (the face admits it after the lookup), never routed or sent: it
answers the stored answer under fresh ids (the meter's generation id), charged `hit_price_fraction`
of the stored usage's price (`Meter.finish(..., cache_hit=True)`); a streamed request gets it
replayed as a stream (gateway.cache.replay). A miss is stored once it completed: a JSON answer as
the client got it, a stream assembled from what was relayed (gateway.api.stream_assembly) once it
ended normally, before its last byte.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Response, jsonify, request
from werkzeug.datastructures import RequestCacheControl
from werkzeug.http import parse_cache_control_header

from gateway import services
from gateway.accounting.keys import current_caller
from gateway.accounting.meter import Meter
from gateway.accounting.money import to_credits
from gateway.accounting.tokens import usage_from_openai
from gateway.accounting.usage import Usage
from gateway.api.http import event_stream
from gateway.api.messages_native_stream import anthropic_usage
from gateway.api.stream_assembly import ChatAssembly, CompletionAssembly, MessageAssembly
from gateway.cache.key import cache_key, cache_scope, cacheable
from gateway.cache.replay import replay_chat_chunks, replay_completion_chunks, replay_message_events
from gateway.cache.store import CachedAnswer, ResponseCache
from gateway.config import CacheSettings, ModelSettings
from gateway.db import own_connection
from gateway.dialects.anthropic_replies import error_event
from gateway.errors import CLIENT_CLOSED, GatewayError
from gateway.guardrails.kept import kept_guardrails
from gateway.ids import new_id
from gateway.observability.wsgi_middleware import current
from gateway.upstream import relay, sse
from gateway.upstream.dialect import StreamDialect
from gateway.upstream.prepared import PreparedRequest
from gateway.upstream.providers.anthropic_answer import finish_reason as anthropic_finish_reason
from gateway.upstream.routing import Route

CACHE_HEADER = "X-Cache"
HIT, MISS = "HIT", "MISS"


@dataclass(frozen=True)
class Directives:
    """What the client's `Cache-Control` asks of the cache."""

    look_up: bool = True  # no-cache: False
    store: bool = True  # no-store: False
    max_age_s: float | None = None  # max-age=N


def directives_of(header: str | None) -> Directives:
    """The directives of a `Cache-Control` request header (case-insensitive; unknown or malformed ones ignored)."""
    if not header:
        return Directives()
    parsed = parse_cache_control_header(header.lower(), cls=RequestCacheControl)
    return Directives(not parsed.no_cache, not parsed.no_store, parsed.max_age)


def ttl_of(model: ModelSettings | None, cache: CacheSettings) -> float:
    """Seconds a model's answers stay cached: its cache_ttl_s, else [cache] ttl_s (0: not cached; unknown model: 0)."""
    if model is None:
        return 0.0
    return cache.ttl_s if model.cache_ttl_s is None else model.cache_ttl_s


@dataclass
class Lookup:
    """One request's place in the cache: its key, what the client allows, and the hit if there was one."""

    cache: ResponseCache
    key: str
    scope: str
    endpoint: str  # what its answers are: chat/completions, completions, embeddings or messages (native or translated)
    ttl_s: float
    directives: Directives
    hit: CachedAnswer | None = None

    def store(self, answer: dict[str, Any], usage: Usage, model: str) -> None:
        """Store a completed answer as the client got it (unless the client said `no-store`)."""
        if self.directives.store:
            self.cache.put(self.key, CachedAnswer(self.endpoint, model, answer, usage, time.time()), self.ttl_s,
                           self.scope)

    def route(self, candidates: list[PreparedRequest]) -> Route:
        """The route a hit is booked on: the stored answer's model among the candidates (else the first), no attempt."""
        routes = [prepared.route for prepared in candidates]
        model = self.hit.model if self.hit is not None else None
        return next((route for route in routes if route.model_id == model), routes[0]).after(0)

    def settle(self, meter: Meter, candidates: list[PreparedRequest], reason: str | None) -> int:
        """Charge the hit (hit_price_fraction of the stored usage's price) with its usage row; micro-credits charged."""
        return meter.finish(self.hit.usage, 200, self.route(candidates), reason, cache_hit=True)


def look_up(endpoint: str, body: dict[str, Any], model: Any) -> Lookup | None:
    """Ask the cache about `body` on `endpoint` (None: the cache is not asked); the request record says HIT or MISS.

    `model` is the public model the request names first (its fallbacks are not part of the question).
    """
    cache = services.cache()
    settings = services.settings()
    ttl_s = ttl_of(settings.models.get(model) if isinstance(model, str) else None, settings.cache)
    if cache is None or ttl_s <= 0 or not cacheable(endpoint, body):
        return None
    scope = cache_scope(current_caller().account.id, settings.cache)
    directives = directives_of(request.headers.get("Cache-Control"))
    lookup = Lookup(cache, cache_key(guarded_scope(scope), model, endpoint, body), scope, endpoint, ttl_s, directives)
    if directives.look_up:
        lookup.hit = cache.get(lookup.key, directives.max_age_s)
    record = current()
    if record is not None:
        record.cache = HIT if lookup.hit is not None else MISS
    return lookup


def guarded_scope(scope: str) -> str:
    """The scope a key is made in: requests under other guardrails never share an answer (a hit replays the
    stored text, which no output guardrail checks again), so their names are part of it when any apply."""
    names = kept_guardrails().names
    return f"{scope}|guardrails:{','.join(names)}" if names else scope


def hit(lookup: Lookup | None) -> bool:
    """Whether the cache answers this request."""
    return lookup is not None and lookup.hit is not None


def marked(response: Response, lookup: Lookup | None) -> Response:
    """The response with `X-Cache` (and a hit's `Age`) when the cache was asked."""
    if lookup is not None:
        response.headers[CACHE_HEADER] = HIT if lookup.hit is not None else MISS
        if lookup.hit is not None:
            response.headers["Age"] = str(int(max(0.0, time.time() - lookup.hit.created)))
    return response


# -- hits ------------------------------------------------------------------------------------------


def openai_hit(lookup: Lookup, candidates: list[PreparedRequest], meter: Meter, streaming: bool,
               include_usage: bool, dialect: StreamDialect) -> Response:
    """A chat, completion or embeddings hit: the stored JSON with fresh ids, or its replay as chunks."""
    stored = lookup.hit
    reason = relay.finish_reason(stored.answer)
    if not streaming:
        with meter.closed_on_failure():
            charged = lookup.settle(meter, candidates, reason)
        return jsonify(fresh_openai(stored.answer, meter.generation_id, charged))
    replay = replay_completion_chunks if lookup.endpoint == "completions" else replay_chat_chunks

    def frames(charged: int) -> Iterator[bytes]:
        for chunk in replay(stored, meter.generation_id, int(time.time()), include_usage):
            if isinstance(chunk.get("usage"), dict):
                chunk["usage"] = {**chunk["usage"], "cost": to_credits(charged)}
            yield sse.encode({**chunk, "provider": stored.answer.get("provider"),
                              "system_fingerprint": chunk.get("system_fingerprint")})
        yield sse.DONE

    return replayed(lookup, candidates, meter, reason, frames, dialect.error_event)


def message_hit(lookup: Lookup, candidates: list[PreparedRequest], meter: Meter, streaming: bool) -> Response:
    """A Messages hit: the stored message with a fresh id, or its replay as Anthropic's stream events."""
    stored = lookup.hit
    reason = anthropic_finish_reason(stored.answer.get("stop_reason"))
    if not streaming:
        with meter.closed_on_failure():
            lookup.settle(meter, candidates, reason)
        return jsonify({**stored.answer, "id": new_id("msg")})

    def frames(_charged: int) -> Iterator[bytes]:
        for name, data in replay_message_events(stored, new_id("msg")):
            yield sse.encode(data, event=name)

    return replayed(lookup, candidates, meter, reason, frames, error_event)


def replayed(lookup: Lookup, candidates: list[PreparedRequest], meter: Meter, reason: str | None,
             frames: Callable[[int], Iterable[bytes]], failed: Callable[[GatewayError], bytes]) -> Response:
    """A hit replayed as a stream, settled as it starts (so its row says streamed), or as nothing if never read."""

    def replay() -> Iterator[bytes]:
        try:
            charged = lookup.settle(meter, candidates, reason)
        except GatewayError as exc:
            yield failed(exc)
            return
        yield from frames(charged)

    def left_unread() -> None:
        if not meter.finished:
            with own_connection():
                meter.finish(Usage(), CLIENT_CLOSED, lookup.route(candidates), None, cache_hit=True)

    response = event_stream(replay())
    response.call_on_close(left_unread)
    return response


def fresh_openai(answer: dict[str, Any], generation_id: str, charged: int) -> dict[str, Any]:
    """A stored OpenAI answer under a fresh id and time, its usage's `cost` what this hit was charged."""
    fresh = {**answer, "id": generation_id}
    if "created" in fresh:
        fresh["created"] = int(time.time())
    if isinstance(fresh.get("usage"), dict):
        fresh["usage"] = {**fresh["usage"], "cost": to_credits(charged)}
    return fresh


# -- misses ----------------------------------------------------------------------------------------


def store_openai(lookup: Lookup | None, answer: dict[str, Any]) -> None:
    """Store a chat, completion or embeddings JSON answer (200) as the client got it."""
    if lookup is not None:
        lookup.store(answer, openai_usage(answer), answer.get("model") or "")


def openai_usage(answer: dict[str, Any]) -> Usage:
    """The usage an OpenAI answer reports (none: nothing)."""
    return usage_from_openai(answer.get("usage")) or Usage()


def store_message(lookup: Lookup | None, message: dict[str, Any], usage: Usage) -> None:
    """Store a Messages answer as the client got it."""
    if lookup is not None:
        lookup.store(message, usage, message.get("model") or "")


@dataclass
class StreamRecorder:
    """Assembles a relayed chat or completion stream (relay.StreamObserver) and stores it if it ended normally."""

    lookup: Lookup
    assembly: ChatAssembly | CompletionAssembly
    generation_id: str
    stored_form: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # e.g. a chat completion as a message

    def chunk(self, chunk: dict[str, Any]) -> None:
        """Assemble one relayed chunk."""
        self.assembly.feed(chunk)

    def completed(self, route: Route, usage: Usage) -> None:
        """Store the answer if every choice finished."""
        if not self.assembly.finished:
            return
        answer = self.assembly.answer(self.generation_id, route.model_id, route.provider)
        self.lookup.store(self.stored_form(answer) if self.stored_form else answer, usage, route.model_id)


def recorder(lookup: Lookup | None, path: str, generation_id: str,
             stored_form: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> StreamRecorder | None:
    """The observer that stores a streamed miss (None when nothing would be stored)."""
    if lookup is None or not lookup.directives.store:
        return None
    assembly = CompletionAssembly() if path == "completions" else ChatAssembly()
    return StreamRecorder(lookup, assembly, generation_id, stored_form)


def recorded_events(frames: Iterator[bytes], lookup: Lookup | None) -> Iterator[bytes]:
    """A native Messages stream as relayed; stored once `message_stop` is about to go out after no error."""
    if lookup is None or not lookup.directives.store:
        return frames
    return _recording(frames, lookup)


def event_payload(data: str) -> dict[str, Any]:
    """A relayed event's JSON object ({} for anything else: the relay has already ended such a stream in error)."""
    try:
        payload = json.loads(data)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _recording(frames: Iterator[bytes], lookup: Lookup) -> Iterator[bytes]:
    """The frames, read as they pass; closing this closes the relay's generator (which settles)."""
    decoder, assembly, stored = sse.SseDecoder(), MessageAssembly(), False
    try:
        for frame in frames:
            for event in decoder.feed(frame):
                assembly.feed(event_payload(event.data))
            if assembly.finished and not stored:
                stored = True
                message = assembly.answer()
                store_message(lookup, message, anthropic_usage(message.get("usage")) or Usage())
            yield frame
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
