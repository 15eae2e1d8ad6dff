"""The request's guardrails where a run produces text: the streamed answer and the MCP calls it runs.

- `output`: a turn's answer text goes through a sliding window (gateway.guardrails.StreamCheck): a
  match that spans deltas is caught, a redaction rewrites the text before any renderer sees it, the
  held tail comes out (checked) when the turn ends, and a block ends the run `failed` with the
  ContentPolicyViolation, billed as used so far (the loop's abort rule).
- `tool_input` / `tool_output`: a call's arguments (JSON text) before the tool runs, its result before
  the model reads it. A redaction rewrites them; a block becomes the tool's error output (the model reads
  `Error: Blocked by guardrail 'NAME' (STAGE).` and the loop goes on) when the guardrail's
  `on_tool_block` is "error", and fails the run when it is "fail".

The guardrails are the ones the request's face built at input (its request record's, which the
meter took at admission), so a background run keeps them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from gateway.accounting.meter import Meter
from gateway.errors import ContentPolicyViolation
from gateway.guardrails import NO_GUARDRAILS, Guardrails, StreamCheck
from gateway.loop.events import LoopEvent, TextDelta
from gateway.mcp.tools import ToolOutcome

FAIL_THE_RUN = "fail"


def request_guardrails(meter: Meter) -> Guardrails:
    """The guardrails of the metered request (none when its face built none)."""
    found = meter.guardrails
    return found if isinstance(found, Guardrails) else NO_GUARDRAILS


def output_windows(meter: Meter) -> Callable[[], StreamCheck] | None:
    """What makes one output window of the request's stream (None when no guardrail checks output)."""
    guardrails = request_guardrails(meter)
    return (lambda: guardrails.stream("output")) if guardrails.active("output") else None


def output_checked(events: Iterator[LoopEvent], guardrails: Guardrails) -> Iterator[LoopEvent]:
    """One turn's events with its answer text through an output window; the held tail when the turn ends."""
    if not guardrails.active("output"):
        yield from events
        return
    window = guardrails.stream("output")
    with contextlib.closing(events):  # a block closes the turn (and its upstream stream) at once
        for event in events:
            if not isinstance(event, TextDelta):
                yield event
            elif text := window.feed(event.text):
                yield TextDelta(text)
        if tail := window.finish():
            yield TextDelta(tail)


def checked_arguments(guardrails: Guardrails, arguments: str) -> tuple[str, str | None]:
    """A call's arguments through `tool_input`: (the arguments to send, None), or (as called, the block's error)."""
    if not guardrails.active("tool_input"):
        return arguments, None
    try:
        return guardrails.check("tool_input", arguments), None
    except ContentPolicyViolation as blocked:
        return arguments, tool_error(blocked)


def checked_outcome(guardrails: Guardrails, outcome: ToolOutcome) -> ToolOutcome:
    """A tool's result (or error text) through `tool_output`: redacted, or the block's error output."""
    if not guardrails.active("tool_output"):
        return outcome
    try:
        if outcome.error is not None:
            return ToolOutcome(error=guardrails.check("tool_output", outcome.error))
        return ToolOutcome(output=guardrails.check("tool_output", outcome.output or ""))
    except ContentPolicyViolation as blocked:
        return ToolOutcome(error=tool_error(blocked))


def tool_error(blocked: ContentPolicyViolation) -> str:
    """The error output of a call a guardrail blocked; a guardrail set to fail the run re-raises instead."""
    if blocked.on_tool_block == FAIL_THE_RUN:
        raise blocked
    return blocked.message
