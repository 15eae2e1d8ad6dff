"""Admitting POST /v1/responses: validate, load the chain, reserve credits, open MCP servers."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from gateway import services
from gateway.accounting.keys import Caller
from gateway.accounting.meter import Meter
from gateway.config import Settings
from gateway.errors import BadInput, InvalidRequest
from gateway.loop.run import Run
from gateway.loop.tool_loop import ApprovedCall, LoopPlan, first_turn
from gateway.mcp.access import usable
from gateway.mcp.assemble import declared_toolset
from gateway.mcp.toolset import Toolset
from gateway.responses import compaction, conversations, store, translate
from gateway.responses.assembly import ResponseAssembly
from gateway.responses.builder import ResponseBuilder
from gateway.responses.echo import request_echo
from gateway.responses.schema import CreateResponseRequest
from gateway.responses.validation import parse_create_request
from gateway.upstream import routing


def admit_response(
    body: dict[str, Any], caller: Caller, request_id: str, chains: Mapping[str, store.History] | None = None,
    profile_servers: Sequence[str] = (),
) -> ResponseAssembly:
    """Validate a create request and admit it: a ResponseAssembly ready to render (JSON, SSE, WebSocket, background).

    `chains` are histories the caller's connection holds in memory (WebSocket mode), by response id.
    `profile_servers` (a profile route's) are offered as built-in `mcp` tools unless the request declares them.
    """
    settings = services.settings()
    if profile_servers:
        labels = usable(settings, profile_servers, caller.account.scope, caller.mcp_allow_list)
        body = with_builtin_servers(body, labels)
    body = compaction.expand_input(body, caller.account.id, lambda: compaction.compaction_key(settings))
    req = parse_create_request(body)
    check_modes(req)
    history = inherited_history(req, caller.account.id, chains or {})
    return admit(req, caller, request_id, settings, history)


def with_builtin_servers(body: dict[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """The body with an `mcp` tool for each built-in server label it does not declare itself."""
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        return body  # validation names the problem
    declared = {tool.get("server_label") for tool in tools if isinstance(tool, dict) and tool.get("type") == "mcp"}
    added = [{"type": "mcp", "server_label": label, "require_approval": "never"}
             for label in labels if label not in declared]
    return {**body, "tools": tools + added} if added else body


def check_modes(req: CreateResponseRequest) -> None:
    """background needs store; background streams are not offered; one of conversation or chain."""
    if req.conversation is not None and req.previous_response_id is not None:
        raise InvalidRequest(
            "Mutually exclusive parameters: send either 'previous_response_id' or 'conversation', not both.",
            param="conversation",
            code="mutually_exclusive_parameters",
        )
    if req.background and not req.store:
        raise InvalidRequest("background responses must be stored: set store to true.", param="store")
    if req.background and req.stream:
        raise InvalidRequest(
            "Streaming background responses is not supported; poll GET /v1/responses/{id}.", param="stream"
        )


def inherited_history(
    req: CreateResponseRequest, account_id: int, chains: Mapping[str, store.History]
) -> store.History:
    """What the turn continues: its conversation, a chain held in memory, or a stored chain."""
    if req.conversation_id is not None:
        return conversations.history(req.conversation_id, account_id)
    if req.previous_response_id in chains:
        return chains[req.previous_response_id]
    return store.history_before(req.previous_response_id, account_id)


def admit(
    req: CreateResponseRequest, caller: Caller, request_id: str, settings: Settings, history: store.History
) -> ResponseAssembly:
    """Resolve the model, reserve credits (402/429), open MCP servers: a runnable response."""
    route = routing.resolve(settings, req.model)
    own = store.stored_input_items(req.input_items())
    check_tool_outputs(own, history.items)
    approved = approved_calls(own, history.items)
    messages = translate.input_to_messages(history.items, req.instructions)
    messages += translate.input_to_messages(own, None)
    params = translate.request_to_chat_params(req)
    cap = req.max_output_tokens or route.settings.max_output_tokens  # the hold's cap is the loop's total
    plan = LoopPlan(route, messages, params, None, cap, req.max_tool_calls, approved)
    response_id = store.new_response_id()  # also the usage row's generation id
    first = first_turn(plan, settings).estimate()  # MCP tools are held when turn 1 is sent
    meter = Meter.admit(caller, [first], "responses", request_id, settings, services.limiter(),
                        generation_id=response_id)
    with meter.closed_on_failure():
        plan.toolset = open_toolset(req, history, caller)
        builder = ResponseBuilder(response_id, request_echo(req), int(time.time()), route.model_id)
        run = Run(plan, meter, services.router(), settings)
        return ResponseAssembly(run, req, caller, builder, own, history=history, conversation_id=req.conversation_id)


def open_toolset(req: CreateResponseRequest, history: store.History, caller: Caller) -> Toolset | None:
    """The request's MCP servers, connected (servers listed earlier in the chain are not re-listed)."""
    if not req.mcp_tools():
        return None
    targets = translate.allowed_mcp_targets(req)
    return declared_toolset(services.mcp(), req.mcp_tools(), history.listed_servers, targets, caller.account.scope,
                            caller.mcp_allow_list)


def check_tool_outputs(own: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
    """Each function_call_output answers a function_call of the conversation (as OpenAI's API checks)."""
    calls = {item.get("call_id") for item in history + own if item.get("type") == "function_call"}
    for index, item in enumerate(own):
        if item.get("type") == "function_call_output" and item["call_id"] not in calls:
            raise InvalidRequest(
                f"No tool call found for function call output with call_id {item['call_id']!r}.",
                param=f"input[{index}].call_id",
            )


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
