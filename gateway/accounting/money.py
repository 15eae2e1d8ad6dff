"""Micro-credit amounts, per-token prices and the prices of other units: pure arithmetic, exact and rounded up once.

Units that are not tokens (gateway.accounting.media_units names them): `image` (qualified `image:SIZE` or
`image:SIZE/QUALITY`, priced by the model's `image_prices`, else `image_price`), `audio_second`,
`speech_character`, `search_unit` and `moderation`.
"""

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
    units: tuple[tuple[str, Decimal], ...] = ()  # micro-credits per unit, by unit name (see the module docstring)

    @classmethod
    def of(cls, model: ModelSettings) -> Price:
        """The price of a model (built once per model settings object)."""
        return _price_of(model)

    @property
    def free(self) -> bool:
        """True when every token costs nothing."""
        return not (self.input or self.output or self.cached_input or self.cache_write
                    or any(price for _, price in self.units))

    def unit_price(self, unit: str | None) -> Decimal:
        """Micro-credits per unit: `image:SIZE/QUALITY`, then `image:SIZE`, then `image`; 0 for an unpriced unit."""
        prices = dict(self.units)
        name = unit or ""
        while name:
            if name in prices:
                return prices[name]
            name = name.rsplit("/", 1)[0] if "/" in name else name.rsplit(":", 1)[0] if ":" in name else ""
        return Decimal(0)

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
            + Decimal(str(usage.units)) * self.unit_price(usage.unit)
        )
        return math.ceil(exact)

    def most(self, input_tokens: int, output_tokens: int) -> int:
        """The most these tokens may cost (a hold): input at the dearer of the input and cache-write prices."""
        written = input_tokens if self.cache_write > self.input else 0
        return self.cost(Usage(input_tokens, output_tokens, cache_write_tokens=written))

    def units_cost(self, unit: str | None, units: float) -> int:
        """Micro-credits for `units` of `unit` alone (a media request's hold)."""
        return math.ceil(Decimal(str(units)) * self.unit_price(unit))


@functools.lru_cache(maxsize=1024)
def _price_of(model: ModelSettings) -> Price:
    cached = model.input_price_per_mtok if model.cached_input_price_per_mtok is None else (
        model.cached_input_price_per_mtok
    )
    written = model.input_price_per_mtok if model.cache_write_price_per_mtok is None else (
        model.cache_write_price_per_mtok
    )
    return Price(Decimal(str(model.input_price_per_mtok)), Decimal(str(model.output_price_per_mtok)),
                 Decimal(str(cached)), Decimal(str(written)), _unit_prices(model))


def _unit_prices(model: ModelSettings) -> tuple[tuple[str, Decimal], ...]:
    """Micro-credits per unit of what is not tokens, from the model's per-image, per-minute, ... prices."""
    per_unit = {
        "image": Decimal(str(model.image_price)),
        **{f"image:{size}": Decimal(str(price)) for size, price in model.image_prices},
        "audio_second": Decimal(str(model.audio_price_per_minute)) / 60,
        "speech_character": Decimal(str(model.speech_price_per_kchar)) / 1000,
        "search_unit": Decimal(str(model.search_unit_price)),
        "moderation": Decimal(str(model.moderation_price)),
    }
    return tuple((unit, price * MICRO) for unit, price in per_unit.items() if price)
