"""Sign-in attempts, counted per (address, email) pair and per email in a sliding window (the database).

An attempt is recorded before its password is checked, inside a transaction that counts and
inserts while holding a lock for its email (SQLite: the write lock; PostgreSQL: an advisory
transaction lock), so attempts sent at once are counted one after another: at most the limit of
them ever reach the password check. A success deletes its pair's attempts; a failure stays.

The pair bound (`sign_in_attempts`) stops one client guessing one user's password without locking
that user out from everywhere; the higher per-email bound (`sign_in_attempts_per_email`) stops a
guess spread over many addresses. The address is the API's (`serving.trusted_proxies.request_address`:
X-Forwarded-For only from `[server] trusted_proxies`; behind a proxy without it every user shares the
proxy's address, so the pair bound falls back to per email). Sign-ins are rare, so the counts live in
the database, where every worker and host sees them, unlike the API's in-memory bound on bad keys.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Iterator

from gateway.config import DashboardSettings
from gateway.db import database, is_sqlite, write_transaction
from gateway.tables import SignInFailure, utcnow

LOCK_CLASS = 0x7369676E  # "sign": the first key of PostgreSQL's two-key advisory locks, this module's


@contextlib.contextmanager
def _locked(email: str) -> Iterator[None]:
    """A write transaction that no other sign-in for this email runs beside."""
    with write_transaction():
        if not is_sqlite():  # SQLite's BEGIN IMMEDIATE already holds the one write lock
            key = int.from_bytes(hashlib.sha256(email.encode()).digest()[:4], "big", signed=True)
            database.execute_sql("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, key))
        yield


def _wait(query, limit: int, since: datetime.datetime) -> int:
    """Seconds until the oldest of the last `limit` attempts in `query` leaves the window (0: under the limit)."""
    recent = (query.where(SignInFailure.created_at > since)
              .order_by(SignInFailure.created_at.desc()).limit(limit))
    times = [row.created_at for row in recent]
    return int((times[-1] - since).total_seconds()) + 1 if len(times) >= limit else 0


def admit(address: str, email: str, settings: DashboardSettings, now: datetime.datetime | None = None) -> int:
    """Record an attempt, or refuse it: 0 when recorded (check the password now), else the seconds to wait."""
    now = now or utcnow()
    since = now - datetime.timedelta(seconds=settings.sign_in_window_s)
    address, email = address[:64], email[:254]
    attempts = SignInFailure.select(SignInFailure.created_at)
    with _locked(email):
        wait = max(_wait(attempts.where(SignInFailure.address == address, SignInFailure.email == email),
                         settings.sign_in_attempts, since),
                   _wait(attempts.where(SignInFailure.email == email), settings.sign_in_attempts_per_email, since))
        if not wait:
            SignInFailure.create(address=address, email=email, created_at=now)
    SignInFailure.delete().where(SignInFailure.created_at < since).execute()
    return wait


def succeeded(address: str, email: str) -> None:
    """A right password clears its pair's attempts (not the email's from elsewhere: they may be someone else's)."""
    SignInFailure.delete().where(SignInFailure.address == address[:64], SignInFailure.email == email[:254]).execute()
