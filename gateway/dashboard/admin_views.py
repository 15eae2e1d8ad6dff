"""Admin pages: accounts (create, tier, grants with expiry, ledger, budgets, keys' limit periods, guardrails), users,
every key, MCP servers, deployments, all usage.

They call the admin API's services (gateway.accounting.keys and credits, describe_account and
describe_entry of gateway.accounting.descriptions), so a page and the API never disagree.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from flask import Response, flash, g, redirect, render_template, request, url_for

from gateway import services
from gateway.accounting import admin_service, credits, keys
from gateway.accounting.admin_service import BudgetSpec
from gateway.accounting.descriptions import describe_account, describe_entry
from gateway.accounting.guardrail_names import decode_names, encode_names
from gateway.dashboard import once, reports, users
from gateway.dashboard.blueprint import admin_required, bp
from gateway.dashboard.forms import (
    AccountForm,
    ActionForm,
    BudgetForm,
    GrantForm,
    GuardrailsForm,
    LimitResetForm,
    TierForm,
    UserForm,
    names_of,
    period_of,
)
from gateway.dashboard.member_views import key_rows, usage_page
from gateway.db import write_transaction
from gateway.errors import GatewayError, NotFound
from gateway.mcp.toolset import listed_tool

if TYPE_CHECKING:
    from gateway.upstream.router import DeploymentState


STATE_CLASSES = {"healthy": "available", "cooling": "unavailable"}  # a deployment status -> its badge's style


def form_errors(form) -> str:
    """A form's problems as one sentence for a flash message."""
    return "; ".join(f"{form[name].label.text}: {errors[0]}" for name, errors in form.errors.items())


@bp.route("/admin/accounts", methods=["GET", "POST"])
@admin_required
def admin_accounts() -> Response | str:
    """Every account with its balance (as GET /admin/accounts/ID), and a form to create one."""
    form = AccountForm()
    if form.validate_on_submit():
        with write_transaction():
            if not once.consume_form_token():
                return once.already_done(url_for(".admin_accounts"))
            account = admin_service.create_account(form.name.data.strip(), form.tier.data, form.scope.data or None)
        flash(f"Created account {account.id}.")
        return redirect(url_for(".admin_account", account_id=account.id))
    page = reports.page_number(request.args)
    listed, more = reports.accounts_page(page)
    return render_template("dashboard/admin_accounts.html", accounts=[describe_account(a) for a in listed],
                           form=form, page=page, more=more)


@bp.get("/admin/accounts/<int:account_id>")
@admin_required
def admin_account(account_id: int) -> str:
    """One account: balance, tier, grants, its ledger, keys, users and guardrails."""
    account = keys.find_account(account_id)
    listed = admin_service.list_keys(account.id, 500)
    return render_template(
        "dashboard/admin_account.html", account=describe_account(account),
        ledger=[describe_entry(entry) for entry in credits.ledger_of(account.id)],
        rows=key_rows(listed), users=users.list_users(account.id),
        tier_form=TierForm(tier=account.tier, max_streams=account.max_streams), grant_form=GrantForm(),
        action=ActionForm(),
        default_limits=services.settings().limits,
        budgets=[admin_service.describe_budget(row) for row in admin_service.list_budgets(account.id)],
        budget_form=BudgetForm(), limit_reset_form=LimitResetForm(),
        guardrails_form=GuardrailsForm(guardrails=", ".join(decode_names(account.guardrails))),
        configured_guardrails=list(services.settings().guardrails),
        key_guardrails=[(key, decode_names(key.guardrails)) for key in listed if key.guardrails])


@bp.post("/admin/accounts/<int:account_id>/tier")
@admin_required
def admin_set_tier(account_id: int) -> Response:
    """Change an account's tier and stream limit (its keys' cached copies are dropped)."""
    form = TierForm()
    if form.validate():
        admin_service.update_account(keys.find_account(account_id),
                                     {"tier": form.tier.data, "max_streams": form.max_streams.data})
        flash(f"Tier set to {form.tier.data}.")
    else:
        flash(form_errors(form), "error")
    return redirect(url_for(".admin_account", account_id=account_id))


@bp.post("/admin/accounts/<int:account_id>/credits")
@admin_required
def admin_grant(account_id: int) -> Response:
    """Grant credits to an account, optionally expiring after some days."""
    account = keys.find_account(account_id)
    form = GrantForm()
    if not form.validate():
        flash(form_errors(form), "error")
        return redirect(url_for(".admin_account", account_id=account.id))
    try:
        with write_transaction():  # the form's token and the grant: both or neither
            if not once.consume_form_token():
                return once.already_done(url_for(".admin_account", account_id=account.id))
            grant = admin_service.grant(account.id, credits.to_micro(form.amount.data), form.expires_in_days.data,
                                        form.source.data)
        flash(f"Granted {form.amount.data} credits (grant {grant.id}).")
    except GatewayError as exc:
        flash(exc.message, "error")
    return redirect(url_for(".admin_account", account_id=account.id))


@bp.post("/admin/accounts/<int:account_id>/budgets")
@admin_required
def admin_set_budget(account_id: int) -> Response:
    """Set a budget on the account: its own, one of its keys' for a model, or a tag's (POST /admin/budgets)."""
    account = keys.find_account(account_id)
    back = redirect(url_for(".admin_account", account_id=account.id))
    form = BudgetForm()
    if not form.validate():
        flash(form_errors(form), "error")
        return back
    spec = BudgetSpec(account.id, credits.to_micro(form.amount.data), period_of(form.period.data), form.key_id.data,
                      form.model.data.strip() or None, form.tag.data.strip() or None)
    try:
        with write_transaction():
            if not once.consume_form_token():
                return once.already_done(url_for(".admin_account", account_id=account.id))
            row = admin_service.create_budget(spec, services.settings().models)
        flash(f"Set budget {row.id}: {admin_service.describe_budget(row)['description']}.")
    except GatewayError as exc:
        flash(exc.message, "error")
    return back


@bp.post("/admin/accounts/<int:account_id>/budgets/<int:budget_id>/delete")
@admin_required
def admin_delete_budget(account_id: int, budget_id: int) -> Response:
    """Remove one of the account's budgets."""
    if admin_service.find_budget(budget_id).account_id != account_id:
        raise NotFound(f"No budget with id {budget_id} on account {account_id}.", param="id")
    admin_service.delete_budget(budget_id)
    flash(f"Deleted budget {budget_id}.")
    return redirect(url_for(".admin_account", account_id=account_id))


@bp.post("/admin/accounts/<int:account_id>/limit_reset")
@admin_required
def admin_set_limit_reset(account_id: int) -> Response:
    """Set when one of the account's keys' spend limit resets (daily, weekly, monthly) or not (lifetime)."""
    form = LimitResetForm()
    if not form.validate():
        flash(form_errors(form), "error")
    else:
        key = keys.find_key(form.key_id.data)
        if key.account_id != account_id:
            flash(f"Key {key.id} is not a key of account {account_id}.", "error")
        else:
            admin_service.set_limit_reset(key, period_of(form.limit_reset.data))
            flash(f"The spend limit of key {key.prefix}… now counts {form.limit_reset.data}.")
    return redirect(url_for(".admin_account", account_id=account_id))


@bp.post("/admin/accounts/<int:account_id>/guardrails")
@admin_required
def admin_set_guardrails(account_id: int) -> Response:
    """Set the account's guardrails, or one of its keys' (PATCH /admin/accounts/ID or /admin/keys/ID)."""
    account = keys.find_account(account_id)
    form = GuardrailsForm()
    if not form.validate():
        flash(form_errors(form), "error")
        return redirect(url_for(".admin_account", account_id=account.id))
    try:
        stored = encode_names(services.settings(), names_of(form.guardrails))
        if form.key_id.data is None:
            admin_service.update_account(account, {"guardrails": stored})
            flash(f"The account's guardrails: {', '.join(names_of(form.guardrails)) or 'none'}.")
        else:
            key = keys.find_key(form.key_id.data)
            if key.account_id != account.id:
                raise NotFound(f"Key {key.id} is not a key of account {account.id}.", param="key_id")
            keys.set_guardrails(key, stored)
            flash(f"The guardrails of key {key.prefix}…: {', '.join(names_of(form.guardrails)) or 'none'}.")
    except GatewayError as exc:
        flash(exc.message, "error")
    return redirect(url_for(".admin_account", account_id=account.id))


@bp.route("/admin/users", methods=["GET", "POST"])
@admin_required
def admin_users() -> Response | str | tuple[str, int]:
    """Every user, and a form to add one (to an account, or with a new account)."""
    form = UserForm()
    if form.validate_on_submit():
        try:
            with write_transaction():
                if not once.consume_form_token():
                    return once.already_done(url_for(".admin_users"))
                account = keys.find_account(form.account_id.data) if form.account_id.data else None
                user = users.create_user(form.email.data, form.password.data, account, form.role.data)
        except GatewayError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Created {user.role} {user.email} (account {user.account_id}).")
            return redirect(url_for(".admin_users"))
    status = 400 if form.errors else 200
    return render_template("dashboard/admin_users.html", users=users.list_users(), form=form,
                           action=ActionForm()), status


@bp.post("/admin/users/<int:user_id>/delete")
@admin_required
def admin_delete_user(user_id: int) -> Response:
    """Delete a user (not yourself); their account and its keys stay."""
    if user_id == g.user.id:
        flash("You cannot delete yourself.", "error")
    else:
        flash(f"Deleted {users.delete_user(user_id).email}.")
    return redirect(url_for(".admin_users"))


@bp.get("/admin/keys")
@admin_required
def admin_keys() -> str:
    """Every key of every account (newest 500), with revoke and limits."""
    return render_template("dashboard/admin_keys.html", rows=key_rows(admin_service.list_keys(None, 500)), action=ActionForm(),
                           default_limits=services.settings().limits)


@bp.get("/admin/mcp")
@admin_required
def admin_mcp() -> str:
    """The built-in MCP servers with their state and tools (GET /v1/mcp/servers and .../tools, every scope)."""
    runtime = services.mcp().servers
    servers = []
    for status in runtime.statuses():
        try:
            tools = [listed_tool(tool) for tool in runtime.tools(status["label"])]
        except GatewayError:
            tools = []
        servers.append({**status, "tools": tools})
    return render_template("dashboard/admin_mcp.html", servers=servers)


@bp.get("/admin/deployments")
@admin_required
def admin_deployments() -> str:
    """Every deployment of every model with its routing state (GET /admin/deployments)."""
    rows = [deployment_row(state) for state in services.router().deployment_states()]
    return render_template("dashboard/admin_deployments.html", deployments=rows)


def deployment_row(state: DeploymentState) -> dict[str, Any]:
    """A DeploymentState (gateway.upstream.router) with its badge style and its cooldown's end as a UTC time."""
    until = state.cooling_until
    return {"state": state, "state_class": STATE_CLASSES.get(state.status, ""),
            "cooling_until": None if until is None else datetime.datetime.fromtimestamp(until, datetime.UTC)}


@bp.get("/admin/usage")
@admin_required
def admin_usage() -> str:
    """Requests of every account (or of one: `?account=ID`), with the same charts as a member's usage page."""
    usage = reports.UsageFilter.from_args(request.args, None)
    return usage_page(usage, {"admin": True, "keys": [], "endpoint_name": ".admin_usage"})
