"""Open streams (and hub tool calls) per key and per account: a request that would hold one too many gets 429.

What an open stream holds is a thread of its worker, until it ends or `[server] send_timeout_s`
drops a client that stopped reading; threads are per worker, so streams are counted in each
worker process, in memory (no database round trip). The rules, in this order:

- a key's `max_streams` (else `[limits] max_streams_per_key`) and its account's `max_streams`
  (else `max_streams_per_account`), when set: a hard cap per worker process, which replaces the
  tenant share (a key's own limit, for both the key and its account);
- the tenant share: when the gateway serves several tenants (accounts with live keys), a key or
  account without a limit of its own may hold at most `[limits] stream_share` of the worker's
  threads, so one tenant cannot take them all; a single-tenant gateway's keys may use every
  thread (the tenant count is read from the database at most every TENANTS_TTL_S seconds);
- a worker-wide cap, for the hub's tool calls only (`[mcp] hub_thread_share` of the threads).

A slot is released when the response closes, whatever ended it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, after_this_request, current_app
from peewee import fn

from gateway.accounting.keys import Caller, current_caller
from gateway.config import Settings
from gateway.errors import RateLimited
from gateway.tables import ApiKey

EXTENSION = "gateway.streams"
TENANTS = "gateway.streams.tenants"
RETRY_AFTER_S = 1
TENANTS_TTL_S = 30.0


@dataclass(frozen=True)
class Caps:
    """The explicit caps of one caller (None: no explicit cap) and where each came from."""

    key: int | None
    account: int | None
    key_source: str
    account_source: str
    shared: bool = True  # the gateway serves several tenants: the share applies where no limit is set


def caps_of(caller: Caller, settings: Settings, shared: bool = True) -> Caps:
    """A caller's stream caps: its key's and account's `max_streams`, else the `[limits]` defaults."""
    key_id, account_id = caller.key.id, caller.account.id
    key_cap = caller.key.max_streams or settings.limits.max_streams_per_key
    account_cap = caller.account.max_streams or settings.limits.max_streams_per_account
    key_source = f"`gateway keys update {key_id} --max-streams N` or PATCH /admin/keys/{key_id}"
    account_source = f"PATCH /admin/accounts/{account_id} with `max_streams`"
    if not caller.key.max_streams:
        key_source += ", or `[limits] max_streams_per_key` for every key"
    if not caller.account.max_streams:
        account_source += ", or `[limits] max_streams_per_account` for every account"
    return Caps(key_cap, account_cap, key_source, account_source, shared)


class StreamSlots:
    """Open streams (or hub calls) by key and by account in this process, within the caps above."""

    def __init__(self, threads: int, share: float, worker_cap: int | None = None, what: str = "streams") -> None:
        self.threads = threads
        self.share = share
        self.fair = max(1, math.floor(share * threads))  # most a tenant may hold while there are several
        self.worker_cap = worker_cap
        self.what = what
        self._lock = threading.Lock()
        self._by_key: Counter[int] = Counter()
        self._by_account: Counter[int] = Counter()

    @classmethod
    def for_streams(cls, settings: Settings) -> StreamSlots:
        """The worker's stream counter."""
        return cls(settings.server.threads, settings.limits.stream_share)

    @classmethod
    def for_hub_calls(cls, settings: Settings) -> StreamSlots:
        """The worker's counter of hub tools/call requests, within `[mcp] hub_thread_share` of its threads."""
        threads = settings.server.threads
        return cls(threads, settings.limits.stream_share,
                   max(1, math.floor(settings.mcp.hub_thread_share * threads)), "MCP tool calls")

    def acquire(self, key_id: int, account_id: int, caps: Caps) -> Callable[[], None]:
        """Count one more for this key and account, or raise RateLimited (429); returns its release (idempotent)."""
        with self._lock:
            self._check(key_id, account_id, caps)
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

    def _check(self, key_id: int, account_id: int, caps: Caps) -> None:
        """Raise the 429 of the first rule one more would break (under the lock)."""
        held, account_held = self._by_key[key_id], self._by_account[account_id]
        if caps.key is not None and held >= caps.key:
            raise self.refusal(f"This key already has {held} {self.what} open in this worker process, its "
                               f"limit. An operator raises it: {caps.key_source}.")
        if caps.account is not None and account_held >= caps.account:
            raise self.refusal(f"This key's account already has {account_held} {self.what} open in this worker "
                               f"process, its limit. An operator raises it: {caps.account_source}.")
        total = sum(self._by_key.values())
        if caps.shared and caps.key is None and held >= self.fair:
            raise self.refusal(self.share_message("This key", held, f"set its own limit ({caps.key_source})"))
        if caps.shared and caps.key is None and caps.account is None and account_held >= self.fair:
            raise self.refusal(self.share_message("This key's account", account_held,
                                                  f"set its own limit ({caps.account_source})"))
        if self.worker_cap is not None and total >= self.worker_cap:
            raise self.refusal(f"This worker already has {total} {self.what} open, the most it runs at once "
                               f"(`[mcp] hub_thread_share` of its {self.threads} threads); retry shortly.")

    def share_message(self, holder: str, held: int, own_limit: str) -> str:
        """Why a tenant past its share of the threads is refused, and how an operator changes it."""
        return (f"{holder} holds {held} of this worker's {self.threads} threads with {self.what}, the most one "
                f"tenant may while the gateway serves several (`[limits] stream_share` = {self.share:g}). "
                f"Retry shortly; an operator may {own_limit}, or raise `[limits] stream_share`.")

    def refusal(self, message: str) -> RateLimited:
        """The 429 of one more past a cap."""
        code = "too_many_streams" if self.what == "streams" else "too_many_tool_calls"
        return RateLimited(message, code=code, headers={"Retry-After": str(RETRY_AFTER_S)})

    def open_streams(self, key_id: int) -> int:
        """What this key has open in this process."""
        with self._lock:
            return self._by_key[key_id]


def decrement(counter: Counter[int], item: int) -> None:
    """One less of `item`; an item at zero leaves the counter."""
    counter[item] -= 1
    if counter[item] <= 0:
        del counter[item]


class TenantCount:
    """Whether the gateway serves several tenants (accounts with a live key), read at most every `ttl_s`."""

    def __init__(self, ttl_s: float = TENANTS_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._shared = True
        self._expires = 0.0

    def shared(self) -> bool:
        """True unless a single account has live keys (asked of the database when the last answer is stale)."""
        with self._lock:
            if time.monotonic() < self._expires:
                return self._shared
        live = ApiKey.select(fn.COUNT(ApiKey.account.distinct())).where(ApiKey.revoked == False)  # noqa: E712
        accounts = live.scalar()
        with self._lock:
            self._shared, self._expires = accounts > 1, time.monotonic() + self.ttl_s
            return self._shared


def init_app(app: Flask, settings: Settings) -> None:
    """Give the app its stream counter and tenant count (one each per worker process)."""
    app.extensions[EXTENSION] = StreamSlots.for_streams(settings)
    app.extensions[TENANTS] = TenantCount()


def current_caps(caller: Caller) -> Caps:
    """The caller's caps in the current app, with whether it serves several tenants."""
    shared = current_app.extensions[TENANTS].shared()
    return caps_of(caller, current_app.extensions["gateway.settings"], shared)


def acquire_stream(caller: Caller) -> Callable[[], None]:
    """Count one open stream of this caller (or 429); returns its release."""
    return current_app.extensions[EXTENSION].acquire(caller.key.id, caller.account.id, current_caps(caller))


def hold_stream_slot() -> None:
    """Count the current request as an open stream of its key and account until its response closes (or 429)."""
    release = acquire_stream(current_caller())

    @after_this_request
    def release_on_close(response: Response) -> Response:
        response.call_on_close(release)
        return response
