"""The one maker of ids the gateway hands out: a prefix and 32 random hex digits."""

from __future__ import annotations

import uuid


def new_id(prefix: str = "") -> str:
    """`{prefix}_{hex}` (or just the hex without a prefix): unique, URL- and column-safe."""
    token = uuid.uuid4().hex
    return f"{prefix}_{token}" if prefix else token
