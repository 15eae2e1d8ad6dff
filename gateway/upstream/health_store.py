"""Every deployment's health, shared by every worker and host: a store (database or Redis) and a cached copy.

A healthy request never waits on the store: `HealthBoard.health` reads a copy in memory that a daemon
thread refreshes every `[routing] state_refresh_s` (one query of every row, or one SCAN + HGETALL
pipeline). Writes happen only on state changes (a failure, a trial claimed, the success that ends
them), each one atomic read-modify-write in the store that applies the pure rules of
gateway.upstream.cooldown, so two hosts counting failures at once never lose one. A store outage
never fails a request: the change is kept in this worker's copy and a warning is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any, Protocol

from peewee import PeeweeException
from playhouse.pool import MaxConnectionsExceeded

from gateway.config import ConfigError, Settings
from gateway.db import is_sqlite, own_connection, write_transaction
from gateway.observability import metrics
from gateway.tables import DeploymentHealth, utcnow
from gateway.upstream.cooldown import (
    HEALTHY,
    HEALTHY_STATUS,
    CoolPolicy,
    Health,
    after_failure,
    after_success,
    with_trial,
)
from gateway.upstream.routing import deployments_of

log = logging.getLogger(__name__)

REDIS_PREFIX = "gateway:routing:"
REDIS_TIMEOUT_S = 2.0
KEEP_AFTER_S = 3600.0  # a Redis hash outlives the longest state it can hold by this much
THREAD_JOIN_S = 5.0

Transition = Callable[[Health], "Health | None"]


class HealthStore(Protocol):
    """Where the shared health lives: rows of the database or Redis hashes."""

    errors: tuple[type[BaseException], ...]  # what an outage of the store raises

    def load(self) -> dict[str, Health]:
        """Every stored deployment's health, in one round trip."""

    def change(self, name: str, transition: Transition) -> Health | None:
        """Atomically apply `transition` to a deployment's stored health (absent: HEALTHY) and store its result.

        Returns the result; None when the transition declined (nothing is written then, nor when
        the result equals what was stored).
        """

    def close(self) -> None:
        """Release connections."""


def health_of(failures: int, window_start: float, cooling_until: float, half_open: Any, trial_until: float) -> Health:
    """A Health from stored columns or hash fields (booleans may come back as 0/1 or b"0"/b"1")."""
    return Health(int(failures), float(window_start), float(cooling_until), bool(int(half_open)), float(trial_until))


class DatabaseHealth:
    """`deployment_health` rows (migration 0015); a change is one short transaction holding the row's lock.

    SQLite takes the database's write lock at BEGIN IMMEDIATE; PostgreSQL locks the row with
    SELECT ... FOR UPDATE (the row is inserted first if absent, so there is always one to lock).
    """

    errors = (PeeweeException, MaxConnectionsExceeded)
    COLUMNS = (DeploymentHealth.failures, DeploymentHealth.window_start, DeploymentHealth.cooling_until,
               DeploymentHealth.half_open, DeploymentHealth.trial_until)

    def load(self) -> dict[str, Health]:
        """SELECT every row."""
        with own_connection():
            rows = list(DeploymentHealth.select(DeploymentHealth.name, *self.COLUMNS).tuples())
        return {name: health_of(*columns) for name, *columns in rows}

    def change(self, name: str, transition: Transition) -> Health | None:
        """INSERT the row if absent, lock and read it, UPDATE it with the transition's result: one transaction."""
        with own_connection(), write_transaction():
            DeploymentHealth.insert(name=name).on_conflict_ignore().execute()
            query = DeploymentHealth.select(*self.COLUMNS).where(DeploymentHealth.name == name)
            current = health_of(*(query if is_sqlite() else query.for_update()).tuples().get())
            changed = transition(current)
            if changed is not None and changed != current:
                update = DeploymentHealth.update(**asdict(changed), updated_at=utcnow())
                update.where(DeploymentHealth.name == name).execute()
        return changed

    def close(self) -> None:
        """Nothing to release: connections belong to gateway.db."""


class RedisHealth:
    """One hash per deployment under `prefix`; a change is an optimistic MULTI/EXEC under WATCH.

    A transaction that lost a race with another worker or host is re-run on the new value, so the
    count stays exact; hashes expire `keep_s` after their last change, and a healthy one is deleted.
    """

    def __init__(self, url: str, keep_s: float, prefix: str = REDIS_PREFIX, timeout_s: float = REDIS_TIMEOUT_S):
        try:
            import redis
        except ImportError:
            raise ConfigError('limits.backend: "redis" needs the redis package (pip install ".[redis]")') from None
        self.errors = (redis.RedisError,)
        self._prefix = prefix
        self._keep_s = max(1, int(keep_s))
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def load(self) -> dict[str, Health]:
        """SCAN the prefix, then HGETALL every hash in one pipeline."""
        keys = list(self._client.scan_iter(match=self._prefix + "*", count=1000))
        with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            values = pipe.execute()
        prefix = len(self._prefix)
        return {key.decode()[prefix:]: self._decode(value) for key, value in zip(keys, values, strict=True) if value}

    def change(self, name: str, transition: Transition) -> Health | None:
        """WATCH the hash, read it, apply the transition, write it in MULTI/EXEC (re-run if the hash changed)."""
        key = self._prefix + name

        def apply(pipe: Any) -> Health | None:
            current = self._decode(pipe.hgetall(key))
            changed = transition(current)
            if changed is not None and changed != current:
                pipe.multi()
                if changed == HEALTHY:
                    pipe.delete(key)
                else:
                    pipe.hset(key, mapping={field: float(value) for field, value in asdict(changed).items()})
                    pipe.expire(key, self._keep_s)
            return changed

        return self._client.transaction(apply, key, value_from_callable=True)

    @staticmethod
    def _decode(fields: dict[bytes, bytes]) -> Health:
        if not fields:
            return HEALTHY
        named = {field.decode(): float(value) for field, value in fields.items()}
        return health_of(**{field: named.get(field, 0.0) for field in asdict(HEALTHY)})

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


class HealthBoard:
    """Every deployment's shared health: reads from memory (a copy refreshed every state_refresh_s by a daemon
    thread), writes only on state changes (one atomic change in the store).

    The thread starts on first use (after gunicorn forks) and stops at `close()`; once closed, the
    board keeps answering from its copy and records changes there only.
    """

    def __init__(self, store: HealthStore, policy: CoolPolicy, refresh_s: float, names: Iterable[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policy = policy
        self._refresh_s = refresh_s
        self._names = frozenset(names)
        self._clock = clock
        self._copy: dict[str, Health] = {}  # replaced, never mutated: readers take no lock
        self._lock = threading.Lock()
        self._generation = 0  # counts local writes, so a refresh that raced one keeps it
        self._written: dict[str, int] = {}
        self._reported: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def health(self, name: str) -> Health:
        """A deployment's health as this worker last saw it (memory only, never I/O)."""
        self._start()
        return self._copy.get(name, HEALTHY)

    def snapshot(self) -> dict[str, Health]:
        """Every known deployment's health: the configured ones and any the store holds."""
        self._start()
        return {**dict.fromkeys(sorted(self._names), HEALTHY), **self._copy}

    def failed(self, name: str, retry_after_s: float | None) -> Health:
        """Count one failure (`retry_after_s`: a 429's Retry-After); returns the deployment's new health."""
        now = self._clock()
        return self._change(name, lambda health: after_failure(health, now, self.policy, retry_after_s))

    def succeeded(self, name: str) -> None:
        """A success ends a cooldown or trial; it writes only when this worker's copy has one (never on a healthy
        request)."""
        health = self.health(name)
        if health.half_open or health.cooling_until:
            self._change(name, after_success)

    def claim_trial(self, name: str, lease_s: float) -> bool:
        """Claim a half-open deployment's one trial for `lease_s`; True for the one caller across hosts that wins.

        A deployment healthy in this worker's copy needs no claim (True, no I/O). When the store is
        unreachable the claim is this worker's alone, and the answer True.
        """
        now = self._clock()
        if self.health(name).status(now) == HEALTHY_STATUS:
            return True
        claimed = self._change(name, lambda health: with_trial(health, now, lease_s),
                               offline=lambda health: with_trial(health, now, lease_s) or health)
        return claimed is not None

    def refresh(self) -> bool:
        """Replace the copy with the store's rows (keeping local writes made meanwhile); False if unreachable."""
        with self._lock:
            since = self._generation
        try:
            stored = self.store.load()
        except self.store.errors as exc:
            log.warning("deployment health store unreachable, keeping the last copy: %s", type(exc).__name__)
            return False
        with self._lock:
            self._written = {name: mark for name, mark in self._written.items() if mark > since}
            self._copy = {**stored, **{name: self._copy.get(name, HEALTHY) for name in self._written}}
        self._report()
        return True

    def close(self) -> None:
        """Stop the refresh thread and release the store (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._stop.set()
        if thread is not None:
            thread.join(THREAD_JOIN_S)
        self.store.close()

    def _change(self, name: str, transition: Transition, offline: Transition | None = None) -> Health | None:
        """Apply a transition in the store (atomic), then in the copy; in the copy only when the store fails
        (`offline`, if given, instead of `transition`) or the board is closed."""
        self._start()
        try:
            if self._closed:
                return self._keep(name, transition(self._copy.get(name, HEALTHY)))
            return self._keep(name, self.store.change(name, transition))
        except self.store.errors as exc:
            log.warning("deployment health store unreachable, %s's change kept in this worker: %s",
                        name, type(exc).__name__)
            return self._keep(name, (offline or transition)(self._copy.get(name, HEALTHY)))

    def _keep(self, name: str, changed: Health | None) -> Health | None:
        """Put a change in the copy at once (a refresh that raced it keeps it)."""
        if changed is not None:
            with self._lock:
                self._generation += 1
                self._written[name] = self._generation
                self._copy = {**self._copy, name: changed}
        return changed

    def _start(self) -> None:
        """Start the refresh thread on first use (cheap after that: one attribute read)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="deployment-health", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # a bug here must not freeze every deployment's state
                log.exception("deployment health refresh failed")
            self._stop.wait(self._refresh_s)

    def _report(self) -> None:
        """Tell the metrics each deployment's status when it changed since the last report."""
        now = self._clock()
        for name in self._names | self._copy.keys():
            status = self._copy.get(name, HEALTHY).status(now)
            if self._reported.get(name) != status:
                self._reported[name] = status
                metrics.deployment_status(name, status)


def health_board(settings: Settings, clock: Callable[[], float] = time.time) -> HealthBoard:
    """The board over the database, or over Redis when `[limits] backend = "redis"`."""
    routing, limits = settings.routing, settings.limits
    store: HealthStore
    if limits.backend == "redis":
        if not limits.url:
            raise ConfigError('limits.url: required when backend = "redis"')
        keep_s = max(routing.window_s, routing.cooldown_s, routing.max_retry_after_s) + KEEP_AFTER_S
        store = RedisHealth(limits.url, keep_s)
    else:
        store = DatabaseHealth()
    names = [deployment.name for model_id, model in settings.models.items()
             for deployment in deployments_of(model_id, model)]
    return HealthBoard(store, CoolPolicy.of(routing), routing.state_refresh_s, names, clock)
