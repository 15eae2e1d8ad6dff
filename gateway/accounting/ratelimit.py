"""Per-key rpm/tpm limits in fixed one-minute windows shared by all workers and hosts.

Each key has one counter pair (requests, tokens) per minute, `window_start = floor(now / 60) * 60`.
Fixed windows need one row (or Redis hash) per key and minute, so counts are exact across
processes and hosts; the price is that a client may spend up to twice its limit in the 60
seconds around a window boundary. A request asks its window a `WindowAsk`: with windows in the
database the accounting writer answers it inside the admission's transaction, under the
account's lock (batch.py); with Redis, one Lua script call answers it (`RateLimiter.answer`).
`RateLimiter.admit` answers directly with one atomic statement (scripts and tests).

Requests count 1 each at admission. Tokens are recorded after the request (`record_tokens`);
at admission the request's estimate must fit in what is left of the window. A model request
whose estimate is larger than the whole tpm never gets here: admission answers it 400
(gateway.accounting.meter.check_fits_tpm), since no window could admit it. Here such an
estimate is treated as exactly tpm: it runs only in a window with no tokens used yet. A key with rpm or tpm below 1 is always denied.
Concurrent requests may together overshoot tpm (estimates are checked, not reserved); rpm is exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting.window_stores import (
    WINDOW_SECONDS,
    DatabaseWindows,
    RedisWindows,
    WindowCounts,
    WindowStore,
)
from gateway.config import ConfigError, LimitSettings
from gateway.errors import RateLimited
from gateway.tables import RateWindow

__all__ = ["DatabaseWindows", "RateWindow", "RedisWindows", "WindowCounts", "WindowStore"]


@dataclass(frozen=True)
class RateDecision:
    """Whether a request may run, and the headers to send either way."""

    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: int | None = None
    reason: str | None = None

    def raise_if_denied(self) -> None:
        """Raise RateLimited (429, these headers incl. Retry-After) unless allowed."""
        if not self.allowed:
            raise RateLimited(self.reason or "Rate limit reached.", headers=self.headers)


def window_start(now: float) -> int:
    """Epoch second at which the window holding `now` began."""
    return int(now // WINDOW_SECONDS) * WINDOW_SECONDS


def tokens_needed(estimated_tokens: int, tpm: int) -> int:
    """Tokens that must be left for a request: its estimate, at least 1, at most the whole tpm."""
    return max(1, min(estimated_tokens, tpm))


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes it (Go style): "0s", "250ms", "1s", "59.5s", "1m0s"."""
    millis = round(seconds * 1000)
    if millis <= 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    text = f"{millis / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def retry_after(reset_s: float) -> int:
    """Whole seconds a denied client should wait: rounded up, at least 1."""
    return max(1, math.ceil(reset_s))


def rate_headers(rpm: int, tpm: int, counts: WindowCounts, reset_s: float) -> dict[str, str]:
    """OpenAI's six x-ratelimit-* headers for a window."""
    reset = format_reset(reset_s)
    return {
        "x-ratelimit-limit-requests": str(rpm),
        "x-ratelimit-remaining-requests": str(max(0, rpm - counts.requests)),
        "x-ratelimit-reset-requests": reset,
        "x-ratelimit-limit-tokens": str(tpm),
        "x-ratelimit-remaining-tokens": str(max(0, tpm - counts.tokens)),
        "x-ratelimit-reset-tokens": reset,
    }


def decide(
    rpm: int, tpm: int, counts: WindowCounts, *, admitted: bool, needed: int, reset_s: float
) -> RateDecision:
    """The decision for a request the store has admitted or refused, with its headers."""
    headers = rate_headers(rpm, tpm, counts, reset_s)
    if admitted:
        return RateDecision(allowed=True, headers=headers)
    wait = retry_after(reset_s)
    if counts.requests >= rpm:
        what, used, requested = "requests per min (RPM)", counts.requests, 1
        limit = rpm
    else:
        what, used, requested, limit = "tokens per min (TPM)", counts.tokens, needed, tpm
    reason = (
        f"Rate limit reached on {what}: Limit {limit}, Used {used}, Requested {requested}. "
        f"Please try again in {wait}s."
    )
    return RateDecision(False, {**headers, "Retry-After": str(wait)}, wait, reason)


@dataclass(frozen=True, slots=True)
class WindowAsk:
    """One request's question to its key's window: room for 1 request and `needed` tokens?"""

    key_id: int
    window: int
    rpm: int
    tpm: int
    needed: int
    reset_s: float

    @property
    def token_ceiling(self) -> int:
        """The most tokens the window may have used for this request to fit."""
        return self.tpm - self.needed

    @property
    def impossible(self) -> bool:
        """A key with rpm or tpm below 1 is always denied (and nothing is counted)."""
        return self.rpm < 1 or self.tpm < 1

    def fits(self, counts: WindowCounts) -> bool:
        """Whether a window with these counts admits this request."""
        return counts.requests < self.rpm and counts.tokens <= self.token_ceiling

    def decision(self, admitted: bool, counts: WindowCounts) -> RateDecision:
        """The decision and headers once the store has answered."""
        return decide(self.rpm, self.tpm, counts, admitted=admitted, needed=self.needed, reset_s=self.reset_s)

class RateLimiter:
    """Admits requests against per-key rpm/tpm and records the tokens they used."""

    def __init__(
        self, store: WindowStore, default_rpm: int, default_tpm: int, now: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm
        self._now = now
        self._swept_window: int | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: LimitSettings, **options: Any) -> RateLimiter:
        """Build from [limits]; `options` go to the constructor (e.g. `now`)."""
        if settings.backend == "database":
            store: WindowStore = DatabaseWindows()
        elif settings.url:
            store = RedisWindows(settings.url)
        else:
            raise ConfigError('limits.url: required when backend = "redis"')
        return cls(store, settings.rpm, settings.tpm, **options)

    def limits_for(self, key_rpm: int | None, key_tpm: int | None) -> tuple[int, int]:
        """A key's (rpm, tpm): its own overrides, else the [limits] defaults."""
        rpm = self.default_rpm if key_rpm is None else key_rpm
        return rpm, self.default_tpm if key_tpm is None else key_tpm

    @property
    def counts_in_database(self) -> bool:
        """True when windows are rows of the database (the accounting writer counts them)."""
        return isinstance(self.store, DatabaseWindows)

    def ask(self, key_id: int, rpm: int, tpm: int, estimated_tokens: int) -> WindowAsk:
        """This request's question to the key's current window."""
        self._check_open()
        now = self._now()
        window = window_start(now)
        return WindowAsk(key_id, window, rpm, tpm, tokens_needed(estimated_tokens, tpm), window + WINDOW_SECONDS - now)

    def admit(self, key_id: int, rpm: int, tpm: int, estimated_tokens: int) -> RateDecision:
        """Count this request if the key's window has room for it and its estimated tokens."""
        return self.answer(self.ask(key_id, rpm, tpm, estimated_tokens))

    def answer(self, ask: WindowAsk) -> RateDecision:
        """Put the question to the store (one atomic statement or script) and decide."""
        if ask.impossible:
            return ask.decision(False, WindowCounts(0, 0))
        self._sweep_once_per_window(ask.window)
        admitted, counts = self.store.admit(ask.key_id, ask.window, ask.rpm, ask.token_ceiling)
        return ask.decision(admitted, counts)

    def current_window(self) -> int:
        """The window a finished request's tokens are added to."""
        return window_start(self._now())

    def record_tokens(self, key_id: int, tokens: int) -> None:
        """Add a finished request's actual tokens to the key's current window."""
        self._check_open()
        if tokens > 0:
            self.store.add_tokens(key_id, window_start(self._now()), tokens)

    def close(self) -> None:
        """Release the store's connections; later calls are refused (idempotent)."""
        if not self._closed:
            self._closed = True
            self.store.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the rate limiter is closed")

    def _sweep_once_per_window(self, window: int) -> None:
        # Each process sweeps once per minute; a duplicate sweep by another worker is harmless.
        if self._swept_window != window:
            self._swept_window = window
            self.store.sweep(window - WINDOW_SECONDS)
