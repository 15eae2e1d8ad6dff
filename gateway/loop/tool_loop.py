"""The one tool loop: model turn -> MCP calls -> model turn ..., yielding loop events.

Chat (`tools: "auto"`) and the Responses API both render these events. Every model turn is
streamed from the upstream so deltas flow as they arrive and silences become KeepAlive events.
The loop never raises a GatewayError: failures end it with LoopFinished(status="failed").
Weak models are held in by `gateway.loop.guards` (repeated calls, a full context, the output cap);
the request's guardrails check the answer text and each MCP call's arguments and result (gateway.loop.checks).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.accounting.meter import Meter
from gateway.accounting.tokens import estimate_text_tokens
from gateway.accounting.usage import Usage
from gateway.config import ProviderSettings, Settings
from gateway.errors import GatewayError, UpstreamRejected
from gateway.guardrails import NO_GUARDRAILS, Guardrails
from gateway.ids import new_id
from gateway.loop.checks import checked_arguments, checked_outcome, output_checked, request_guardrails
from gateway.loop.events import (
    KeepAlive,
    LoopEvent,
    LoopFinished,
    McpApprovalRequested,
    McpCallFinished,
    McpCallStarted,
    McpToolsListed,
    TurnFinished,
)
from gateway.loop.failure import Failure
from gateway.loop.guards import (
    CONTEXT_FULL,
    REPEATED_MESSAGE,
    call_signature,
    capped_completion,
    capped_usage,
    overflows_context,
)
from gateway.loop.turn import ToolCall, TurnReader, completion_as_chunk
from gateway.mcp.naming import is_reserved
from gateway.mcp.tools import ToolOutcome
from gateway.mcp.toolset import Toolset
from gateway.upstream.chunks import read_chunks
from gateway.upstream.client import UpstreamClient, UpstreamStream
from gateway.upstream.prepared import PreparedRequest, prepare
from gateway.upstream.router import Router
from gateway.upstream.routing import Route

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
LIMIT_MESSAGE = "Not executed: this response reached its max_tool_calls limit."
DENIED_MESSAGE = "Not executed: the user denied this tool call."


@dataclass
class ApprovedCall:
    """The client's answer to an mcp_approval_request."""

    approval_request_id: str
    server_label: str
    name: str
    arguments: str
    approved: bool


@dataclass
class LoopPlan:
    """Everything one loop run needs."""

    route: Route
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    toolset: Toolset | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    approved_calls: list[ApprovedCall] = field(default_factory=list)


@dataclass
class OpenTurn:
    """A model turn the upstream has accepted and not finished: its prompt estimate and reader."""

    prompt_tokens: int
    reader: TurnReader

    def estimate(self) -> Usage:
        """What the turn has used so far, estimated (see gateway.accounting.tokens)."""
        return Usage(self.prompt_tokens, estimate_text_tokens(self.reader.generated_text()), estimated=True)


@dataclass
class LoopState:
    """What the loop has done so far."""

    usage: Usage = field(default_factory=Usage)
    tool_calls: int = 0
    turns: int = 0
    choice_released: bool = False  # a forcing tool_choice applies until a tool has run
    open_turn: OpenTurn | None = None
    calls_run: set[tuple[str, str]] = field(default_factory=set)  # call_signature of every call run
    tools_withdrawn: bool = False  # the model repeated a call: its next turns are offered no MCP tools
    answered: Route | None = None  # the route (deployment) that answered the last turn
    attempts: int = 0  # upstream attempts over every turn (the router's retries included)

    def route(self, planned: Route) -> Route:
        """The route a usage row records: the last answering deployment, with every turn's attempts."""
        return planned if self.answered is None else self.answered.after(self.attempts)

    def usage_so_far(self) -> Usage:
        """Reported usage of finished turns plus an estimate of the unfinished one (the abort rule)."""
        return self.usage if self.open_turn is None else self.usage + self.open_turn.estimate()


def loop_events(
    plan: LoopPlan, router: Router, settings: Settings, meter: Meter, state: LoopState
) -> Iterator[LoopEvent]:
    """Run model turns and MCP calls until the model answers; the last event is LoopFinished."""
    messages = list(plan.messages)
    try:
        if plan.toolset is not None:
            yield from (McpToolsListed(label, tools) for label, tools in plan.toolset.listings())
        yield from run_approved_calls(plan, messages, state, settings, request_guardrails(meter))
        while True:
            finished = yield from model_turn(plan, messages, state, router, settings, meter)
            if finished is not None:
                yield finished
                return
    except GatewayError as exc:
        yield LoopFinished("failed", state.usage_so_far(), failure=Failure.of(exc))


def model_turn(
    plan: LoopPlan, messages: list[dict[str, Any]], state: LoopState, router: Router,
    settings: Settings, meter: Meter,
) -> Iterator[LoopEvent]:
    """Stream one model turn; run its MCP calls; return LoopFinished when the loop should end."""
    remaining = None if plan.max_output_tokens is None else plan.max_output_tokens - state.usage.output_tokens
    if remaining is not None and remaining <= 0:
        return LoopFinished("incomplete", state.usage, incomplete_reason="max_output_tokens")
    last_turn = state.turns + 1 >= settings.mcp.max_loop_turns
    offer_mcp = not last_turn and not tool_budget_spent(plan, state) and not state.tools_withdrawn
    prepared = prepare_turn(plan, turn_body(plan, messages, remaining, offer_mcp, state.choice_released), settings)
    meter.check_debt(state.usage, plan.route)  # a debt past its bound ends the run before another turn
    meter.cover_turn(prepared.held_input_tokens)  # the hold covers this turn before it is sent
    reader = TurnReader(is_gateway_tool=plan.toolset.owns if plan.toolset else (lambda name: False))
    turn = OpenTurn(prepared.input_tokens, reader)
    guardrails = request_guardrails(meter)
    try:
        route, opened = router.call([prepared], lambda sent: open_turn(router.client, sent))
        state.answered, state.attempts = route, state.attempts + route.attempts
        if isinstance(opened, Future):
            yield from output_checked(fetch_turn(opened, settings, prepared, turn, state), guardrails)
        else:
            yield from output_checked(stream_turn(opened, settings, turn, state), guardrails)
    except UpstreamRejected as exc:
        if not state.turns or not overflows_context(exc):
            raise  # the client's own prompt is too long: its error
        state.open_turn = None
        return LoopFinished("incomplete", state.usage, incomplete_reason=CONTEXT_FULL)
    usage, reader.finish_reason = capped_usage(reader.usage or turn.estimate(), reader.finish_reason, remaining)
    state.usage, state.turns, state.open_turn = state.usage + usage, state.turns + 1, None
    yield TurnFinished(reader.finish_reason, usage, plan.route.model_id)
    if reader.finish_reason in INCOMPLETE_REASONS:
        return LoopFinished("incomplete", state.usage, incomplete_reason=INCOMPLETE_REASONS[reader.finish_reason])
    calls = reader.tool_calls()
    if offer_mcp and plan.toolset and plan.toolset.functions() and not (calls or reader.text or reader.reasoning):
        state.tools_withdrawn = True  # an empty answer beside tools (see gateway.loop.guards): ask without them
        return None
    gateway_calls = [call for call in calls if plan.toolset and plan.toolset.owns(call.name)]
    if not gateway_calls:
        return LoopFinished("completed", state.usage)
    messages.append(reader.assistant_message())
    awaiting_approval = yield from run_gateway_calls(plan, gateway_calls, messages, state, settings, guardrails)
    state.choice_released = True
    if awaiting_approval or len(gateway_calls) < len(calls):
        return LoopFinished("completed", state.usage)
    return None


def turn_body(
    plan: LoopPlan, messages: list[dict[str, Any]], remaining: int | None, offer_mcp: bool,
    choice_released: bool = False,
) -> dict[str, Any]:
    """The chat-completions body of one turn, before preparing (prepare_turn)."""
    body = {**plan.params, "messages": messages, "stream": True}
    if choice_released and _forcing(body.get("tool_choice")):
        body["tool_choice"] = "auto"
    tools = list(plan.params.get("tools") or [])
    if plan.toolset is not None and offer_mcp:
        tools += plan.toolset.functions()
    if tools:
        body["tools"] = tools
        body.setdefault("tool_choice", "auto")  # OpenAI's default, said aloud: llama-cpp-python ignores tools without it
    else:
        for key in ("tools", "tool_choice", "parallel_tool_calls"):
            body.pop(key, None)
    if plan.toolset is not None and not offer_mcp and _forces_mcp(body.get("tool_choice")):
        body["tool_choice"] = "auto" if tools else body.pop("tool_choice")
    elif plan.toolset is not None and _forces_mcp(body.get("tool_choice")):
        body["tool_choice"] = _offered_choice(plan.toolset, body["tool_choice"])
    if remaining is not None:
        body["max_tokens"] = remaining
    return body


def prepare_turn(plan: LoopPlan, body: dict[str, Any], settings: Settings) -> PreparedRequest:
    """One turn as its upstream gets it (on the model's first deployment; the router may move it)."""
    return turn_on(plan.route, body, settings.providers[plan.route.provider])


def turn_on(route: Route, body: dict[str, Any], provider: ProviderSettings) -> PreparedRequest:
    """One turn for a deployment: streamed, unless it offers tools to an upstream that can't stream them."""
    streams = not (body.get("tools") and not provider.streams_tool_calls)
    prepared = prepare(route, "chat/completions", body, provider, streams)
    return replace(prepared, remake=lambda other, settings: turn_on(other, body, settings))


def open_turn(client: UpstreamClient, prepared: PreparedRequest) -> UpstreamStream | Future[dict[str, Any]]:
    """Send one turn: its stream, or its JSON answer being fetched on the reader pool."""
    if prepared.stream:
        return client.open_stream(prepared.provider, prepared.path, prepared.body,
                                  read_timeout_s=prepared.read_timeout_s)
    return client.submit_json(prepared.provider, prepared.path, prepared.body, prepared.read_timeout_s)


def first_turn(plan: LoopPlan, settings: Settings) -> PreparedRequest:
    """The first turn as known before the toolset opens (no MCP tools yet): what admission holds."""
    return prepare_turn(plan, turn_body(plan, list(plan.messages), plan.max_output_tokens, False), settings)


def _forcing(choice: Any) -> bool:
    return choice == "required" or isinstance(choice, dict)


def _forces_mcp(choice: Any) -> bool:
    return isinstance(choice, dict) and is_reserved(str((choice.get("function") or {}).get("name", "")))


def _offered_choice(toolset: Toolset, choice: dict[str, Any]) -> dict[str, Any]:
    """A forced MCP tool choice under the name the tool is offered as (`get.time` is offered safe)."""
    offered = toolset.lookup(str(choice["function"]["name"]))
    return choice if offered is None else {"type": "function", "function": {"name": offered.function_name}}


def tool_budget_spent(plan: LoopPlan, state: LoopState) -> bool:
    """Whether max_tool_calls is used up."""
    return plan.max_tool_calls is not None and state.tool_calls >= plan.max_tool_calls


def stream_turn(stream: UpstreamStream, settings: Settings, turn: OpenTurn, state: LoopState) -> Iterator[LoopEvent]:
    """Relay one upstream stream into the turn's reader, yielding its events and keep-alives."""
    state.open_turn = turn
    try:
        for chunk in read_chunks(stream.events(settings.server.keepalive_interval_s)):
            if chunk is None:
                yield KeepAlive()
            else:
                yield from turn.reader.feed(chunk)
    finally:
        stream.close()


def fetch_turn(
    future: Future[dict[str, Any]], settings: Settings, prepared: PreparedRequest, turn: OpenTurn, state: LoopState
) -> Iterator[LoopEvent]:
    """One turn as a JSON request (for upstreams that cannot stream tool choice), with keep-alives."""
    state.open_turn = turn  # the upstream works on it while we wait
    while not wait([future], timeout=settings.server.keepalive_interval_s).done:
        yield KeepAlive()
    try:
        completion = future.result()
    except GatewayError:
        state.open_turn = None  # refused or failed upstream: nothing to bill for this turn
        raise
    yield from turn.reader.feed(completion_as_chunk(capped_completion(completion, prepared.body.get("max_tokens"))))


def run_gateway_calls(
    plan: LoopPlan, calls: list[ToolCall], messages: list[dict[str, Any]], state: LoopState, settings: Settings,
    guardrails: Guardrails = NO_GUARDRAILS,
) -> Iterator[LoopEvent]:
    """Execute (or hold for approval) the MCP calls of one turn; True when approval is awaited."""
    awaiting = False
    for call in calls:
        offered = plan.toolset.lookup(call.name)
        if offered is None:
            messages.append(tool_result(call.call_id, f"Error: no tool named {call.name!r}."))
        elif offered.needs_approval:
            awaiting = True
            yield McpApprovalRequested(new_id("mcpr"), offered.server_label, offered.tool.name,
                                       call.arguments)
        elif tool_budget_spent(plan, state):
            messages.append(tool_result(call.call_id, LIMIT_MESSAGE))
        elif call_signature(call.name, call.arguments) in state.calls_run:
            state.tools_withdrawn = True
            messages.append(tool_result(call.call_id, REPEATED_MESSAGE))
        else:
            state.calls_run.add(call_signature(call.name, call.arguments))
            outcome = yield from execute(plan.toolset, offered.server_label, offered.tool.name, call.arguments,
                                         new_id("mcp"), settings, guardrails)
            state.tool_calls += 1
            messages.append(tool_result(call.call_id, outcome_text(outcome)))
    return awaiting


def run_approved_calls(
    plan: LoopPlan, messages: list[dict[str, Any]], state: LoopState, settings: Settings,
    guardrails: Guardrails = NO_GUARDRAILS,
) -> Iterator[LoopEvent]:
    """Before the first turn: run what the client approved, report what it denied."""
    for approval in plan.approved_calls:
        name = plan.toolset.function_for(approval.server_label, approval.name) if plan.toolset else None
        call = ToolCall(0, approval.approval_request_id, name or approval.name, approval.arguments)
        messages.append({"role": "assistant", "content": "", "tool_calls": [call.as_message_part()]})
        if not approval.approved or name is None:
            messages.append(tool_result(call.call_id, DENIED_MESSAGE))
            continue
        state.calls_run.add(call_signature(name, approval.arguments))
        outcome = yield from execute(plan.toolset, approval.server_label, approval.name, approval.arguments,
                                     new_id("mcp"), settings, guardrails)
        state.tool_calls += 1
        messages.append(tool_result(call.call_id, outcome_text(outcome)))


def execute(
    toolset: Toolset, server_label: str, tool_name: str, arguments: str, item_id: str, settings: Settings,
    guardrails: Guardrails = NO_GUARDRAILS,
) -> Iterator[LoopEvent]:
    """One MCP call with its events; keep-alives flow while the tool works; guardrails check both ways."""
    arguments, blocked = checked_arguments(guardrails, arguments)
    yield McpCallStarted(item_id, server_label, tool_name, arguments)
    if blocked is not None:
        outcome = ToolOutcome(error=blocked)
    else:
        future: Future[ToolOutcome] = toolset.start_call(server_label, tool_name, arguments)
        while not wait([future], timeout=settings.server.keepalive_interval_s).done:
            yield KeepAlive()
        outcome = checked_outcome(guardrails, future.result())
    yield McpCallFinished(item_id, output=outcome.output, error=outcome.error)
    return outcome


def tool_result(call_id: str, content: str) -> dict[str, Any]:
    """A `tool` message answering one call."""
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def outcome_text(outcome: ToolOutcome) -> str:
    """What the model reads back from a tool."""
    return outcome.output or "" if outcome.error is None else f"Error: {outcome.error}"
