"""The web dashboard: members see their keys, balance, usage and a playground; admins see every account.

Server-rendered Flask + Jinja2 pages in one blueprint under /dashboard, off with `[dashboard]
enabled = false`. Nobody can sign in before `gateway users create` (or `[dashboard] signup`).
"""

from __future__ import annotations

from flask import Flask

from gateway.config import Settings


def init_app(app: Flask, settings: Settings) -> None:
    """Register the dashboard (sessions, CSRF, pages) unless it is turned off."""
    if not settings.dashboard.enabled:
        return
    from gateway.dashboard import admin_views, auth_views, member_views, session  # noqa: F401 (they add routes)
    from gateway.dashboard.blueprint import bp, csrf

    session.init_app(app, settings)
    app.config.update(WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=None)  # checked by the blueprint, per POST
    csrf.init_app(app)
    app.register_blueprint(bp)
