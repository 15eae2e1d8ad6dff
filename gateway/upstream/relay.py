"""Relays OpenAI-compatible requests upstream (JSON or SSE), routed and retried, with usage rows.

Every answer and chunk leaves with the gateway's generation id as its `id` (the meter's, also
sent as `X-Generation-Id` and stored on the usage row), whatever id the upstream gave it: chunks
are parsed and re-encoded anyway (public model id, usage), so the rewrite costs one assignment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from gateway.accounting.credits import to_credits
from gateway.accounting.meter import Meter
from gateway.accounting.tokens import usage_from_openai
from gateway.accounting.usage import Usage
from gateway.db import own_connection
from gateway.errors import CLIENT_CLOSED, GatewayError
from gateway.observability.wsgi_middleware import first_token
from gateway.upstream import sse
from gateway.upstream.checked_answer import TextCheck, checked_openai
from gateway.upstream.checked_text import CheckedChunks, OutputCheck
from gateway.upstream.chunks import read_chunks
from gateway.upstream.client import UpstreamStream
from gateway.upstream.dialect import OPENAI_STREAMS, StreamDialect
from gateway.upstream.prepared import PreparedRequest
from gateway.upstream.router import Router
from gateway.upstream.routing import Route


def with_cost(usage_json: Any, meter: Meter, usage: Usage, route: Route) -> dict[str, Any]:
    """The usage object strict clients expect: the upstream's, with token details and OpenRouter's `cost`."""
    given = usage_json if isinstance(usage_json, dict) else {}
    return {
        "prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens, **given,
        "prompt_tokens_details": given.get("prompt_tokens_details") or {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": given.get("completion_tokens_details")
        or {"reasoning_tokens": usage.reasoning_tokens},
        "cost": to_credits(meter.charge_of(usage, route)),
    }


def with_answer_fields(answer: dict[str, Any], route: Route, generation_id: str) -> dict[str, Any]:
    """A completion or chunk with the gateway's id and the fields strict clients require: model, provider, fingerprint."""
    answer["id"] = generation_id
    answer["model"] = route.model_id
    answer["provider"] = route.provider
    answer.setdefault("system_fingerprint", None)
    return answer


class StreamObserver(Protocol):
    """Sees a relayed stream as it goes (the response cache assembles a miss with one)."""

    def chunk(self, chunk: dict[str, Any]) -> None:
        """One upstream chunk as parsed (its usage priced), before the client's form is made of it."""

    def completed(self, route: Route, usage: Usage) -> None:
        """The stream ended without error and was charged `usage`; called before its last byte goes out."""


def relay_json(router: Router, candidates: list[PreparedRequest], meter: Meter,
               output_check: TextCheck | None = None) -> dict[str, Any]:
    """One JSON round trip, routed and retried (gateway.upstream.router); settles the meter either way.

    `output_check` is the output guardrails' (gateway.upstream.checked_answer): the answer's text is
    redacted in place, or a block is raised once the answer's usage is charged (it was generated).
    """
    client = router.client
    with meter.closed_on_failure():
        route, data = router.call(candidates, lambda sent: client.post_json(
            sent.provider, sent.path, sent.body, read_timeout_s=sent.read_timeout_s))
        with_answer_fields(data, route, meter.generation_id)
        usage = usage_from_openai(data.get("usage")) or meter.estimate(
            "".join(_choice_text(choice) for choice in data.get("choices") or [])
        )
        data["usage"] = with_cost(data.get("usage"), meter, usage, route)
        blocked = checked_openai(data, output_check)
        meter.finish(usage, blocked.status if blocked else 200, route, finish_reason(data))
    if blocked is not None:
        raise blocked
    return data


def finish_reason(answer: dict[str, Any]) -> str | None:
    """The last finish reason a completion or chunk reports (None if no choice finished)."""
    reasons = [choice.get("finish_reason") for choice in answer.get("choices") or [] if isinstance(choice, dict)]
    return next((reason for reason in reversed(reasons) if isinstance(reason, str)), None)


def _choice_text(choice: dict[str, Any]) -> str:
    """Every generated character of a choice or stream delta, for estimates."""
    part = choice.get("message") or choice.get("delta") or {}
    pieces = [choice.get("text") or "", part.get("content") or "", part.get("reasoning_content") or ""]
    for call in part.get("tool_calls") or []:
        function = call.get("function") or {}
        pieces += [function.get("name") or "", function.get("arguments") or ""]
    return "".join(piece for piece in pieces if isinstance(piece, str))


def open_stream(router: Router, candidates: list[PreparedRequest], meter: Meter) -> tuple[Route, UpstreamStream]:
    """Open the upstream stream (routed and retried until its first event) before any byte goes out."""
    client = router.client
    with meter.closed_on_failure():
        return router.call(candidates, lambda sent: client.open_stream(
            sent.provider, sent.path, sent.body, read_timeout_s=sent.read_timeout_s))


def relay_stream(
    stream: UpstreamStream,
    route: Route,
    client_wants_usage: bool,
    meter: Meter,
    keepalive_s: float,
    dialect: StreamDialect = OPENAI_STREAMS,
    observer: StreamObserver | None = None,
    output_check: Callable[[], OutputCheck] | None = None,
) -> Iterator[bytes]:
    """Relay upstream SSE chunk by chunk; keep-alives on silence; an error event in the dialect on failure.

    An `observer` sees every chunk and, when the stream ended without error, its charged usage.
    `output_check` makes each choice's window of the output guardrails (gateway.upstream.checked_text):
    the text is rewritten before the observer and the client see it; a block ends the stream with the
    dialect's error event, charged for what was generated.
    """
    checked = CheckedChunks(output_check) if output_check is not None else None
    reported: Usage | None = None
    generated: list[str] = []
    generated_chars = 0
    status = CLIENT_CLOSED
    last: dict[str, Any] | None = None
    reason: str | None = None
    try:
        for chunk in read_chunks(stream.events(keepalive_s)):
            if chunk is None:
                yield dialect.keepalive()
                continue
            last = chunk
            reported = usage_from_openai(chunk.get("usage")) or reported
            if reported is not None and chunk.get("usage"):
                chunk["usage"] = with_cost(chunk["usage"], meter, reported, route)
            generated += [_choice_text(choice) for choice in chunk.get("choices") or []]
            if generated and generated[-1]:
                first_token(route.model_id)
                generated_chars += len(generated[-1])
            meter.check_debt(reported, route, generated_chars)  # a debt past its bound ends the stream here
            reason = finish_reason(chunk) or reason
            sent = [chunk] if checked is None else checked.rewrite(chunk)
            yield from _sent(sent, route, client_wants_usage, meter.generation_id, observer)
        if checked is not None:  # the tails of choices that never finished
            yield from _sent(checked.rest(last or {}), route, client_wants_usage, meter.generation_id, observer)
        status = 200
        used = reported or meter.estimate("".join(generated))
        meter.finish(used, status, route, reason)  # durable before the last byte
        if observer is not None:
            observer.completed(route, used)
        yield sse.DONE
    except GatewayError as exc:
        status, reason = exc.status, "error"
        meter.finish(reported or meter.estimate("".join(generated)), status, route, reason)
        yield dialect.error_event(exc, with_answer_fields(dict(last or {}), route, meter.generation_id))
    except Exception:
        status, reason = 500, "error"
        raise
    finally:
        stream.close()
        if not meter.finished:  # a client that left; settled above otherwise (maybe while the database was down)
            with own_connection():
                meter.finish(reported or meter.estimate("".join(generated)), status, route, reason)


def _sent(chunks: list[dict[str, Any]], route: Route, wants_usage: bool, generation_id: str,
          observer: StreamObserver | None) -> Iterator[bytes]:
    """The chunks as the observer sees them and as the client gets them."""
    for chunk in chunks:
        if observer is not None:
            observer.chunk(chunk)
        outgoing = _client_chunk(chunk, route, wants_usage, generation_id)
        if outgoing is not None:
            yield sse.encode(outgoing)


def _client_chunk(chunk: dict[str, Any], route: Route, wants_usage: bool, generation_id: str) -> dict[str, Any] | None:
    """The chunk as the client sees it: the gateway's id, public model id; usage only if it asked."""
    if not wants_usage:
        if not chunk.get("choices") and chunk.get("usage"):
            return None
        chunk.pop("usage", None)
    return with_answer_fields(chunk, route, generation_id)
