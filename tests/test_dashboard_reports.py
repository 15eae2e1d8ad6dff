"""What the usage pages read (per day, per model, filters, paging, last use) and the SVG charts drawn from it."""

from __future__ import annotations

import datetime
import re

import pytest

from gateway import db
from gateway.accounting.keys import create_key
from gateway.dashboard import charts, reports
from gateway.dashboard.formatting import number
from gateway.tables import UsageEntry

NOW = datetime.datetime(2026, 3, 31, 12, 0)


@pytest.fixture
def two_accounts(app):
    """Two keys of two accounts, and usage rows: (days ago, model, status, cost) for the first."""
    with db.database.connection_context():
        mine, _ = create_key("mine")
        theirs, _ = create_key("theirs")
        rows = [(0, "a", 200, 10), (0, "b", 200, 5), (0, "a", 500, 0), (2, "a", 200, 7), (29, "b", 200, 1),
                (30, "a", 200, 1000)]  # 30 days ago: outside the chart's 30 days
        for days_ago, model, status, cost in rows:
            record(mine, model, status, cost, NOW - datetime.timedelta(days=days_ago))
        record(theirs, "a", 200, 999, NOW)
        yield mine, theirs


def record(key, model: str, status: int, cost: int, when: datetime.datetime) -> UsageEntry:
    return UsageEntry.create(request_id=f"r-{model}-{when:%j}", api_key=key.id, account=key.account_id,
                             endpoint="chat/completions", model=model, prompt_tokens=3, completion_tokens=2,
                             status=status, latency_ms=40, cost=cost, created_at=when)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_per_day_and_per_model_cover_30_days_of_one_account(two_accounts):
    mine, _ = two_accounts
    with db.database.connection_context():
        days = reports.per_day(reports.UsageFilter(mine.account_id), NOW)
        models = reports.per_model(reports.UsageFilter(mine.account_id), NOW)
        only_a = reports.per_day(reports.UsageFilter(mine.account_id, model="a"), NOW)
        everyone = reports.per_model(reports.UsageFilter(None), NOW)
    assert len(days) == 30 and days[0].day == datetime.date(2026, 3, 2) and days[-1].day == NOW.date()
    assert [(d.day.day, d.requests, d.cost) for d in days if d.requests] == [(2, 1, 1), (29, 1, 7), (31, 3, 15)]
    assert [(m.model, m.requests, m.cost) for m in models] == [("a", 3, 17), ("b", 2, 6)]
    assert sum(d.cost for d in only_a) == 17
    assert [(m.model, m.cost) for m in everyone] == [("a", 1016), ("b", 6)]


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_recent_requests_filter_and_page(two_accounts, monkeypatch):
    mine, theirs = two_accounts
    monkeypatch.setattr(reports, "PAGE_SIZE", 2)
    with db.database.connection_context():
        first, more = reports.recent_requests(reports.UsageFilter(mine.account_id))
        last, no_more = reports.recent_requests(reports.UsageFilter(mine.account_id, page=3))
        failed, _ = reports.recent_requests(reports.UsageFilter(mine.account_id, status="error"))
        their_key_for_me, _ = reports.recent_requests(reports.UsageFilter(mine.account_id, key_id=theirs.id))
        used = reports.last_used([mine.id, theirs.id])
        choices = reports.filter_choices(mine.account_id, NOW)
    assert more and not no_more and len(first) == 2 and [row.cost for row in last] == [1, 1000]  # oldest last
    assert first[0].api_key.prefix == mine.prefix and first[0].account.name == "mine"
    assert [row.status for row in failed] == [500]
    assert their_key_for_me == []
    assert used == {mine.id: NOW, theirs.id: NOW}
    assert choices == {"models": ["a", "b"], "endpoints": ["chat/completions"]}


def test_filter_from_query_string_drops_nonsense():
    parsed = reports.UsageFilter.from_args({"model": "m", "key": "x", "status": "weird", "page": "0",
                                            "account": "5"}, account_id=7)
    assert parsed == reports.UsageFilter(account_id=7, model="m")  # a member cannot pick another account
    admin = reports.UsageFilter.from_args({"account": "5", "page": "3"}, account_id=None)
    assert admin == reports.UsageFilter(account_id=5, page=3)
    assert admin.query_args(True, page=4) == {"account": 5, "page": 4}
    assert admin.query_args(False, page=1) == {}


def test_column_chart_heights_are_proportional_and_labels_escaped():
    svg = charts.column_chart("Spend <per> day", [charts.Bar("d1", 2, "2"), charts.Bar("<d2>", 4, "4"),
                                                  charts.Bar("d3", 0, "0")], ("d1", "d3"))
    heights = [float(h) for h in re.findall(r'class="bar" x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"', svg)]
    assert heights == [charts.BAR_AREA_HEIGHT / 2, charts.BAR_AREA_HEIGHT, 0]
    assert "<d2>" not in svg and "&lt;d2&gt;: 4" in svg and 'aria-label="Spend &lt;per&gt; day"' in svg
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "max 4" in svg


def test_bar_list_rows_and_empty_state():
    svg = charts.bar_list("Per model", [charts.Bar("a-very-long-model-name/of-some-provider", 3, "3"),
                                        charts.Bar("b", 1, "1")])
    assert svg.count('class="bar"') == 2 and "a-very-long-mod…" in svg
    assert "No requests in this period." in charts.bar_list("Per model", [])


@pytest.mark.parametrize("value,shown", [(0, "0"), (1234567.5, "1,234,567.5"), (0.025, "0.025"), (600, "600"),
                                         (-0.0000001, "0")])
def test_number(value, shown):
    assert number(value) == shown

