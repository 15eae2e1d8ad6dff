"""CORS for browser clients, off unless `[server] cors_origins` names origins.

Without origins the app sends no Access-Control-* header at all, so browsers keep other sites
from reading its answers. With them, a request whose `Origin` is listed (or any, with "*") gets
`Access-Control-Allow-Origin`, and its preflight (`OPTIONS` with Access-Control-Request-Method)
is answered 204 here, before authentication: a browser sends a preflight without the key.
Credentials (cookies) are never allowed cross-origin: API clients send their key in a header.

Not flask-cors: it answers a preflight through Flask's automatic OPTIONS response, which comes
after the blueprints' authentication (a 401 for every preflight here); this policy is one list of
origins, and these few lines keep it whole and dependency-free.
"""

from __future__ import annotations

from collections.abc import Collection

from flask import Flask, Response, request

ANY = "*"
METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
EXPOSED = ", ".join((
    "x-request-id", "retry-after", "x-generation-id",
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
))
PREFLIGHT_MAX_AGE_S = "600"


def allowed_origin(origin: str | None, origins: Collection[str]) -> str | None:
    """The Access-Control-Allow-Origin value for a request from `origin`, or None when it gets none."""
    if not origin or not origins:
        return None
    if ANY in origins:
        return ANY
    return origin if origin.rstrip("/") in origins else None


def cors_headers(origin: str, preflight: bool, requested_headers: str) -> dict[str, str]:
    """The headers of an allowed cross-origin answer (a preflight's also name methods and headers)."""
    headers = {"Access-Control-Allow-Origin": origin}
    if preflight:
        headers["Access-Control-Allow-Methods"] = METHODS
        headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE_S
        if requested_headers:  # the SDKs send their own (x-stainless-*, OpenAI-Beta, ...)
            headers["Access-Control-Allow-Headers"] = requested_headers
    else:
        headers["Access-Control-Expose-Headers"] = EXPOSED
    return headers


def init_app(app: Flask, origins: Collection[str]) -> None:
    """Answer preflights and add CORS headers for the configured origins; nothing when there are none."""
    if not origins:
        return
    origins = frozenset(origin.rstrip("/") for origin in origins)

    @app.before_request
    def _preflight() -> Response | None:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        allowed = allowed_origin(request.headers.get("Origin"), origins)
        if allowed is None:
            return None
        response = Response(status=204)
        response.headers.update(cors_headers(allowed, True, request.headers.get("Access-Control-Request-Headers", "")))
        return response

    @app.after_request
    def _allow(response: Response) -> Response:
        response.vary.add("Origin")
        allowed = allowed_origin(request.headers.get("Origin"), origins)
        if allowed is not None and "Access-Control-Allow-Origin" not in response.headers:
            response.headers.update(cors_headers(allowed, False, ""))
        return response
