"""Responses renderers: a ResponseRun as one JSON object or as the SSE event lifecycle.

Decisions the spec leaves open:
- A loop that fails before producing any output, with a 4xx status (the upstream rejected the
  request, or the balance ran out on a later turn), is answered as that HTTP error, in JSON and in
  streaming mode alike: a stream waits for the loop's first event (bounded by one keep-alive
  interval) before it sends `response.created`. Any other failure is a `failed` response (HTTP 200
  in JSON; an `error` event then `response.failed` in a stream).
- `usage.cost` carries the credits the response cost (as chat's usage does); the spec's validators
  ignore extra usage fields.
- A stream whose client goes away is settled with what was used and stored (if `store`) as
  `failed` with error code `client_disconnected`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

from gateway.db import own_connection
from gateway.loop.events import KeepAlive, LoopEvent, LoopFinished
from gateway.responses.response_run import ResponseRun
from gateway.upstream import sse

log = logging.getLogger(__name__)


def complete(response: ResponseRun) -> dict[str, Any]:
    """JSON mode: the whole loop, then the final response object (or the HTTP error of a rejection)."""
    with response.run:
        for event in response.run.events():
            if not isinstance(event, LoopFinished):
                response.builder.feed(event)
    response.raise_if_rejected()
    return response.final_response()


def stream(response: ResponseRun) -> Iterator[bytes]:
    """Streaming mode; the first loop event is awaited here, so a rejection is still an HTTP error."""
    events = response.run.events()
    with response.run.finished_on_error():
        first = next(events)
        if isinstance(first, LoopFinished) and response.rejected(first):
            response.run.finish(first)
            response.raise_if_rejected()
    return _frames(response, itertools.chain([first], events))


def frame(event: dict[str, Any]) -> bytes:
    """One event as one SSE frame (`event:` equals `type`)."""
    return sse.encode(event, event["type"])


def _frames(response: ResponseRun, events: Iterator[LoopEvent]) -> Iterator[bytes]:
    builder, run = response.builder, response.run
    with own_connection():
        try:
            with run:
                yield from map(frame, builder.start())
                for event in events:
                    if isinstance(event, KeepAlive):
                        yield sse.comment()
                    elif not isinstance(event, LoopFinished):
                        yield from map(frame, builder.feed(event))
                if run.outcome.status == "failed":
                    yield frame(builder.error_event(run.outcome.error_code or "server_error",
                                                    run.outcome.error_message or "The response failed."))
                run.finish(run.outcome)
                yield from map(frame, response.terminal_events)
                yield sse.DONE
        except Exception:
            log.exception("streaming response %s failed", response.response_id)
            yield frame(builder.error_event("server_error", "Internal error while streaming the response."))
