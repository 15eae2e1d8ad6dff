"""The dashboard's blueprint: who may see which page, CSRF on every POST, HTML errors (never a 500 in JSON), headers."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import peewee
from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from gateway.accounting.admin_limits import MAX_ID
from gateway.dashboard import formatting, once
from gateway.dashboard.session import signed_in_user
from gateway.errors import GatewayError, NotFound, PermissionDenied, ServiceUnavailable, http_error

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
               static_folder="static")
csrf = CSRFProtect()
log = logging.getLogger(__name__)
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
    for name, value in (request.view_args or {}).items():
        if isinstance(value, int) and value > MAX_ID:  # no row has it (and SQLite cannot even compare it)
            raise NotFound(f"No {name.removesuffix('_id')} with id {value}.", param=name)
    return None


@bp.route("/<path:unknown>", methods=["GET", "POST"])
def unknown_page(unknown: str) -> Response:
    """Any other /dashboard path: the dashboard's 404 page, not the API's JSON."""
    raise NotFound(f"There is no page {request.path}.")


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"  # pages show secrets once and balances now
    return response


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {"credits": formatting.credits, "when": formatting.when, "number": formatting.number,
            "form_token": once.issue_form_token}


def error_page(status: int, message: str, headers: dict[str, str] | None = None) -> tuple[str, int, dict[str, str]]:
    """The dashboard's HTML error page."""
    return render_template("dashboard/error.html", status=status, message=message), status, headers or {}


@bp.errorhandler(CSRFError)
def _csrf_refused(exc: CSRFError) -> tuple[str, int, dict[str, str]]:
    return error_page(400, "This form expired or did not come from this site (CSRF check failed). "
                           "Reload the page and try again.")


@bp.errorhandler(GatewayError)
def _gateway_error(exc: GatewayError) -> tuple[str, int, dict[str, str]]:
    return error_page(exc.status, exc.message, exc.headers)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int, dict[str, str]]:
    return _gateway_error(http_error(exc))


@bp.errorhandler(peewee.OperationalError)
@bp.errorhandler(peewee.InterfaceError)
def _database_unavailable(exc: peewee.DatabaseError) -> tuple[str, int, dict[str, str]]:
    log.warning("database unavailable in a dashboard request: %s", type(exc).__name__)
    return _gateway_error(ServiceUnavailable("The database is unavailable; retry shortly."))


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> tuple[str, int, dict[str, str]]:
    request_id = g.get("request_id", "-")
    log.exception("unhandled error in dashboard request %s", request_id)
    return error_page(500, f"Internal server error (request id {request_id}).")


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let only admins through (403 for members)."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if g.user.role != "admin":
            raise PermissionDenied("This page is for admins.")
        return view(*args, **kwargs)

    return guarded
