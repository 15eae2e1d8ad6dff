"""Micro-credit amounts and per-token prices: pure arithmetic, exact and rounded up once."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from gateway.accounting.usage import Usage
from gateway.config import ModelSettings
from gateway.errors import InvalidRequest

MICRO = 1_000_000


def to_micro(credits: Decimal | float | str) -> int:
    """Credits (as given by a person) to micro-credits, rounded half up."""
    value = Decimal(str(credits)) * MICRO
    if not value.is_finite():
        raise InvalidRequest("Credit amounts must be finite numbers.", param="amount")
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_credits(micro: int | Decimal) -> float:
    """Micro-credits as the JSON number the API shows.

    A float, never a Decimal: PostgreSQL's SUM of a BIGINT column is NUMERIC (a Decimal in
    Python), which Flask's JSON provider writes as a string.
    """
    return int(micro) / MICRO


@dataclass(frozen=True)
class Price:
    """Micro-credits per token (== credits per million tokens)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal

    @classmethod
    def of(cls, model: ModelSettings) -> Price:
        """The price of a model (built once per model settings object)."""
        return _price_of(model)

    @property
    def free(self) -> bool:
        """True when every token costs nothing."""
        return not (self.input or self.output or self.cached_input or self.cache_write)

    def cost(self, usage: Usage) -> int:
        """Micro-credits for this usage, rounded up once."""
        if self.free:
            return 0
        cached = min(usage.cached_tokens, usage.input_tokens)
        written = min(usage.cache_write_tokens, usage.input_tokens - cached)
        exact = (
            (usage.input_tokens - cached - written) * self.input
            + cached * self.cached_input
            + written * self.cache_write
            + usage.output_tokens * self.output  # reasoning tokens are part of the output
        )
        return math.ceil(exact)

    def most(self, input_tokens: int, output_tokens: int) -> int:
        """The most these tokens may cost (a hold): input at the dearer of the input and cache-write prices."""
        written = input_tokens if self.cache_write > self.input else 0
        return self.cost(Usage(input_tokens, output_tokens, cache_write_tokens=written))


@functools.lru_cache(maxsize=1024)
def _price_of(model: ModelSettings) -> Price:
    cached = model.input_price_per_mtok if model.cached_input_price_per_mtok is None else (
        model.cached_input_price_per_mtok
    )
    written = model.input_price_per_mtok if model.cache_write_price_per_mtok is None else (
        model.cache_write_price_per_mtok
    )
    return Price(Decimal(str(model.input_price_per_mtok)), Decimal(str(model.output_price_per_mtok)),
                 Decimal(str(cached)), Decimal(str(written)))
