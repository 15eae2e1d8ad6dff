"""A Run rendered as one Responses object: its request, builder, own input items and store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting.keys import Caller
from gateway.loop.events import LoopFinished
from gateway.loop.run import Run
from gateway.responses import conversations, store
from gateway.responses.builder import ResponseBuilder
from gateway.responses.echo import priced_usage
from gateway.responses.schema import CreateResponseRequest
from gateway.responses.translate import output_items_to_input

Persist = Callable[[dict[str, Any]], Any]


@dataclass
class ResponseAssembly:
    """One response: the run's finish also closes the response object and stores it."""

    run: Run
    req: CreateResponseRequest
    caller: Caller
    builder: ResponseBuilder
    input_items: list[dict[str, Any]]
    persist: Persist | None = None  # background runs write through their own row update
    history: store.History = field(default_factory=store.History)  # what the turn continues
    conversation_id: str | None = None  # the conversation the turn's items are appended to
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
        """The run's finisher: the terminal events, the priced usage, the conversation's items, the stored row."""
        if self.rejected(outcome):
            return
        if outcome.status == "cancelled":
            response = self.builder.response()
            response["status"] = "cancelled"
        else:
            self.terminal_events = self.builder.finish(outcome)
            response = self.terminal_events[-1]["response"]
        response["usage"] = priced_usage(outcome.usage, self.run.meter, self.run.plan.route)
        if self.conversation_id is not None and response["status"] in conversations.APPENDED_STATUSES:
            # before the row: whoever sees the stored status `completed` finds the items too
            conversations.append_turn(self.conversation_id, self.input_items, response["output"])
        if self.persist is not None:
            self.persist(response)
        elif self.req.store:
            store.save(response, self.input_items, self.caller)

    def raise_if_rejected(self) -> None:
        """After the run finished: raise the HTTP error of a rejected run."""
        outcome = self.run.outcome
        if outcome is not None and outcome.failure is not None and self.rejected(outcome):
            raise outcome.failure.error()

    def raise_if_failed_without_output(self) -> None:
        """After the run finished: any failure before output is its HTTP error (JSON mode; stored as failed)."""
        outcome = self.run.outcome
        if outcome is not None and outcome.failure is not None and not self.builder.response()["output"]:
            raise outcome.failure.error()

    def chain(self) -> store.History:
        """The history a next turn continuing this response inherits (the WebSocket's connection cache)."""
        output = self.final_response()["output"]
        listed = {item["server_label"] for item in output if item["type"] == "mcp_list_tools"}
        return store.History(
            self.history.items + self.input_items + output_items_to_input(output),
            self.history.listed_servers | listed,
        )

    def final_response(self) -> dict[str, Any]:
        """The finished response object."""
        return self.terminal_events[-1]["response"]

