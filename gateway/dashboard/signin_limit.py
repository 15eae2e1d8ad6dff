"""Failed sign-ins, counted per address and per email in a sliding window shared by every worker (the database).

The address is the API's (`serving.trusted_proxies.request_address`: X-Forwarded-For only from `[server]
trusted_proxies`). Sign-ins are rare, so the counts live in the database, where every worker and
host sees them, unlike the API's in-memory bound on bad keys.
"""

from __future__ import annotations

import datetime

from gateway.config import DashboardSettings
from gateway.tables import SignInFailure, utcnow


def retry_after(address: str, email: str, settings: DashboardSettings, now: datetime.datetime | None = None) -> int:
    """Seconds until a sign-in from this address for this email is allowed again (0: allowed now)."""
    now = now or utcnow()
    since = now - datetime.timedelta(seconds=settings.sign_in_window_s)
    waits = [0]
    for column, value in ((SignInFailure.address, address), (SignInFailure.email, email)):
        recent = (SignInFailure.select(SignInFailure.created_at)
                  .where(column == value, SignInFailure.created_at > since)
                  .order_by(SignInFailure.created_at.desc()).limit(settings.sign_in_attempts))
        times = [row.created_at for row in recent]
        if len(times) >= settings.sign_in_attempts:  # the oldest of the last N must leave the window
            waits.append(int((times[-1] - since).total_seconds()) + 1)
    return max(waits)


def record_failure(address: str, email: str, settings: DashboardSettings) -> None:
    """Count a failed sign-in, and forget failures older than the window."""
    now = utcnow()
    SignInFailure.create(address=address, email=email[:254], created_at=now)
    cutoff = now - datetime.timedelta(seconds=settings.sign_in_window_s)
    SignInFailure.delete().where(SignInFailure.created_at < cutoff).execute()


def forget_failures(email: str) -> None:
    """A successful sign-in clears its email's count (not its address's: one's own account resets nothing)."""
    SignInFailure.delete().where(SignInFailure.email == email).execute()

