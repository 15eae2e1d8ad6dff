"""Per-key rpm/tpm limits in fixed one-minute windows shared by all workers and hosts.

Each key has one counter pair (requests, tokens) per minute, `window_start = floor(now / 60) * 60`.
Fixed windows need one row (or Redis hash) per key and minute and one atomic statement per
admission, so counts are exact across processes and hosts; the price is that a client may
spend up to twice its limit in the 60 seconds around a window boundary.

Requests count 1 each at admission. Tokens are recorded after the request (`record_tokens`);
at admission the request's estimate must fit in what is left of the window. An estimate larger
than the whole tpm is treated as exactly tpm: such a request runs only in a window with no
tokens used yet, and then exhausts it. A key with rpm or tpm below 1 is always denied.
Concurrent requests may together overshoot tpm (estimates are checked, not reserved); rpm is exact.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.config import ConfigError, LimitSettings
from gateway.db import database
from gateway.errors import RateLimited, ServiceUnavailable
from gateway.tables import RateWindow

WINDOW_SECONDS = 60
REDIS_PREFIX = "gateway:ratelimit:"
REDIS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class WindowCounts:
    """What one window has used so far."""

    requests: int
    tokens: int


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


class WindowStore(Protocol):
    """Where windows live: the database or Redis."""

    def admit(self, key_id: int, window: int, rpm: int, token_ceiling: int) -> tuple[bool, WindowCounts]:
        """Count one request if requests < rpm and tokens <= token_ceiling; return the counts."""

    def add_tokens(self, key_id: int, window: int, tokens: int) -> None:
        """Add used tokens to a window."""

    def sweep(self, before_window: int) -> None:
        """Forget windows that started before `before_window`."""

    def close(self) -> None:
        """Release connections."""


@contextlib.contextmanager
def _connected() -> Iterator[None]:
    """Use the thread's open connection (a request's), else open one for this block."""
    if not database.is_closed():
        yield
        return
    with database.connection_context():
        yield


class DatabaseWindows:
    """Windows as `rate_window` rows: one upsert per admission, atomic on SQLite and PostgreSQL."""

    def admit(self, key_id: int, window: int, rpm: int, token_ceiling: int) -> tuple[bool, WindowCounts]:
        """INSERT ... ON CONFLICT DO UPDATE SET requests = requests + 1 WHERE <fits> RETURNING."""
        query = (
            RateWindow.insert(key_id=key_id, window_start=window, requests=1, tokens=0)
            .on_conflict(
                conflict_target=[RateWindow.key_id, RateWindow.window_start],
                update={RateWindow.requests: RateWindow.requests + 1},
                where=(RateWindow.requests < rpm) & (RateWindow.tokens <= token_ceiling),
            )
            .returning(RateWindow.requests, RateWindow.tokens)
        )
        with _connected():
            rows = list(query.tuples().execute())
            if rows:
                return True, WindowCounts(*rows[0])
            return False, self._counts(key_id, window)

    def _counts(self, key_id: int, window: int) -> WindowCounts:
        row = (
            RateWindow.select(RateWindow.requests, RateWindow.tokens)
            .where((RateWindow.key_id == key_id) & (RateWindow.window_start == window))
            .tuples()
            .first()
        )
        return WindowCounts(*row) if row else WindowCounts(0, 0)

    def add_tokens(self, key_id: int, window: int, tokens: int) -> None:
        """INSERT ... ON CONFLICT DO UPDATE SET tokens = tokens + excluded.tokens."""
        query = RateWindow.insert(key_id=key_id, window_start=window, requests=0, tokens=tokens).on_conflict(
            conflict_target=[RateWindow.key_id, RateWindow.window_start],
            update={RateWindow.tokens: RateWindow.tokens + tokens},
        )
        with _connected():
            query.execute()

    def sweep(self, before_window: int) -> None:
        """Delete rows of windows that started before `before_window`."""
        with _connected():
            RateWindow.delete().where(RateWindow.window_start < before_window).execute()

    def close(self) -> None:
        """Nothing to release: connections belong to gateway.db."""


# KEYS[1] = window hash; ARGV = rpm, token ceiling, ttl seconds. Returns {admitted, requests, tokens}.
ADMIT_SCRIPT = """
local counts = redis.call('HMGET', KEYS[1], 'requests', 'tokens')
local requests = tonumber(counts[1]) or 0
local tokens = tonumber(counts[2]) or 0
if requests < tonumber(ARGV[1]) and tokens <= tonumber(ARGV[2]) then
  requests = redis.call('HINCRBY', KEYS[1], 'requests', 1)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
  return {1, requests, tokens}
end
return {0, requests, tokens}
"""


class RedisWindows:
    """Windows as Redis hashes that expire by themselves; admission is one Lua script call."""

    def __init__(self, url: str, prefix: str = REDIS_PREFIX, timeout_s: float = REDIS_TIMEOUT_S) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigError('limits.backend: "redis" needs the redis package (pip install ".[redis]")') from None
        self._errors = redis.RedisError
        self._prefix = prefix
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._admit = self._client.register_script(ADMIT_SCRIPT)

    def _key(self, key_id: int, window: int) -> str:
        return f"{self._prefix}{key_id}:{window}"

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise ServiceUnavailable("The rate limiter's Redis server is unavailable.") from exc

    def admit(self, key_id: int, window: int, rpm: int, token_ceiling: int) -> tuple[bool, WindowCounts]:
        """Run the admission script on the window's hash."""
        with self._translated():
            admitted, requests, tokens = self._admit(
                keys=[self._key(key_id, window)], args=[rpm, token_ceiling, 2 * WINDOW_SECONDS]
            )
        return bool(admitted), WindowCounts(int(requests), int(tokens))

    def add_tokens(self, key_id: int, window: int, tokens: int) -> None:
        """HINCRBY tokens and refresh the expiry in one MULTI/EXEC."""
        key = self._key(key_id, window)
        with self._translated(), self._client.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "tokens", tokens)
            pipe.expire(key, 2 * WINDOW_SECONDS)
            pipe.execute()

    def sweep(self, before_window: int) -> None:
        """Nothing to do: keys expire."""

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


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

    def admit(self, key_id: int, rpm: int, tpm: int, estimated_tokens: int) -> RateDecision:
        """Count this request if the key's window has room for it and its estimated tokens."""
        self._check_open()
        now = self._now()
        window = window_start(now)
        reset_s = window + WINDOW_SECONDS - now
        needed = tokens_needed(estimated_tokens, tpm)
        if rpm < 1 or tpm < 1:
            return decide(rpm, tpm, WindowCounts(0, 0), admitted=False, needed=needed, reset_s=reset_s)
        self._sweep_once_per_window(window)
        admitted, counts = self.store.admit(key_id, window, rpm, tpm - needed)
        return decide(rpm, tpm, counts, admitted=admitted, needed=needed, reset_s=reset_s)

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
