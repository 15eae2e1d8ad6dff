"""Responses renderers: a ResponseAssembly as one JSON object or as the SSE event lifecycle.

`response_events` is the one generator of a response's streaming events (it drives the run inside
`with run:`); SSE here and the WebSocket mode (`responses_ws`) only frame what it yields.

Decisions the spec leaves open:
- A loop that fails before producing any output, with a 4xx status (the upstream rejected the
  request, or the balance ran out on a later turn), is answered as that HTTP error, in JSON and in
  streaming mode alike, and is not stored: a stream waits for the loop's first event (bounded by
  one keep-alive interval) before it sends `response.created`.
- In JSON mode any other failure before output (upstream down, timed out) is answered as its HTTP
  error too (502/504 with the error's `type`, `code` and message, as OpenAI's API does), while the
  response is stored as `failed` when `store` is true. A failure after some output is a `failed`
  response (HTTP 200); in a stream it is an `error` event then `response.failed`. A failed
  response's `error` always carries `type`, `code` and `message`.
- `usage.cost` carries the credits the response cost (as chat's usage does); the spec's validators
  ignore extra usage fields.
- A stream whose client goes away is settled with what was used and stored (if `store`) as
  `failed` with error code `client_disconnected`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

from gateway.db import own_connection
from gateway.loop.events import KeepAlive, LoopEvent, LoopFinished
from gateway.loop.failure import Failure
from gateway.responses.assembly import ResponseAssembly
from gateway.upstream import sse

log = logging.getLogger(__name__)
TURN_TIMEOUT_STATUS = 504


def complete(response: ResponseAssembly) -> dict[str, Any]:
    """JSON mode: the whole loop, then the final response object (or the HTTP error of a failure)."""
    with response.run:
        for event in response.run.events():
            if not isinstance(event, LoopFinished):
                response.builder.feed(event)
    response.raise_if_failed_without_output()
    return response.final_response()


def started(response: ResponseAssembly) -> Iterator[LoopEvent]:
    """The run's events once the first has arrived; a rejection before it raises its HTTP error."""
    events = response.run.events()
    with response.run.finished_on_error():
        first = next(events)
        if isinstance(first, LoopFinished) and response.rejected(first):
            response.run.finish(first)
            response.raise_if_rejected()
    return itertools.chain([first], events)


def stream(response: ResponseAssembly) -> Iterator[bytes]:
    """Streaming mode; the first loop event is awaited here, so a rejection is still an HTTP error."""
    return _frames(response, started(response))


def frame(event: dict[str, Any]) -> bytes:
    """One event as one SSE frame (`event:` equals `type`)."""
    return sse.encode(event, event["type"])


def _frames(response: ResponseAssembly, events: Iterator[LoopEvent]) -> Iterator[bytes]:
    with contextlib.closing(response_events(response, events)) as stream_events:
        for event in stream_events:
            yield sse.comment() if event is None else frame(event)
    yield sse.DONE


def response_events(
    response: ResponseAssembly, events: Iterator[LoopEvent], deadline: float | None = None
) -> Iterator[dict[str, Any] | None]:
    """Every streaming event of one response, in order; None marks a silence (a keep-alive).

    Closing the generator early is a client that left (the run ends `client_disconnected`). A run
    still going at `deadline` (time.monotonic) ends `failed` with code `response_timeout`.
    """
    builder, run = response.builder, response.run
    with own_connection():
        try:
            with run:
                yield from builder.start()
                outcome = None
                for event in events:
                    if isinstance(event, LoopFinished):
                        outcome = event
                    elif isinstance(event, KeepAlive):
                        yield None
                    else:
                        yield from builder.feed(event)
                    if outcome is None and deadline is not None and time.monotonic() > deadline:
                        outcome = run.ended("response_timeout", "The response took longer than this "
                                            "connection allows for one turn.", TURN_TIMEOUT_STATUS)
                        break
                outcome = outcome or run.outcome_after(None)
                if outcome.failure is not None:
                    yield builder.error_event(outcome.failure)
                run.finish(outcome)
                yield from response.terminal_events
        except Exception:
            log.exception("streaming response %s failed", response.response_id)
            yield builder.error_event(Failure("Internal error while streaming the response."))
