"""Per-app services live in `app.extensions`; these accessors reach them from a request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from gateway.accounting.ratelimit import RateLimiter
    from gateway.cache.store import ResponseCache
    from gateway.config import Settings
    from gateway.mcp.assemble import McpRuntime
    from gateway.upstream.client import UpstreamClient
    from gateway.upstream.router import Router


def settings() -> Settings:
    """The validated configuration of the current app."""
    return current_app.extensions["gateway.settings"]


def upstream() -> UpstreamClient:
    """The current app's upstream client."""
    return current_app.extensions["gateway.upstream"]


def router() -> Router:
    """The current app's router: deployments, retries and cooldowns (its `client` is upstream())."""
    return current_app.extensions["gateway.router"]


def limiter() -> RateLimiter:
    """The current app's per-key rate limiter."""
    return current_app.extensions["gateway.ratelimit"]


def cache() -> ResponseCache | None:
    """The current app's response cache; None when `[cache] enabled` is false."""
    return current_app.extensions.get("gateway.cache")


def mcp() -> McpRuntime:
    """The current app's MCP runtime (bridge, built-in servers, task pool)."""
    return current_app.extensions["gateway.mcp"]
