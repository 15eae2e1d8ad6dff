"""A Run rendered as one Responses object: its request, builder, own input items and store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting.keys import Caller
from gateway.errors import InsufficientBalance, UpstreamRejected
from gateway.loop.events import LoopFinished
from gateway.loop.run import Run
from gateway.responses import store
from gateway.responses.echo import priced_usage
from gateway.responses.events import ResponseBuilder
from gateway.responses.schema import CreateResponseRequest

Persist = Callable[[dict[str, Any]], Any]


@dataclass
class ResponseRun:
    """One response: the run's finish also closes the response object and stores it."""

    run: Run
    req: CreateResponseRequest
    caller: Caller
    builder: ResponseBuilder
    input_items: list[dict[str, Any]]
    persist: Persist | None = None  # background runs write through their own row update
    terminal_events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run.finishers.append(self.conclude)

    @property
    def response_id(self) -> str:
        return self.builder.response()["id"]

    def rejected(self, outcome: LoopFinished) -> bool:
        """A 4xx before any output: answered as that HTTP error, never stored."""
        return self.persist is None and outcome.failed_early and not self.builder.response()["output"]

    def conclude(self, outcome: LoopFinished) -> None:
        """The run's finisher: the terminal events, the priced usage, the stored row."""
        if self.rejected(outcome):
            return
        if outcome.status == "cancelled":
            response = self.builder.response()
            response["status"] = "cancelled"
        else:
            self.terminal_events = self.builder.finish(outcome)
            response = self.terminal_events[-1]["response"]
        response["usage"] = priced_usage(outcome.usage, self.run.meter, self.run.plan.route)
        if self.persist is not None:
            self.persist(response)
        elif self.req.store:
            store.save(response, self.input_items, self.caller)

    def raise_if_rejected(self) -> None:
        """After the run finished: raise the HTTP error of a rejected run."""
        outcome = self.run.outcome
        if outcome is None or not self.rejected(outcome):
            return
        message = outcome.error_message or "The upstream rejected the request."
        if outcome.http_status == InsufficientBalance.status:
            raise InsufficientBalance(message)
        raise UpstreamRejected(message, status=outcome.http_status, code=outcome.error_code)

    def final_response(self) -> dict[str, Any]:
        """The finished response object."""
        return self.terminal_events[-1]["response"]
