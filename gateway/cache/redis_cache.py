"""Cached answers in Redis: one hash per entry that expires by itself (PX), and one sorted set by last use.

A miss is one round trip (HMGET of the entry); a hit is a second one, `ZADD XX` of its last use (a pipeline
of the two cost a miss twice the CPU in redis-py). A store is one Lua script: the hash, its expiry, its last use, and the eviction of
the least recently used entries beyond `max_entries` (members whose hash already expired are dropped on
the way without counting as evictions).
"""

from __future__ import annotations

from gateway.cache.entry import StoredEntry
from gateway.config import ConfigError

REDIS_PREFIX = "gateway:cache:"
REDIS_TIMEOUT_S = 0.5  # a slow cache is skipped, not waited for
FIELDS = ("endpoint", "model", "answer", "usage", "created", "expires_at", "scope")

# KEYS[1] = entry hash, KEYS[2] = last-use sorted set; ARGV = ttl ms, now, max entries, member, entry key prefix,
# then the hash's field/value pairs. Returns how many live entries were evicted.
STORE_SCRIPT = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[4])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
local evicted = 0
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #popped, 2 do
    evicted = evicted + redis.call('DEL', ARGV[5] .. popped[i])
  end
end
return evicted
"""


class RedisCache:
    """Entries under `prefix` in one Redis database, bounded to `max_entries` by last use."""

    def __init__(self, url: str, max_entries: int, prefix: str = REDIS_PREFIX,
                 timeout_s: float = REDIS_TIMEOUT_S) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigError('cache.backend: "redis" needs the redis package (pip install ".[redis]")') from None
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.max_entries = max_entries
        self._entries = prefix + "entry:"
        self._last_use = prefix + "last-use"
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._store = self._client.register_script(STORE_SCRIPT)

    def read(self, key: str, now: float) -> StoredEntry | None:
        """The entry filed under `key` (absent once expired); marks its use."""
        values = self._client.hmget(self._entries + key, FIELDS)
        if values[0] is None:
            return None
        self._client.zadd(self._last_use, {key: now}, xx=True)
        endpoint, model, answer, usage, created, expires_at, scope = (value.decode() if value is not None else None
                                                                      for value in values)
        return StoredEntry(endpoint, model, answer, usage, float(created), float(expires_at), scope or None)

    def write(self, key: str, entry: StoredEntry, now: float) -> tuple[int, int]:
        """Store the entry with its expiry and evict beyond max_entries, atomically. Returns (0, evicted)."""
        ttl_ms = max(1, round((entry.expires_at - now) * 1000))
        fields = {"endpoint": entry.endpoint, "model": entry.model, "answer": entry.answer, "usage": entry.usage,
                  "created": repr(entry.created), "expires_at": repr(entry.expires_at), "scope": entry.scope or ""}
        pairs = [item for field in FIELDS for item in (field, fields[field])]
        evicted = self._store(keys=[self._entries + key, self._last_use],
                              args=[ttl_ms, now, self.max_entries, key, self._entries, *pairs])
        return 0, int(evicted)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
