"""One batch line, sent like a live request: prepared, admitted by the meter (hold), routed, relayed, charged.

The differences from a live request: never streamed; held and charged [batches] batch_price_fraction of the
price (the usage row says `batch`); not counted against the key's rpm and tpm (a batch never uses up its
key's live quota: its pace is [batches] concurrency_per_account); it waits while every deployment of its
model is past the batch part of its limits ([batches] live_reserve is kept for live requests). Its
guardrails are a live request's (the defaults, its model's, its account's and its key's; no profile). An
error becomes the line's answer (its status and OpenAI's error body) instead of an HTTP response.

A line is charged once: one whose request was charged already (its worker was killed between the charge
and the line's recorded result) is sent again for its answer at no charge.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway import services
from gateway.accounting.keys import Caller
from gateway.accounting.meter import Meter, refusals_recorded
from gateway.batches import store
from gateway.batches.lines import InputLine
from gateway.errors import GatewayError, render_error
from gateway.guardrails.kept import keep_request_guardrails
from gateway.upstream import relay, routing
from gateway.upstream.prepared import prepare_candidates

LineCheck = Callable[[str, dict[str, Any]], None]  # validates a body for an endpoint (raises InvalidRequest)
WAIT_S = 0.5  # between looks at a deployment's room


@dataclass(frozen=True)
class Answer:
    """A line's outcome: its HTTP-like status and body."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Whether it belongs in the output file."""
        return self.status == 200


def run_line(caller: Caller, path: str, line: InputLine, request_id: str, check: LineCheck,
             stop: threading.Event) -> Answer | None:
    """Send one line; its answer, or None when `stop` was set while it waited (the line is left for later)."""
    body = {key: value for key, value in line.body.items() if key not in ("stream", "stream_options")}
    try:
        check(path, body)
        return send(caller, path, body, request_id, stop)
    except GatewayError as error:
        return Answer(error.status, render_error(error))


def send(caller: Caller, path: str, body: dict[str, Any], request_id: str, stop: threading.Event) -> Answer | None:
    """Prepare, wait for room and admission, relay; an upstream or accounting error raises."""
    settings = services.settings()
    router = services.router()
    model = body.get("model")
    guardrails = keep_request_guardrails(settings, caller, endpoint=path, model=model if isinstance(model, str) else None,
                                         profile=None, request_ref=request_id)
    if guardrails.active("input"):
        body = guardrails.check_body(path, body)  # a block raises: the line's 400
    with refusals_recorded(caller, path, model, request_id):  # a 404 or 402 writes its usage row, as live
        candidates = prepare_candidates(routing.candidates(settings, body), path, body, settings.providers, False)
        first = candidates[0]
        part = 1 - settings.batches.live_reserve
        while not router.has_room(first.route, first.held_input_tokens + first.held_output_tokens, part):
            if stop.wait(WAIT_S):
                return None
        estimates = [prepared.estimate() for prepared in candidates]
        fraction = 0.0 if store.charged_before(request_id) else settings.batches.batch_price_fraction
        meter = Meter.admit(caller, estimates, path, request_id, settings, services.limiter(),
                            batch_price_fraction=fraction)
    meter.guardrails = guardrails  # the usage row names those that acted, as a live request's does
    output = (lambda text: guardrails.check("output", text)) if guardrails.active("output") else None
    return Answer(200, relay.relay_json(router, candidates, meter, output))


def line_request_id(batch_id: str, number: int) -> str:
    """The request id of a line: its usage row's (and the output line's `request_id`)."""
    return f"{batch_id}-{number}"[:64]
