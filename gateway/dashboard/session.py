"""Dashboard sessions: a row per signed-in session, found through a token in Flask's signed cookie.

The cookie (scoped to /dashboard, HttpOnly, SameSite=Lax, Secure when `[dashboard] secure_cookies`,
re-signed at every request) carries a random token; the `dashboard_session` row holds only its
SHA-256 digest. Every dashboard request looks the row up, so deleting it (sign-out, a password
change, the user's deletion) ends every copy of the cookie at once, and a row unused for
`idle_timeout_s` no longer signs anyone in. The cookie's signing key is derived from the server
secret (gateway.server_secret) at the first dashboard request (the factory does no DB work).
"""

from __future__ import annotations

import datetime
import hashlib
import secrets

from flask import Flask, Request, g, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from gateway import services
from gateway.config import Settings
from gateway.db import own_connection
from gateway.server_secret import derived_key
from gateway.tables import Account, DashboardSession, User, utcnow

PREFIX = "/dashboard"
COOKIE = "gateway_dashboard"
KEY_INFO = b"gateway/dashboard/session/v1"
TOUCH_AFTER_S = 60  # how stale `seen_at` may get before a request writes it again


def session_key(settings: Settings) -> str:
    """The cookie-signing key: the server secret through HKDF, with the dashboard's own label."""
    return derived_key(settings, KEY_INFO).hex()


class DashboardSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, opened only for /dashboard (the API never reads or sets the cookie)."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.path.startswith(PREFIX):
            return None  # a null session: nothing is read, nothing is sent back
        if not app.secret_key:  # every thread derives the same key, so a race only repeats the work
            with own_connection():
                app.secret_key = session_key(app.extensions["gateway.settings"])
        return super().open_session(app, request)


def init_app(app: Flask, settings: Settings) -> None:
    """Use dashboard sessions, with the cookie's attributes and lifetime from `[dashboard]`."""
    app.session_interface = DashboardSessions()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_PATH=PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.dashboard.secure_cookies,
        SESSION_REFRESH_EACH_REQUEST=True,
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(seconds=settings.dashboard.idle_timeout_s),
    )


def digest_of(token: str) -> str:
    """The stored form of a session token (a leaked table signs nobody in)."""
    return hashlib.sha256(token.encode()).hexdigest()


def idle_cutoff(now: datetime.datetime) -> datetime.datetime:
    """Sessions last seen before this are over."""
    return now - datetime.timedelta(seconds=services.settings().dashboard.idle_timeout_s)


def sign_in(user: User) -> None:
    """Start a fresh session for `user` (a new row and cookie: nothing from before the sign-in carries over)."""
    sign_out()
    now = utcnow()
    DashboardSession.delete().where(DashboardSession.seen_at < idle_cutoff(now)).execute()  # sweep idle ones
    token = secrets.token_urlsafe(32)
    DashboardSession.create(digest=digest_of(token), user=user, created_at=now, seen_at=now)
    session.permanent = True
    session["sid"] = token


def sign_out() -> None:
    """End this session: its row (so every copy of the cookie) and the cookie."""
    token = session.get("sid")
    if isinstance(token, str):
        DashboardSession.delete().where(DashboardSession.digest == digest_of(token)).execute()
    session.clear()


def current_session() -> DashboardSession | None:
    """This request's session row (with `.user` and its account), or None when signed out, ended or idle."""
    token = session.get("sid")
    if not isinstance(token, str):
        return None
    now = utcnow()
    row = (DashboardSession.select(DashboardSession, User, Account).join(User).join(Account)
           .where(DashboardSession.digest == digest_of(token), DashboardSession.seen_at >= idle_cutoff(now)).first())
    if row is None:
        session.clear()
        return None
    if (now - row.seen_at).total_seconds() > TOUCH_AFTER_S:
        DashboardSession.update(seen_at=now).where(DashboardSession.digest == row.digest).execute()
    return row


def signed_in_user() -> User | None:
    """The session's user, or None; the row is kept on `g.dashboard_session` for this request."""
    g.dashboard_session = current_session()
    return g.dashboard_session.user if g.dashboard_session else None
