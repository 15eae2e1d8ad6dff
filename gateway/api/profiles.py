"""mcp.run-style profile routes: /api/v1/openai/{scope}/{profile}/chat/completions and /models."""

from __future__ import annotations

from flask import Response

from gateway import services
from gateway.accounting.keys import current_caller
from gateway.api import catalog
from gateway.api.chat import relay_upstream, run_with_tools, validated
from gateway.api.http import authenticated_blueprint
from gateway.api.openai_requests import ChatRequest
from gateway.errors import NotFound
from gateway.mcp.access import profile_allowed

bp = authenticated_blueprint("profiles", __name__, url_prefix="/api/v1/openai/<scope>/<profile>")


def profile_servers(scope: str, profile: str) -> list[str]:
    """The profile's MCP servers; 404 when it does not exist or the key's account may not use it."""
    account = current_caller().account
    settings = services.settings().profiles.get(f"{scope}/{profile}")
    if settings is None or not profile_allowed(f"{scope}/{profile}", account.scope):
        raise NotFound(f"No profile {scope}/{profile} for this key.", code="profile_not_found")
    return settings.mcp_servers


@bp.post("/chat/completions")
def chat_completions(scope: str, profile: str) -> Response:
    """Chat in a profile; `tools: "auto"` offers and runs the profile's MCP tools."""
    labels = profile_servers(scope, profile)
    body = validated(ChatRequest)
    if body.get("tools") == "auto":
        return run_with_tools(body, labels)
    return relay_upstream("chat/completions", body)


@bp.get("/models")
def list_models(scope: str, profile: str) -> Response:
    """The models a profile can use (every configured model)."""
    profile_servers(scope, profile)
    return catalog.list_models()
