"""A key's MCP allow-list in its three forms: the stored column, the checked list, the command line.

The rule that applies it (which servers a key may use) is gateway.mcp.access's; this module only
knows how the list is written down, so the key records can read it without importing MCP.
"""

from __future__ import annotations

import json

from gateway.config import Settings
from gateway.errors import InvalidRequest


def decode_allow_list(stored: str | None) -> list[str] | None:
    """The key's stored allow-list (`None`: not narrowed)."""
    return None if stored is None else list(json.loads(stored))


def encode_allow_list(settings: Settings, labels: list[str] | None, param: str = "mcp_servers") -> str | None:
    """Check an allow-list against the configured servers and store it as JSON (`None` clears it)."""
    if labels is None:
        return None
    unknown = [label for label in labels if label not in settings.mcpServers]
    if unknown:
        raise InvalidRequest(f"No built-in MCP server labelled {unknown[0]!r}.", param=param)
    return json.dumps(list(dict.fromkeys(labels)))


def parse_labels(text: str) -> list[str] | None:
    """A command-line allow-list: `a,b`; `none` clears it (every server the scope allows); `""` allows nothing."""
    if text.strip().lower() == "none":
        return None
    return [label.strip() for label in text.split(",") if label.strip()]
