"""Which built-in MCP servers a key may use: pure functions of the config and the key.

One rule everywhere a built-in server is reached (the hub at /mcp, `tools: "auto"` profiles,
Responses `mcp` tools, discovery): the server's `scopes` must admit the account's scope, and the
key's own allow-list (`api_key.mcp_servers`), when it has one, must name it. The hub aggregates the
servers of the profiles the scope may use (`scope/...` profiles, or every profile for scope `*`).
An allow-list never widens what the scope allows; how it is stored is gateway.accounting.mcp_allow_list's.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config import ProfileSettings, Settings
from gateway.errors import NotFound


def profile_allowed(profile: str, scope: str | None) -> bool:
    """Whether an account of `scope` may use profile `scope/name` (the profile routes' rule)."""
    return scope is not None and (scope == "*" or profile.split("/", 1)[0] == scope)


def profile_for(settings: Settings, name: str, scope: str | None) -> ProfileSettings:
    """The profile `scope/name` for an account of `scope`; 404 when it does not exist or the scope may not use it."""
    profile = settings.profiles.get(name)
    if profile is None or not profile_allowed(name, scope):
        raise NotFound(f"No profile {name} for this key.", code="profile_not_found")
    return profile


def may_use(settings: Settings, label: str, scope: str | None, allow_list: list[str] | None) -> bool:
    """Whether a key of this scope and allow-list may use the built-in server `label`."""
    server = settings.mcpServers.get(label)
    return server is not None and server.allows(scope) and (allow_list is None or label in allow_list)


def usable(settings: Settings, labels: Iterable[str], scope: str | None, allow_list: list[str] | None) -> list[str]:
    """`labels` (in order, once each) that the scope and the key's allow-list both permit."""
    return [label for label in dict.fromkeys(labels) if may_use(settings, label, scope, allow_list)]


def hub_servers(settings: Settings, scope: str | None, allow_list: list[str] | None) -> list[str]:
    """The servers /mcp aggregates for a key: those of every profile its scope may use."""
    labels = [label for name, profile in settings.profiles.items() if profile_allowed(name, scope)
              for label in profile.mcp_servers]
    return usable(settings, labels, scope, allow_list)
