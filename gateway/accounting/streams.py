"""Concurrent streams per key and per account: a request that would open one too many gets 429.

Counted in each worker process, not across workers: what an open stream holds is a thread of
its worker (until it ends, or until `[server] send_timeout_s` drops a client that stopped
reading), and threads are per worker too, so caps below `[server] threads` keep one key or one
account from holding all of a worker's threads. With W workers, a key may have up to
W x `[limits] max_streams_per_key` streams open in all. Counting in memory costs no database
round trip; a slot is released when the response closes, whatever ended it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from flask import Flask, Response, after_this_request, current_app

from gateway.accounting.keys import current_caller
from gateway.config import LimitSettings
from gateway.errors import RateLimited

EXTENSION = "gateway.streams"
RETRY_AFTER_S = 1


class StreamSlots:
    """Open streams by key and by account in this process, within two caps."""

    def __init__(self, per_key: int, per_account: int) -> None:
        self.per_key = per_key
        self.per_account = per_account
        self._lock = threading.Lock()
        self._by_key: Counter[int] = Counter()
        self._by_account: Counter[int] = Counter()

    @classmethod
    def from_settings(cls, limits: LimitSettings) -> StreamSlots:
        return cls(limits.max_streams_per_key, limits.max_streams_per_account)

    def acquire(self, key_id: int, account_id: int) -> Callable[[], None]:
        """Count one more stream, or raise RateLimited (429); returns its release (idempotent)."""
        with self._lock:
            if self._by_key[key_id] >= self.per_key:
                raise too_many("This key", self.per_key)
            if self._by_account[account_id] >= self.per_account:
                raise too_many("This key's account", self.per_account)
            self._by_key[key_id] += 1
            self._by_account[account_id] += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                decrement(self._by_key, key_id)
                decrement(self._by_account, account_id)

        return release

    def open_streams(self, key_id: int) -> int:
        """Streams this key has open in this process."""
        with self._lock:
            return self._by_key[key_id]


def decrement(counter: Counter[int], item: int) -> None:
    """One less of `item`; an item at zero leaves the counter."""
    counter[item] -= 1
    if counter[item] <= 0:
        del counter[item]


def too_many(holder: str, cap: int) -> RateLimited:
    """The 429 of a stream past a cap."""
    return RateLimited(
        f"{holder} already has {cap} streams open, the most it may have at once. "
        "Wait for one to finish, or retry shortly.",
        code="too_many_streams", headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def init_app(app: Flask, limits: LimitSettings) -> None:
    """Give the app its stream counter (one per worker process)."""
    app.extensions[EXTENSION] = StreamSlots.from_settings(limits)


def hold_stream_slot() -> None:
    """Count the current request as an open stream of its key and account until its response closes (or 429)."""
    caller = current_caller()
    release = current_app.extensions[EXTENSION].acquire(caller.key.id, caller.account.id)

    @after_this_request
    def release_on_close(response: Response) -> Response:
        response.call_on_close(release)
        return response
