"""One request's tool loop as one object: plan, meter, toolset, usage so far, and one finish.

Every renderer (chat JSON and SSE, Responses JSON and SSE, background) drives a Run inside
`with run:` and only turns its events into bytes. Whatever way the block ends (the loop finished,
the client left, a cancel, an upstream error, a bug), `__exit__` reaches `finish(outcome)` exactly
once: it closes the toolset, runs the finishers (a Responses store), and settles the meter.
Accounting on abort is one rule (`LoopState.usage_so_far`): reported usage of finished turns plus
an estimate of the unfinished one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from gateway.accounting.meter import Meter
from gateway.config import Settings
from gateway.db import own_connection
from gateway.errors import CLIENT_CLOSED, GatewayError
from gateway.loop.events import FunctionCallDelta, LoopEvent, LoopFinished, ReasoningDelta, TextDelta
from gateway.loop.failure import Failure
from gateway.loop.tool_loop import LoopPlan, LoopState, loop_events
from gateway.observability.wsgi_middleware import first_token
from gateway.upstream.router import Router

INTERNAL_ERROR = 500
Finisher = Callable[[LoopFinished], None]


@dataclass
class Run:
    """One admitted loop run; use it as a context manager around its rendering."""

    plan: LoopPlan
    meter: Meter
    router: Router
    settings: Settings
    state: LoopState = field(default_factory=LoopState)
    outcome: LoopFinished | None = None
    finishers: list[Finisher] = field(default_factory=list)
    finished: bool = False
    loop: Iterator[LoopEvent] | None = None

    def events(self) -> Iterator[LoopEvent]:
        """The loop's events; the last is LoopFinished, which becomes the outcome."""
        self.loop = loop_events(self.plan, self.router, self.settings, self.meter, self.state)
        for event in self.loop:
            if isinstance(event, LoopFinished):
                self.outcome = event
            elif isinstance(event, TextDelta | ReasoningDelta | FunctionCallDelta):
                first_token(self.plan.route.model_id)
            yield event

    def ended(self, code: str, message: str, status: int, error_type: str = "api_error") -> LoopFinished:
        """A `failed` outcome for a run stopped before the loop finished, billed as used so far."""
        return self.failed(Failure(message, status, error_type, code))

    def failed(self, failure: Failure) -> LoopFinished:
        """The `failed` outcome of a run that ended with this failure, billed as used so far."""
        return LoopFinished("failed", self.state.usage_so_far(), failure=failure)

    def cancelled(self) -> LoopFinished:
        """A `cancelled` outcome, billed as used so far."""
        return LoopFinished("cancelled", self.state.usage_so_far())

    def finish(self, outcome: LoopFinished) -> None:
        """Close the toolset, run the finishers, settle the meter: once, whatever fails."""
        if self.finished:
            return
        self.finished, self.outcome = True, outcome
        try:
            if self.loop is not None:
                self.loop.close()  # an unfinished turn closes its upstream stream
            if self.plan.toolset is not None:
                self.plan.toolset.close()
            for finisher in self.finishers:
                finisher(outcome)
        finally:
            with own_connection():
                self.meter.finish(outcome.usage, outcome.http_status, self.state.route(self.plan.route),
                                  outcome.finish_reason)

    @contextlib.contextmanager
    def finished_on_error(self) -> Iterator[None]:
        """Finish the run if the block raises (a clean exit leaves it running)."""
        try:
            yield
        except BaseException as error:
            self.finish(self.outcome_after(error))
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.finish(self.outcome_after(error))

    def outcome_after(self, error: BaseException | None) -> LoopFinished:
        """How a rendering that ended this way ends the run."""
        if error is None and self.outcome is not None:
            return self.outcome
        if error is None or isinstance(error, GeneratorExit):
            return self.ended("client_disconnected", "The client disconnected before the response finished.",
                              CLIENT_CLOSED)
        if isinstance(error, GatewayError):
            return self.failed(Failure.of(error))
        return self.ended("server_error", "Internal error while running the request.", INTERNAL_ERROR)
