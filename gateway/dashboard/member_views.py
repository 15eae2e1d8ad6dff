"""Member pages, all about the signed-in user's own account: overview (balance), API keys, usage, playground."""

from __future__ import annotations

from flask import Response, flash, g, redirect, render_template, request, url_for

from gateway import services
from gateway.accounting import admin_service, credits, keys
from gateway.accounting.admin_service import KeySpec, micro_or_none
from gateway.dashboard import charts, once, reports
from gateway.dashboard.blueprint import bp
from gateway.dashboard.formatting import credits as shown_credits
from gateway.dashboard.forms import ActionForm, KeyForm, LimitsForm
from gateway.db import write_transaction
from gateway.errors import GatewayError, NotFound
from gateway.tables import ApiKey


def manageable_key(key_id: int) -> ApiKey:
    """A key the user may change: one of their account's, or any key for an admin (else 404, as if missing)."""
    key = keys.find_key(key_id)
    if key.account_id != g.user.account_id and g.user.role != "admin":
        raise NotFound(f"No API key with id {key_id}.", param="id")
    return key


def key_rows(listed: list[ApiKey]) -> list[dict]:
    """Keys with their last use and a limits form each, as the key tables show them."""
    used = reports.last_used(key.id for key in listed)
    return [{"key": key, "last_used": used.get(key.id), "limits": LimitsForm(
        prefix=f"k{key.id}", formdata=None, rpm=key.rpm, tpm=key.tpm, max_streams=key.max_streams,
        spend_limit=credits.to_credits(key.spend_limit) if key.spend_limit is not None else None)}
        for key in listed]


def back_to_keys(key: ApiKey) -> Response:
    """After changing a key: the user's own key list, or the admin list for another account's key."""
    own = key.account_id == g.user.account_id
    return redirect(url_for(".keys_page") if own else url_for(".admin_keys"))


@bp.get("/")
def overview() -> str:
    """The account's balance: the same figures as GET /api/v3/auth/credit-balance."""
    return render_template("dashboard/overview.html", figures=credits.credit_balance(g.user.account),
                           account=g.user.account)


@bp.get("/keys")
def keys_page(form: KeyForm | None = None) -> str:
    """The account's keys (prefix, name, created, last used, limits), a form to create one."""
    return render_template("dashboard/keys.html", rows=key_rows(admin_service.list_keys(g.user.account_id, 500)), form=form or KeyForm(),
                           action=ActionForm(), default_limits=services.settings().limits)


@bp.post("/keys")
def create_key() -> Response | tuple[str, int]:
    """Create a key in the account (once per form), then redirect to the one page that shows its secret."""
    form = KeyForm()
    if not form.validate():
        return keys_page(form), 400
    with write_transaction():
        if not once.consume_form_token():
            return once.already_done(url_for(".keys_page"))
        key, secret = admin_service.create_key(KeySpec(form.name.data.strip(), g.user.account_id,
                                                       limits=limits_of(form)), by_operator=g.user.role == "admin")
        once.stash_new_key(key.id, secret)
    return redirect(url_for(".new_key"), 303)


@bp.get("/keys/new")
def new_key() -> Response | str:
    """The new key's secret, on this page once (never stored in clear, never shown again; a reload finds it gone)."""
    taken = once.take_new_key()
    if taken is None:
        flash("A new key's secret is shown only once, and it was. If you lost it, revoke the key and create "
              "another.", "error")
        return redirect(url_for(".keys_page"))
    key_id, secret = taken
    return render_template("dashboard/key_created.html", key=keys.find_key(key_id), secret=secret)


@bp.post("/keys/<int:key_id>/revoke")
def revoke_key(key_id: int) -> Response:
    """Revoke a key: refused at once by this worker, by the others within `[auth] key_cache_ttl_s`."""
    key = keys.revoke_key(manageable_key(key_id).id)
    flash(f"Revoked key {key.prefix}… ({key.name}).")
    return back_to_keys(key)


@bp.post("/keys/<int:key_id>/limits")
def set_limits(key_id: int) -> Response:
    """Set a key's limits; an empty field clears one (back to what an operator set); a member stays under those."""
    key = manageable_key(key_id)
    form = LimitsForm(prefix=f"k{key.id}")
    if not form.validate():
        flash("Limits not changed: " + "; ".join(f"{form[name].label.text}: {errors[0]}"
                                                 for name, errors in form.errors.items()), "error")
        return back_to_keys(key)
    try:
        admin_service.set_key_limits(key, limits_of(form), by_operator=g.user.role == "admin")
    except GatewayError as exc:
        flash(f"Limits not changed: {exc.message}", "error")
        return back_to_keys(key)
    flash(f"Limits of key {key.prefix}… set.")
    return back_to_keys(key)


def limits_of(form: KeyForm | LimitsForm) -> dict[str, int | None]:
    """A form's limit fields as the admin service takes them (spend limit in micro-credits)."""
    return {"rpm": form.rpm.data, "tpm": form.tpm.data, "spend_limit": micro_or_none(form.spend_limit.data),
            "max_streams": form.max_streams.data}


def usage_page(usage: reports.UsageFilter, template_args: dict) -> str:
    """The usage page for a filter: a page of requests, per-day and per-model charts of the same rows, and those rows
    grouped by day, model, key, tag or end user when the filter asks."""
    rows, more = reports.recent_requests(usage)
    days = reports.per_day(usage)
    models = reports.per_model(usage)
    span = (days[0].day.isoformat(), days[-1].day.isoformat())
    spend_chart = charts.column_chart("Spend per day, last 30 days (credits)", charts.bars_of(
        days, lambda d: d.day.isoformat(), lambda d: d.cost, lambda d: shown_credits(d.cost)), span)
    request_chart = charts.column_chart("Requests per day, last 30 days", charts.bars_of(
        days, lambda d: d.day.isoformat(), lambda d: d.requests, lambda d: str(d.requests)), span)
    model_chart = charts.bar_list("Spend per model, last 30 days (credits)", charts.bars_of(
        models, lambda m: m.model, lambda m: m.cost, lambda m: shown_credits(m.cost)))
    return render_template("dashboard/usage.html", rows=rows, more=more, usage=usage, models=models,
                           spend_chart=spend_chart, request_chart=request_chart, model_chart=model_chart,
                           choices=reports.filter_choices(usage.account_id), grouped=reports.grouped(usage),
                           groupings=reports.GROUPINGS, **template_args)


@bp.get("/usage")
def usage() -> str:
    """The account's recent requests (filtered, paged) and its spend and requests per day and per model."""
    return usage_page(reports.UsageFilter.from_args(request.args, g.user.account_id),
                      {"admin": False, "keys": admin_service.list_keys(g.user.account_id, 500),
                       "endpoint_name": ".usage"})


@bp.get("/playground")
def playground() -> str:
    """Send a chat or Responses request with one of your keys and watch it stream (from the browser)."""
    return render_template("dashboard/playground.html", models=list(services.settings().models))
