"""The bounds an operator's input must keep (admin API, CLI, dashboard forms), and the account tiers."""

from __future__ import annotations

from typing import Literal

Tier = Literal["free", "premium", "enterprise", "internal"]
TIERS = list(Tier.__args__)

MAX_ID = 2**63 - 1  # the largest id a BIGINT column holds
MAX_CREDITS = 1_000_000_000  # per grant or limit; micro-credits stay far inside 64 bits
MAX_DAYS = 36_500
MAX_RATE = 1_000_000_000
MAX_STREAMS = 1_000_000
