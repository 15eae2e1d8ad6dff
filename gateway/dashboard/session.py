"""Dashboard sessions: Flask's signed cookie, only under /dashboard, keyed from the server secret, idle timeout.

The signing key is derived from the server secret (gateway.server_secret), so every worker and
host agrees and nothing is hard-coded. It is derived at the first dashboard request (the factory does no
DB work). The cookie is HttpOnly, SameSite=Lax, Secure when `[dashboard] secure_cookies`, scoped to
the /dashboard path, and re-signed at every request: one older than `idle_timeout_s` fails its
signature check, so an idle session ends on the server's side too, not only in the browser.
"""

from __future__ import annotations

import datetime

from flask import Flask, Request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from gateway.config import Settings
from gateway.dashboard import users
from gateway.db import own_connection
from gateway.server_secret import derived_key
from gateway.tables import Account, User

PREFIX = "/dashboard"
COOKIE = "gateway_dashboard"
KEY_INFO = b"gateway/dashboard/session/v1"


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


def sign_in(user: User) -> None:
    """Start a fresh session for `user` (a new cookie: nothing from before the sign-in carries over)."""
    session.clear()
    session.permanent = True
    session["user_id"] = user.id
    session["fingerprint"] = users.fingerprint(user)


def sign_out() -> None:
    """End the session."""
    session.clear()


def signed_in_user() -> User | None:
    """The session's user, or None (also when the user was deleted or changed password since)."""
    user_id = session.get("user_id")
    if not isinstance(user_id, int):
        return None
    user = User.select(User, Account).join(Account).where(User.id == user_id).first()
    if user is None or session.get("fingerprint") != users.fingerprint(user):
        session.clear()
        return None
    return user
