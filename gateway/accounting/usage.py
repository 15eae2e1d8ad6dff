"""Token counts of a model turn or a whole loop, and the units of what is not tokens (images, audio seconds, ...):
what the meter charges and every renderer reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """Token counts of one model turn or of the whole loop."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # part of output_tokens
    estimated: bool = False
    cache_write_tokens: int = 0  # part of input_tokens: written to the provider's prompt cache
    unit: str | None = None  # what `units` counts, priced by gateway.accounting.money.Price (media endpoints)
    units: float = 0.0  # images, audio seconds, speech characters, search units or requests

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.estimated or other.estimated,
            self.cache_write_tokens + other.cache_write_tokens,
            self.unit or other.unit,
            self.units + other.units,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
