"""The app's `[server] trusted_proxies` and the client address of a request seen through them.

gateway.serving.client_address holds the pure rule; this module binds it to the app and to
Flask's current request, for the access log, the failed-authentication throttle, the dashboard's
sign-in limit and the hub's X-Forwarded-Proto.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app, request

from gateway.serving.client_address import Network, client_address, is_trusted, parse_networks

if TYPE_CHECKING:
    from gateway.config import Settings

TRUSTED_PROXIES = "gateway.trusted_proxies"


def init_app(app: Flask, settings: Settings) -> None:
    """Give the app its trusted proxies."""
    app.extensions[TRUSTED_PROXIES] = parse_networks(settings.server.trusted_proxies)


def client_of(app: Flask, peer: str | None, forwarded_for: str | None) -> str:
    """A request's client address by the app's `[server] trusted_proxies` (the access log uses it too)."""
    trusted: tuple[Network, ...] = app.extensions.get(TRUSTED_PROXIES, ())
    return client_address(peer, forwarded_for, trusted)


def request_address() -> str:
    """The current request's client address (X-Forwarded-For only from a trusted proxy)."""
    return client_of(current_app, request.remote_addr, ",".join(request.headers.getlist("X-Forwarded-For")))


def from_trusted_proxy() -> bool:
    """Whether the current request's direct peer is a `[server] trusted_proxies` proxy (so X-Forwarded-* count)."""
    return is_trusted(request.remote_addr or "", current_app.extensions.get(TRUSTED_PROXIES, ()))
