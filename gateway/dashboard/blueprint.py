"""The dashboard's blueprint: who may see which page, CSRF on every POST, HTML errors, strict headers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect

from gateway.dashboard import formatting
from gateway.dashboard.session import signed_in_user
from gateway.errors import GatewayError, PermissionDenied

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
               static_folder="static")
csrf = CSRFProtect()
PUBLIC = {"dashboard.login", "dashboard.signup", "dashboard.static"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@bp.before_request
def _guard() -> Response | None:
    """CSRF-check every POST, then send visitors who are not signed in to the sign-in page."""
    if request.method == "POST":
        csrf.protect()
    g.user = signed_in_user()
    if g.user is None and request.endpoint not in PUBLIC:
        return redirect(url_for("dashboard.login", next=request.path))
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"  # pages show secrets once and balances now
    return response


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {"credits": formatting.credits, "when": formatting.when, "number": formatting.number}


@bp.errorhandler(CSRFError)
def _csrf_refused(exc: CSRFError) -> tuple[str, int]:
    message = "This form expired or did not come from this site (CSRF check failed). Reload the page and try again."
    return render_template("dashboard/error.html", status=400, message=message), 400


@bp.errorhandler(GatewayError)
def _gateway_error(exc: GatewayError) -> tuple[str, int, dict[str, str]]:
    return render_template("dashboard/error.html", status=exc.status, message=exc.message), exc.status, exc.headers


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let only admins through (403 for members)."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if g.user.role != "admin":
            raise PermissionDenied("This page is for admins.")
        return view(*args, **kwargs)

    return guarded
