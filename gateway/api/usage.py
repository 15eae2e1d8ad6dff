"""Spend grouped by day, model, key, tag or end user: GET /api/v1/usage (the caller's account), GET /admin/usage (any).

Query: `from` and `to` (UTC dates, both included; by default the last 30 days to today), `group_by`
(day | model | key | tag | user), `format` (json | csv), and the filters `model`, `key` (an id), `tag`, `user`,
`endpoint` and `status` (ok | error); the admin route also takes `account` (an id; every account when absent).
Spend is in credits.
"""

from __future__ import annotations

import csv
import datetime
import io
from typing import Any, Literal

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from gateway import services
from gateway.accounting import keys
from gateway.accounting.money import MICRO, to_credits
from gateway.accounting.usage_groups import Totals, UsageGroup, UsageQuery, UsageReport, usage_report
from gateway.api.http import parse_model
from gateway.errors import InvalidRequest
from gateway.tables import utcnow

bp = Blueprint("usage", __name__)
DEFAULT_DAYS = 30
CSV_TYPE = "text/csv"
MAX_ID = 2**63 - 1
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell (OWASP's CSV injection)


class UsageArgs(BaseModel):
    """Query parameters of GET /api/v1/usage (unknown ones ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    start: datetime.date | None = Field(None, alias="from", description="first UTC day (default: 29 days before `to`)")
    end: datetime.date | None = Field(None, alias="to", description="last UTC day, included (default: today)")
    group_by: Literal["day", "model", "key", "tag", "user"] = "day"
    format: Literal["json", "csv"] = "json"
    model: str = Field("", max_length=200, description="only this public model")
    key: int | None = Field(None, ge=1, le=MAX_ID, description="only this key (its id)")
    tag: str = Field("", max_length=256, description="only requests with this tag")
    user: str = Field("", max_length=256, description="only this end user")
    endpoint: str = Field("", max_length=64, description="only this endpoint (`chat/completions`, `messages`, ...)")
    status: Literal["", "ok", "error"] = Field("", description="only answered (ok) or failed (error) requests")


class AdminUsageArgs(UsageArgs):
    """Query parameters of GET /admin/usage: those of GET /api/v1/usage, and `account`."""

    account: int | None = Field(None, ge=1, le=MAX_ID, description="only this account (default: every account)")


@bp.get("/api/v1/usage")
def account_usage() -> Response:
    """The caller's account's spend, requests and tokens, grouped."""
    account_id = keys.current_caller().account.id
    args = parse_model(UsageArgs, given_args())
    return rendered(args.format, query_of(args, account_id))


@bp.get("/admin/usage")
def admin_usage() -> Response:
    """Any account's (or every account's) spend, requests and tokens, grouped; the admin token."""
    keys.require_admin(services.settings().admin.token_env)
    args = parse_model(AdminUsageArgs, given_args())
    return rendered(args.format, query_of(args, args.account))


def given_args() -> dict[str, str]:
    """The query string's parameters, an empty one taken as absent (`?from=&to=...`, as a form sends it)."""
    return {name: value for name, value in request.args.items() if value != ""}


def query_of(args: UsageArgs, account_id: int | None) -> UsageQuery:
    """The report's query: the range with its defaults (400 when `from` is after `to`)."""
    end = args.end or utcnow().date()
    earliest = datetime.date.min + datetime.timedelta(days=DEFAULT_DAYS - 1)
    start = args.start or (end - datetime.timedelta(days=DEFAULT_DAYS - 1) if end >= earliest else datetime.date.min)
    if start > end:
        raise InvalidRequest("`from` must not be after `to`.", param="from")
    return UsageQuery(account_id, start, end, args.group_by, args.model, args.key, args.tag, args.user,
                      args.endpoint, args.status)


def rendered(form: str, query: UsageQuery) -> Response:
    """The query's report as JSON, or as CSV (one line per group, a header line first)."""
    report = usage_report(query)
    if form == "csv":
        name = f"usage-{query.start}-{query.end}-by-{query.group_by}.csv"
        return Response(as_csv(report, query.group_by), mimetype=CSV_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return jsonify({"object": "usage_report", "group_by": query.group_by, "from": query.start.isoformat(),
                    "to": query.end.isoformat(), "account_id": query.account_id,
                    "data": [group_object(group, query.group_by) for group in report.groups],
                    "total": totals_object(report.total)})


def totals_object(totals: Totals) -> dict[str, Any]:
    return {"requests": totals.requests, "spend": to_credits(totals.spend), "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens}


def group_object(group: UsageGroup, group_by: str) -> dict[str, Any]:
    """One group as JSON: its value under the grouping's name (`key` with `key_name`, `key_prefix`), then its totals."""
    named = {"key_name": group.key_name, "key_prefix": group.key_prefix} if group_by == "key" else {}
    return {group_by: group.group, **named, **totals_object(group.totals)}


def as_csv(report: UsageReport, group_by: str) -> str:
    """The groups as CSV; spend in credits with six decimals (exact), text that a spreadsheet would run quoted."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    named = ["key_name", "key_prefix"] if group_by == "key" else []
    writer.writerow([group_by, *named, "requests", "spend", "input_tokens", "output_tokens"])
    for group in report.groups:
        values = [group.group, group.key_name, group.key_prefix] if group_by == "key" else [group.group]
        totals = group.totals
        writer.writerow([*(cell(value) for value in values), totals.requests, f"{totals.spend / MICRO:.6f}",
                         totals.input_tokens, totals.output_tokens])
    return out.getvalue()


def cell(value: Any) -> str:
    """A text cell: empty for None, prefixed with ' when a spreadsheet would read it as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text
