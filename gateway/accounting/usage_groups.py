"""Spend, requests and tokens of usage rows over a range of UTC days, grouped by day, model, key, tag or end user.

What GET /api/v1/usage, GET /admin/usage and the dashboard's usage page read. Every group sums the rows' `cost`,
which is what the ledger charged for them (both are written in one transaction, with the same timestamp), so
the groups of `day`, `model`, `key` and `user` add up to the ledger's charges over the range. Tags are the
exception: a row with two tags counts in both groups, and untagged rows form the group None, so tag groups may
add up to more than the total; the report's `total` is always the rows' own sum.

Tags are grouped from the comma-joined `usage_entry.tags` in Python, after SQL has summed the rows per distinct
combination of tags (few, however many rows there are): no second table, and no extra write per request.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from peewee import JOIN, Expression, Field, Value, fn

from gateway.accounting.book import split_tags
from gateway.accounting.statements import tag_needle
from gateway.tables import ApiKey, UsageEntry

GROUPINGS = ("day", "model", "key", "tag", "user")


@dataclass(frozen=True)
class UsageQuery:
    """Which rows to sum (one account's, or every account's when None; UTC days `start`..`end`, both included)."""

    account_id: int | None
    start: datetime.date
    end: datetime.date
    group_by: str = "day"
    model: str = ""
    key_id: int | None = None
    tag: str = ""
    user: str = ""
    endpoint: str = ""
    status: str = ""  # "ok" (below 400) | "error" | "" (any)


@dataclass(frozen=True)
class Totals:
    """Requests (usage rows), spend (micro-credits) and tokens of some rows."""

    requests: int = 0
    spend: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.requests + other.requests, self.spend + other.spend,
                      self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)


@dataclass(frozen=True)
class UsageGroup:
    """One group's totals; `group` is the day (ISO), model, key id, tag or end user (None: rows without one)."""

    group: str | int | None
    totals: Totals
    key_name: str | None = None  # grouping by key: its name and display prefix
    key_prefix: str | None = None


@dataclass(frozen=True)
class UsageReport:
    groups: list[UsageGroup]  # biggest spend first (days: in order)
    total: Totals  # every row once, whatever the grouping


def usage_report(query: UsageQuery) -> UsageReport:
    """The query's groups and its total."""
    grouped = {"day": by_day, "model": by_model, "key": by_key, "tag": by_tag, "user": by_user}[query.group_by]
    groups = grouped(query)
    total = totals_of(query)
    ordered = sorted(groups, key=lambda group: str(group.group)) if query.group_by == "day" else sorted(
        groups, key=lambda group: (-group.totals.spend, -group.totals.requests, str(group.group)))
    return UsageReport(ordered, total)


def has_tag(tag: str, tags: Field = UsageEntry.tags) -> Expression:
    """Whether a row's comma-joined `tags` carry this tag (exactly: case-sensitive, no LIKE wildcards, on SQLite and
    PostgreSQL): gateway.accounting.statements.TAG_CONDITION as a peewee expression.
    """
    framed = Value(",").concat(tags).concat(",")
    return fn.LENGTH(fn.REPLACE(framed, tag_needle(tag), "")) < fn.LENGTH(framed)


def where(query, usage: UsageQuery):
    """The rows of the query's account, range and filters."""
    query = query.where(UsageEntry.created_at >= datetime.datetime.combine(usage.start, datetime.time()))
    if usage.end < datetime.date.max:  # else no day follows it
        next_day = datetime.datetime.combine(usage.end + datetime.timedelta(days=1), datetime.time())
        query = query.where(UsageEntry.created_at < next_day)
    if usage.account_id is not None:
        query = query.where(UsageEntry.account == usage.account_id)
    if usage.model:
        query = query.where(UsageEntry.model == usage.model)
    if usage.key_id is not None:
        query = query.where(UsageEntry.api_key == usage.key_id)
    if usage.tag:
        query = query.where(UsageEntry.tags.is_null(False) & has_tag(usage.tag))
    if usage.user:
        query = query.where(UsageEntry.end_user == usage.user)
    if usage.endpoint:
        query = query.where(UsageEntry.endpoint == usage.endpoint)
    if usage.status:
        query = query.where(UsageEntry.status < 400 if usage.status == "ok" else UsageEntry.status >= 400)
    return query


SUMS = (fn.COUNT(UsageEntry.id), fn.COALESCE(fn.SUM(UsageEntry.cost), 0),
        fn.COALESCE(fn.SUM(UsageEntry.prompt_tokens), 0), fn.COALESCE(fn.SUM(UsageEntry.completion_tokens), 0))


def totals(row: Iterable) -> Totals:
    """Totals from the four SUMS columns (PostgreSQL's SUM is a Decimal)."""
    return Totals(*(int(value) for value in row))


def selected(usage: UsageQuery, *columns):
    """The SUMS (after any leading columns) of the query's rows."""
    return where(UsageEntry.select(*columns, *SUMS), usage)


def totals_of(usage: UsageQuery) -> Totals:
    """The query's rows, summed once."""
    return totals(selected(usage).tuples().get())


def grouped_by(usage: UsageQuery, column) -> list[tuple]:
    """(value, *SUMS) per distinct value of a column."""
    return list(selected(usage, column).group_by(column).tuples())


def by_day(usage: UsageQuery) -> list[UsageGroup]:
    day = fn.DATE(UsageEntry.created_at)
    return [UsageGroup(str(when)[:10], totals(rest)) for when, *rest in grouped_by(usage, day)]


def by_model(usage: UsageQuery) -> list[UsageGroup]:
    return [UsageGroup(model, totals(rest)) for model, *rest in grouped_by(usage, UsageEntry.model)]


def by_user(usage: UsageQuery) -> list[UsageGroup]:
    return [UsageGroup(user, totals(rest)) for user, *rest in grouped_by(usage, UsageEntry.end_user)]


def by_key(usage: UsageQuery) -> list[UsageGroup]:
    query = (where(UsageEntry.select(ApiKey.id, ApiKey.name, ApiKey.prefix, *SUMS)
                   .join(ApiKey, JOIN.LEFT_OUTER), usage).group_by(ApiKey.id, ApiKey.name, ApiKey.prefix))
    return [UsageGroup(key_id, totals(rest), name, prefix) for key_id, name, prefix, *rest in query.tuples()]


def by_tag(usage: UsageQuery) -> list[UsageGroup]:
    """Per tag (a row in each of its tags' groups; untagged rows under None), from the sums per tag combination."""
    per_tag: dict[str | None, Totals] = {}
    for joined, *rest in grouped_by(usage, UsageEntry.tags):
        for tag in split_tags(joined) or (None,):
            per_tag[tag] = per_tag.get(tag, Totals()) + totals(rest)
    return [UsageGroup(tag, sums) for tag, sums in per_tag.items()]
