"""The guardrails attached to a key or an account in their forms: the stored column, the checked list.

Which guardrails apply to a request, and what they do, is gateway.guardrails' rule
(`guardrails_for`); this module only knows how a key's or an account's names are written
down, so the key records and the admin service can read and check them without importing it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from gateway.config import Settings
from gateway.errors import InvalidRequest


def decode_names(stored: str | None) -> tuple[str, ...]:
    """The stored names (NULL: none)."""
    return tuple(json.loads(stored)) if stored else ()


def encode_names(settings: Settings, names: Sequence[str] | None, param: str = "guardrails") -> str | None:
    """Check names against the configured `[guardrails.NAME]` tables and store them as JSON (empty or None: none)."""
    if not names:
        return None
    unknown = [name for name in names if name not in settings.guardrails]
    if unknown:
        raise InvalidRequest(f"No guardrail named {unknown[0]!r} in the config ([guardrails.NAME]).", param=param)
    return json.dumps(list(dict.fromkeys(names)))
