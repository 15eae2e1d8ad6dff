"""Sign-in, sign-out, a password change and (when `[dashboard] signup` is on) self sign-up."""

from __future__ import annotations

import re

from flask import Response, abort, flash, g, redirect, render_template, request, url_for

from gateway import services
from gateway.accounting import credits
from gateway.dashboard import signin_limit, users
from gateway.dashboard.blueprint import bp
from gateway.dashboard.forms import ActionForm, PasswordForm, SignInForm, SignUpForm
from gateway.dashboard.session import PREFIX, sign_in, sign_out
from gateway.errors import GatewayError
from gateway.serving.trusted_proxies import request_address

SAFE_NEXT = re.compile(re.escape(PREFIX) + r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")  # printable, no backslash


def _next_page() -> str:
    """Where to go after signing in: a dashboard path the sign-in page was sent from, else the overview."""
    target = request.args.get("next", "")
    return target if SAFE_NEXT.fullmatch(target) and "//" not in target else url_for(".overview")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int, dict[str, str]] | str:
    """The email and password form; each attempt is counted before its password is checked."""
    if g.user is not None:
        return redirect(_next_page())
    form = SignInForm()
    if not form.validate_on_submit():
        return render_template("dashboard/login.html", form=form)
    address, email = request_address(), form.email.data.strip().lower()
    wait = signin_limit.admit(address, email, services.settings().dashboard)
    if wait:
        message = f"Too many failed sign-ins. Try again in {wait} seconds."
        return render_template("dashboard/login.html", form=form, error=message), 429, {"Retry-After": str(wait)}
    user = users.authenticate(email, form.password.data)
    if user is None:
        return render_template("dashboard/login.html", form=form, error="Wrong email or password."), 401, {}
    signin_limit.succeeded(address, email)
    sign_in(user)
    return redirect(_next_page())


@bp.post("/logout")
def logout() -> Response:
    """End the session everywhere its cookie was copied (a POST with its CSRF token, so no other site can)."""
    sign_out()
    return redirect(url_for(".login"))


@bp.route("/password", methods=["GET", "POST"])
def change_password() -> Response | tuple[str, int, dict[str, str]] | str:
    """Change the signed-in user's password: every session of theirs ends, this browser gets a new one."""
    form = PasswordForm()
    if not form.validate_on_submit():
        return render_template("dashboard/password.html", form=form), 400 if form.errors else 200, {}
    wait = signin_limit.admit(request_address(), g.user.email, services.settings().dashboard)
    if wait:  # the current password is checked like a sign-in's, so a taken session cannot guess it faster
        message = f"Too many failed sign-ins. Try again in {wait} seconds."
        return render_template("dashboard/password.html", form=form, error=message), 429, {"Retry-After": str(wait)}
    if users.authenticate(g.user.email, form.current.data) is None:
        return render_template("dashboard/password.html", form=form, error="Wrong current password."), 400, {}
    signin_limit.succeeded(request_address(), g.user.email)
    users.set_password(g.user, form.password.data)
    sign_in(g.user)
    flash("Password changed. Every other session is signed out.")
    return redirect(url_for(".overview"))


@bp.route("/signup", methods=["GET", "POST"])
def signup() -> Response | tuple[str, int] | str:
    """Self sign-up, off by default: a new free-tier account, its member user, and the starting grant."""
    settings = services.settings().dashboard
    if not settings.signup:
        abort(404)
    form = SignUpForm()
    if not form.validate_on_submit():
        return render_template("dashboard/signup.html", form=form)
    try:
        user = users.create_user(form.email.data, form.password.data)  # a new account, free tier
    except GatewayError as exc:
        return render_template("dashboard/signup.html", form=form, error=exc.message), exc.status
    if settings.signup_credits > 0:
        credits.grant_credits(user.account_id, credits.to_micro(settings.signup_credits), source="signup")
    sign_in(user)
    flash("Welcome! Create an API key to start.")
    return redirect(url_for(".keys_page"))


@bp.context_processor
def _session_forms() -> dict[str, object]:
    return {"sign_out_form": ActionForm() if g.get("user") else None,
            "signup_open": services.settings().dashboard.signup}
