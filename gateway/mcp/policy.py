"""Remote MCP URL policy: the gateway's one outbound URL rule (gateway.url_policy), with server_url as the name.

The rules live in gateway.url_policy (ground), which guardrail webhooks share; this module only keeps MCP's
parameter name as the default, so a refusal reads "server_url must use https".
"""

from __future__ import annotations

from gateway import url_policy
from gateway.url_policy import (
    MAX_URL_LENGTH,
    RemoteTarget,
    address_refusal,
    bearer_value,
    remote_headers,
    strip_bearer,
)

__all__ = [
    "MAX_URL_LENGTH",
    "RemoteTarget",
    "address_refusal",
    "bearer_value",
    "check_remote_host",
    "check_remote_url",
    "check_resolved_addresses",
    "remote_headers",
    "strip_bearer",
]


def check_remote_url(url: str, param: str | None = "server_url") -> RemoteTarget:
    """Validate a remote MCP server_url (gateway.url_policy.check_remote_url)."""
    return url_policy.check_remote_url(url, param or "server_url")


def check_remote_host(host: str, param: str | None = "server_url") -> str:
    """Normalise and check a server_url's host (gateway.url_policy.check_remote_host)."""
    return url_policy.check_remote_host(host, param or "server_url")


def check_resolved_addresses(host: str, addresses: list[str], param: str | None = "server_url") -> list[str]:
    """The public addresses a server_url's host resolved to (gateway.url_policy.check_resolved_addresses)."""
    return url_policy.check_resolved_addresses(host, addresses, param or "server_url")
