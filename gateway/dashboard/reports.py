"""What the usage pages read: recent requests (filtered, paged), spend and requests per day and per model, and the
same rows grouped by day, model, key, tag or end user (gateway.accounting.usage_groups, as GET /api/v1/usage)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from peewee import JOIN, fn

from gateway.accounting.usage_groups import GROUPINGS, UsageQuery, UsageReport, has_tag, usage_report
from gateway.errors import InvalidRequest
from gateway.tables import Account, ApiKey, UsageEntry, utcnow

PAGE_SIZE = 50
MAX_PAGE = 1_000_000_000  # its offset (50 a page) stays far inside a 64-bit integer
CHART_DAYS = 30
STATUSES = ("", "ok", "error")


@dataclass(frozen=True)
class UsageFilter:
    """Which usage rows a page shows: one account's (None: every account, for admins), narrowed by the form."""

    account_id: int | None
    model: str = ""
    endpoint: str = ""
    key_id: int | None = None
    status: str = ""
    page: int = 1
    tag: str = ""
    user: str = ""  # the end user
    group_by: str = ""  # one of GROUPINGS: the grouped table's grouping ("": no table)

    @classmethod
    def from_args(cls, args: Mapping[str, str], account_id: int | None) -> UsageFilter:
        """The filter a query string asks for; values that make no sense are dropped, not errors."""
        def number(name: str) -> int | None:
            value = args.get(name, "")
            fits = value.isascii() and value.isdecimal() and len(value) <= 18  # below 10**18, so in 64 bits
            return int(value) if fits and int(value) > 0 else None

        if account_id is None:  # admins may narrow to one account
            account_id = number("account")
        status, group_by = args.get("status", ""), args.get("group_by", "")
        return cls(account_id=account_id, model=args.get("model", "")[:200], endpoint=args.get("endpoint", "")[:64],
                   key_id=number("key"), status=status if status in STATUSES else "", page=page_number(args),
                   tag=args.get("tag", "").strip()[:256], user=args.get("user", "").strip()[:256],
                   group_by=group_by if group_by in GROUPINGS else "")

    def query_args(self, with_account: bool, **changes: object) -> dict[str, object]:
        """This filter as query-string arguments (for paging links; the account only on admin pages)."""
        changed = replace(self, **changes)
        pairs = {"account": changed.account_id if with_account else None, "model": changed.model,
                 "endpoint": changed.endpoint, "key": changed.key_id, "status": changed.status,
                 "tag": changed.tag, "user": changed.user, "group_by": changed.group_by,
                 "page": changed.page if changed.page > 1 else None}
        return {name: value for name, value in pairs.items() if value}


@dataclass(frozen=True)
class DayTotal:
    day: datetime.date
    requests: int
    cost: int  # micro-credits


@dataclass(frozen=True)
class ModelTotal:
    model: str
    requests: int
    cost: int  # micro-credits


def _where(query, usage: UsageFilter):
    if usage.account_id is not None:
        query = query.where(UsageEntry.account == usage.account_id)
    if usage.model:
        query = query.where(UsageEntry.model == usage.model)
    if usage.endpoint:
        query = query.where(UsageEntry.endpoint == usage.endpoint)
    if usage.key_id is not None:
        query = query.where(UsageEntry.api_key == usage.key_id)
    if usage.status == "ok":
        query = query.where(UsageEntry.status < 400)
    elif usage.status == "error":
        query = query.where(UsageEntry.status >= 400)
    if usage.tag:
        query = query.where(UsageEntry.tags.is_null(False) & has_tag(usage.tag))
    if usage.user:
        query = query.where(UsageEntry.end_user == usage.user)
    return query


def recent_requests(usage: UsageFilter) -> tuple[list[UsageEntry], bool]:
    """One page of requests, newest first (each with `.api_key` and `.account` joined), and whether more follow."""
    query = (UsageEntry.select(UsageEntry, ApiKey.id, ApiKey.prefix, Account.id, Account.name)  # ids: or peewee drops the FKs
             .join(ApiKey, JOIN.LEFT_OUTER).switch(UsageEntry).join(Account, JOIN.LEFT_OUTER))
    rows = list(_where(query, usage).order_by(UsageEntry.created_at.desc(), UsageEntry.id.desc())
                .offset((usage.page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1))
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


def chart_start(now: datetime.datetime) -> datetime.datetime:
    """Midnight (UTC) of the first of the chart's 30 days."""
    return datetime.datetime.combine(now.date() - datetime.timedelta(days=CHART_DAYS - 1), datetime.time())


def per_day(usage: UsageFilter, now: datetime.datetime | None = None) -> list[DayTotal]:
    """Requests and spend on each of the last 30 days (UTC), days without requests included."""
    start = chart_start(now or utcnow())
    day = fn.DATE(UsageEntry.created_at)
    query = (UsageEntry.select(day, fn.COUNT(UsageEntry.id), fn.COALESCE(fn.SUM(UsageEntry.cost), 0))
             .where(UsageEntry.created_at >= start).group_by(day))
    found = {str(row[0])[:10]: (int(row[1]), int(row[2])) for row in _where(query, usage).tuples()}
    days = [start.date() + datetime.timedelta(days=offset) for offset in range(CHART_DAYS)]
    return [DayTotal(d, *found.get(d.isoformat(), (0, 0))) for d in days]


def per_model(usage: UsageFilter, now: datetime.datetime | None = None) -> list[ModelTotal]:
    """Requests and spend per model over the last 30 days, biggest spend first."""
    cost = fn.COALESCE(fn.SUM(UsageEntry.cost), 0)
    query = (UsageEntry.select(UsageEntry.model, fn.COUNT(UsageEntry.id), cost)
             .where(UsageEntry.created_at >= chart_start(now or utcnow())).group_by(UsageEntry.model))
    totals = [ModelTotal(model or "(none)", int(count), int(spent))
              for model, count, spent in _where(query, usage).tuples()]
    return sorted(totals, key=lambda total: (-total.cost, -total.requests, total.model))


def grouped(usage: UsageFilter, now: datetime.datetime | None = None) -> UsageReport | None:
    """The filter's rows of the last 30 days grouped by its `group_by` (None when it names no grouping)."""
    if not usage.group_by:
        return None
    now = now or utcnow()
    return usage_report(UsageQuery(usage.account_id, chart_start(now).date(), now.date(), usage.group_by,
                                   usage.model, usage.key_id, usage.tag, usage.user, usage.endpoint, usage.status))


def filter_choices(account_id: int | None, now: datetime.datetime | None = None) -> dict[str, list[str]]:
    """The models and endpoints seen in the last 30 days (the filter form's options)."""
    since = chart_start(now or utcnow())
    choices = {}
    for name, column in (("models", UsageEntry.model), ("endpoints", UsageEntry.endpoint)):
        query = _where(UsageEntry.select(column).distinct().where(UsageEntry.created_at >= since),
                       UsageFilter(account_id))
        choices[name] = sorted(value for (value,) in query.tuples() if value)
    return choices


def last_used(key_ids: Iterable[int]) -> dict[int, datetime.datetime]:
    """When each key last made a request, from the usage rows (keys never used are absent)."""
    key_ids = list(key_ids)
    if not key_ids:
        return {}
    query = (UsageEntry.select(UsageEntry.api_key, fn.MAX(UsageEntry.created_at))
             .where(UsageEntry.api_key.in_(key_ids)).group_by(UsageEntry.api_key))
    return {key_id: _as_datetime(when) for key_id, when in query.tuples()}


def page_number(args: Mapping[str, str]) -> int:
    """The `page` a query string asks for (1 when absent or not a positive number); 400 above MAX_PAGE."""
    value = args.get("page", "").lstrip("0")
    if not (value.isascii() and value.isdecimal()):
        return 1
    if len(value) > len(str(MAX_PAGE)) or int(value) > MAX_PAGE:
        raise InvalidRequest(f"`page` must be at most {MAX_PAGE}.", param="page")
    return int(value)


def accounts_page(page: int) -> tuple[list[Account], bool]:
    """One page of accounts, newest first, and whether more follow."""
    rows = list(Account.select().order_by(Account.id.desc()).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1))
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


def _as_datetime(value: datetime.datetime | str) -> datetime.datetime:
    # SQLite hands MAX() of a datetime column back as text
    return value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)
