"""POST /v1/responses: request -> chain -> tool loop -> ResponseBuilder -> store -> meter.

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway import routing, services, sse
from gateway.auth import Caller
from gateway.config import Settings
from gateway.db import database
from gateway.errors import BadInput, InsufficientBalance, InvalidRequest, UpstreamRejected
from gateway.loop import ApprovedCall, LoopPlan, run_loop
from gateway.loop_events import (
    FunctionCallDelta,
    KeepAlive,
    LoopEvent,
    LoopFinished,
    ReasoningDelta,
    TextDelta,
    TurnFinished,
    Usage,
)
from gateway.mcp.assemble import declared_toolset
from gateway.mcp.toolset import Toolset
from gateway.metering import Meter
from gateway.responses import compaction, store, translate
from gateway.responses.echo import priced_usage, request_echo
from gateway.responses.events import ResponseBuilder
from gateway.responses.schema import CreateResponseRequest
from gateway.responses.validation import parse_create_request
from gateway.upstream import UpstreamClient
from gateway.usage import estimate_text_tokens

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499


@dataclass
class UsageSoFar:
    """Usage of a run that never reached LoopFinished (client gone, cancelled): turns + an estimate."""

    turns: Usage = field(default_factory=Usage)
    finished_turns: int = 0
    text: str = ""

    def take(self, event: LoopEvent) -> None:
        if isinstance(event, TurnFinished):
            self.turns, self.finished_turns, self.text = self.turns + event.usage, self.finished_turns + 1, ""
        elif isinstance(event, (TextDelta, ReasoningDelta)):
            self.text += event.text
        elif isinstance(event, FunctionCallDelta):
            self.text += (event.name or "") + event.arguments

    def total(self, meter: Meter) -> Usage:
        if not self.finished_turns:
            return meter.estimate(self.text)
        return self.turns + Usage(0, estimate_text_tokens(self.text), estimated=bool(self.text))


@dataclass
class Run:
    """One admitted response run: its request, loop plan, meter, builder and own input items."""

    req: CreateResponseRequest
    caller: Caller
    plan: LoopPlan
    meter: Meter
    builder: ResponseBuilder
    input_items: list[dict[str, Any]]
    settings: Settings
    client: UpstreamClient
    concluded: bool = False

    @property
    def response_id(self) -> str:
        return self.builder.response()["id"]

    def events(self) -> Iterator[LoopEvent]:
        """The tool loop of this run."""
        return run_loop(self.plan, self.client, self.settings, self.meter)

    def close(self) -> None:
        """Disconnect the run's per-request MCP servers."""
        if self.plan.toolset is not None:
            self.plan.toolset.close()


@dataclass
class Created:
    """What POST /v1/responses answers: a JSON object or an SSE byte stream."""

    body: dict[str, Any] | None = None
    stream: Iterator[bytes] | None = None


def create_response(body: dict[str, Any], caller: Caller, request_id: str) -> Created:
    """Validate, admit and run (or stream, or queue) one response."""
    settings = services.settings()
    body = compaction.expand_input(body, caller.account.id, lambda: compaction.compaction_key(settings))
    req = parse_create_request(body)
    check_modes(req)
    run = admit(req, caller, request_id, settings)
    if req.background:
        from gateway.responses import background  # the runner imports this module

        return Created(body=background.start(run))
    events = run.events()
    first = next(events)
    if req.stream:
        reject_early_failure(run, first)
        return Created(stream=stream_run(run, events, first))
    return Created(body=run_to_end(run, itertools.chain([first], events)))


def check_modes(req: CreateResponseRequest) -> None:
    """background needs store; background streams are not offered."""
    if req.background and not req.store:
        raise InvalidRequest("background responses must be stored: set store to true.", param="store")
    if req.background and req.stream:
        raise InvalidRequest(
            "Streaming background responses is not supported; poll GET /v1/responses/{id}.", param="stream"
        )


def admit(req: CreateResponseRequest, caller: Caller, request_id: str, settings: Settings) -> Run:
    """Resolve the model and chain, reserve credits (402/429), open MCP servers: a runnable Run."""
    route = routing.resolve(settings, req.model)
    history = store.history_before(req.previous_response_id, caller.account.id)
    own = store.stored_input_items(req.input_items())
    approved = approved_calls(own, history.items)
    messages = translate.input_to_messages(history.items, req.instructions)
    messages += translate.input_to_messages(own, None)
    params = translate.request_to_chat_params(req)
    estimate = {
        "messages": messages,
        "tools": params.get("tools"),
        "max_output_tokens": req.max_output_tokens,
    }
    meter = Meter.admit(caller, [route], estimate, "responses", request_id, settings, services.limiter())
    toolset = open_toolset(req, history, meter)
    plan = LoopPlan(route, messages, params, toolset, req.max_output_tokens, req.max_tool_calls, approved)
    builder = ResponseBuilder(store.new_response_id(), request_echo(req), int(time.time()), route.model_id)
    return Run(req, caller, plan, meter, builder, own, settings, services.upstream())


def open_toolset(req: CreateResponseRequest, history: store.History, meter: Meter) -> Toolset | None:
    """The request's MCP servers, connected (servers listed earlier in the chain are not re-listed)."""
    if not req.mcp_tools():
        return None
    targets = translate.allowed_mcp_targets(req)
    with meter.closed_on_failure():
        return declared_toolset(services.mcp(), req.mcp_tools(), history.listed_servers, targets)


def approved_calls(own: list[dict[str, Any]], history: list[dict[str, Any]]) -> list[ApprovedCall]:
    """The client's mcp_approval_response items, each matched with the request it answers."""
    requests = {item["id"]: item for item in history + own if item.get("type") == "mcp_approval_request"}
    answers = []
    for index, item in enumerate(own):
        if item.get("type") != "mcp_approval_response":
            continue
        request = requests.get(item["approval_request_id"])
        if request is None:
            raise BadInput(
                f"No mcp_approval_request with id {item['approval_request_id']!r} in this conversation.",
                param=f"input[{index}].approval_request_id",
            )
        answers.append(
            ApprovedCall(
                request["id"], request["server_label"], request["name"], request["arguments"], item["approve"]
            )
        )
    return answers


def http_status(done: LoopFinished) -> int:
    """The status a usage row records for a finished loop."""
    return (done.error_status or 502) if done.status == "failed" else 200


def reject_early_failure(run: Run, event: LoopEvent) -> None:
    """A 4xx failure before any output is an HTTP error (settled first, never stored)."""
    if not isinstance(event, LoopFinished) or event.status != "failed" or run.builder.response()["output"]:
        return
    status = event.error_status or 502
    if not 400 <= status < 500:
        return
    run.close()
    run.concluded = True
    run.meter.finish(event.usage, status, run.plan.route)
    message = event.error_message or "The upstream rejected the request."
    if status == InsufficientBalance.status:
        raise InsufficientBalance(message)
    raise UpstreamRejected(message, status=status, code=event.error_code)


def conclude(
    run: Run, done: LoopFinished, persist: Callable[[dict[str, Any]], Any] | None = None
) -> list[dict]:
    """Close the response (events up to the terminal one), store it, settle the meter."""
    run.concluded = True
    events = run.builder.finish(done)
    response = events[-1]["response"]
    response["usage"] = priced_usage(done.usage, run.meter, run.plan.route)
    if persist is not None:
        persist(response)
    elif run.req.store:
        store.save(response, run.input_items, run.caller)
    run.meter.finish(done.usage, http_status(done), run.plan.route)
    return events


def run_to_end(run: Run, events: Iterator[LoopEvent]) -> dict[str, Any]:
    """JSON mode: the whole loop, then the final response object."""
    done: LoopFinished | None = None
    try:
        for event in events:
            if isinstance(event, LoopFinished):
                done = event
                break
            run.builder.feed(event)
    finally:
        run.close()
    reject_early_failure(run, done)
    return conclude(run, done)[-1]["response"]


def frame(event: dict[str, Any]) -> bytes:
    """One event as one SSE frame (`event:` equals `type`)."""
    return sse.encode(event, event["type"])


def stream_run(run: Run, events: Iterator[LoopEvent], first: LoopEvent) -> Iterator[bytes]:
    """Streaming mode, with its own DB connection (Flask's teardown has run by now)."""
    with database.connection_context():
        yield from _stream(run, events, first)


def _stream(run: Run, events: Iterator[LoopEvent], first: LoopEvent) -> Iterator[bytes]:
    used = UsageSoFar()
    ending = ("client_disconnected", "The client disconnected before the response finished.", CLIENT_CLOSED)
    try:
        yield from map(frame, run.builder.start())
        done: LoopFinished | None = None
        for event in itertools.chain([first], events):
            used.take(event)
            if isinstance(event, KeepAlive):
                yield sse.comment()
            elif isinstance(event, LoopFinished):
                done = event
                break
            else:
                yield from map(frame, run.builder.feed(event))
        if done.status == "failed":
            yield frame(
                run.builder.error_event(
                    done.error_code or "server_error", done.error_message or "The response failed."
                )
            )
        yield from map(frame, conclude(run, done))
        yield sse.DONE
    except Exception:
        log.exception("streaming response %s failed", run.response_id)
        ending = ("server_error", "Internal error while streaming the response.", 500)
        if not run.concluded:
            yield frame(run.builder.error_event(*ending[:2]))
    finally:
        events.close()
        run.close()
        if not run.concluded:
            conclude_failed(run, used.total(run.meter), *ending)


def conclude_failed(
    run: Run,
    usage: Usage,
    code: str,
    message: str,
    status: int,
    persist: Callable[[dict[str, Any]], Any] | None = None,
) -> list[dict]:
    """Conclude a run that will never reach LoopFinished as `failed` with this error."""
    done = LoopFinished("failed", usage, error_code=code, error_message=message, error_status=status)
    return conclude(run, done, persist)
