"""The parts of a response object that are not events: the request echo and the usage object."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.accounting.credits import to_credits
from gateway.accounting.usage import Usage
from gateway.responses.schema import CreateResponseRequest, FunctionTool, McpTool

if TYPE_CHECKING:
    from gateway.accounting.meter import Meter
    from gateway.upstream.routing import Route


def request_echo(req: CreateResponseRequest) -> dict[str, Any]:
    """The request fields a response object echoes, with the spec's defaults filled in."""
    reasoning = req.reasoning
    conversation = {"conversation": {"id": req.conversation_id}} if req.conversation_id else {}
    return {
        "previous_response_id": req.previous_response_id,
        **conversation,
        "instructions": req.instructions,
        "tools": [_tool_echo(tool) for tool in req.tools],
        "tool_choice": req.tool_choice
        if isinstance(req.tool_choice, str)
        else req.tool_choice.model_dump(exclude_none=True),
        "truncation": req.truncation,
        "parallel_tool_calls": req.parallel_tool_calls,
        "text": _text_echo(req),
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "presence_penalty": req.presence_penalty or 0.0,
        "frequency_penalty": req.frequency_penalty or 0.0,
        "top_logprobs": req.top_logprobs or 0,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "reasoning": {
            "effort": reasoning.effort if reasoning else None,
            "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None,
        },
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "store": req.store,
        "background": req.background,
        "service_tier": "default" if req.service_tier in (None, "auto") else req.service_tier,
        "metadata": dict(req.metadata),
        "safety_identifier": req.safety_identifier,
        "prompt_cache_key": req.prompt_cache_key,
        "user": req.user,
    }


def _tool_echo(tool: FunctionTool | McpTool) -> dict[str, Any]:
    if isinstance(tool, McpTool):
        return {key: value for key, value in tool.public_dict().items() if value is not None}
    return tool.model_dump()


def _text_echo(req: CreateResponseRequest) -> dict[str, Any]:
    text = req.text.model_dump(by_alias=True, exclude_none=True)
    if text["format"]["type"] == "json_schema":
        # The spec's ResponseResource types text.format.schema as null: the schema is not echoed.
        text["format"].update(schema=None, description=req.text.format.description)
        text["format"]["strict"] = bool(req.text.format.strict)
    return text


def usage_dict(usage: Usage) -> dict[str, Any]:
    """The Responses usage object for loop usage."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def priced_usage(usage: Usage, meter: Meter, route: Route) -> dict[str, Any]:
    """The usage object plus `cost`: the credits this usage costs on the route."""
    return {**usage_dict(usage), "cost": to_credits(meter.cost_of(usage, route))}
