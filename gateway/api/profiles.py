"""mcp.run-style profile routes: /api/v1/openai/{scope}/{profile}/chat/completions, /models and /responses."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response

from gateway import services
from gateway.accounting.keys import current_caller
from gateway.api import catalog, responses, responses_ws
from gateway.api.chat import checked, executed_calls_form, relay_upstream, run_with_tools, validated
from gateway.api.http import authenticated_blueprint, json_object
from gateway.api.openai_requests import ChatRequest
from gateway.config import ProfileSettings
from gateway.mcp.access import profile_for
from gateway.serving.http_conventions import request_id

bp = authenticated_blueprint("profiles", __name__, url_prefix="/api/v1/openai/<scope>/<profile>")


def profile_settings(scope: str, profile: str) -> ProfileSettings:
    """The profile's settings; 404 when it does not exist or the key's account may not use it."""
    return profile_for(services.settings(), f"{scope}/{profile}", current_caller().account.scope)


def profile_servers(scope: str, profile: str) -> list[str]:
    """The profile's MCP servers; 404 when it does not exist or the key's account may not use it."""
    return profile_settings(scope, profile).mcp_servers


@bp.post("/chat/completions")
def chat_completions(scope: str, profile: str) -> Response:
    """Chat in a profile; `tools: "auto"` (or the profile's `tools_by_default`) offers and runs its MCP tools."""
    settings = profile_settings(scope, profile)
    body = checked("chat/completions", validated(ChatRequest))
    if body.get("tools") == "auto" or (settings.tools_by_default and only_function_tools(body.get("tools"))):
        return run_with_tools(body, settings.mcp_servers, executed_calls_form(body))
    return relay_upstream("chat/completions", body)


def only_function_tools(tools: Any) -> bool:
    """No tools, or only function tools: what the profile's tools may be offered beside."""
    return tools is None or (isinstance(tools, list) and
                             all(isinstance(tool, dict) and tool.get("type") == "function" for tool in tools))


@bp.get("/models")
def list_models(scope: str, profile: str) -> Response:
    """The models a profile can use (every configured model)."""
    profile_servers(scope, profile)
    return catalog.list_models()


@bp.post("/responses")
def create_response(scope: str, profile: str) -> Response:
    """The Responses API in a profile: its servers are offered as built-in `mcp` tools (unless declared)."""
    labels = profile_servers(scope, profile)
    return responses.create(json_object(), labels)


@bp.get("/responses", websocket=True)
@bp.get("/responses")
def responses_socket(scope: str, profile: str) -> Response:
    """Responses WebSocket mode in a profile: every turn is offered the profile's servers."""
    labels = profile_servers(scope, profile)
    return responses_ws.serve(request_id(), labels)


@bp.post("/responses/compact")
def compact_response(scope: str, profile: str) -> Response:
    """Compaction under the profile's base URL, as on /v1 (a chain of any route compacts the same)."""
    profile_servers(scope, profile)
    return responses.compact_response()


def stored_response_view(view: Callable[..., Response]) -> Callable[..., Response]:
    """A /v1/responses/{id}... view under the profile's base URL (the same account-wide store)."""

    @functools.wraps(view)
    def in_profile(scope: str, profile: str, response_id: str) -> Response:
        profile_servers(scope, profile)
        return view(response_id)

    return in_profile


bp.get("/responses/<response_id>")(stored_response_view(responses.get_response))
bp.delete("/responses/<response_id>")(stored_response_view(responses.delete_response))
bp.get("/responses/<response_id>/input_items")(stored_response_view(responses.list_input_items))
bp.post("/responses/<response_id>/cancel")(stored_response_view(responses.cancel_response))
