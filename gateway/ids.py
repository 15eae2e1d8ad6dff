"""The one maker of ids the gateway hands out: a prefix and 32 hex digits (random, or time-ordered first)."""

from __future__ import annotations

import time
import uuid


def new_id(prefix: str = "") -> str:
    """`{prefix}_{hex}` (or just the hex without a prefix): unique, URL- and column-safe."""
    token = uuid.uuid4().hex
    return f"{prefix}_{token}" if prefix else token


def ordered_id(prefix: str, separator: str = "_") -> str:
    """`{prefix}{separator}{hex}` whose 32 hex digits start with the microseconds since the epoch, so ids sort by
    creation (the cursor of a list page): files and batches."""
    return f"{prefix}{separator}{time.time_ns() // 1000:014x}{uuid.uuid4().hex[:18]}"
