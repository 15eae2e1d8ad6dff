"""Where rate windows live: rows of the database (one atomic upsert) or Redis hashes (one Lua script)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from gateway.config import ConfigError
from gateway.db import database
from gateway.errors import ServiceUnavailable
from gateway.tables import RateWindow

WINDOW_SECONDS = 60
REDIS_PREFIX = "gateway:ratelimit:"
REDIS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class WindowCounts:
    """What one window has used so far."""

    requests: int
    tokens: int


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
