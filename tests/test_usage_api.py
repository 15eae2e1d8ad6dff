"""GET /api/v1/usage and GET /admin/usage: spend, requests and tokens grouped by day, model, key, tag and user over
real traffic (two accounts, two keys, tags, end users, a refusal, a row moved to yesterday); every grouping adds up
to the ledger's charges, filters are exact, CSV parses, and the admin route needs the admin token."""

from __future__ import annotations

import csv
import datetime
import io

import pytest

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.accounting.operations import Settlement
from gateway.accounting.writer import writer
from gateway.tables import LedgerEntry, UsageEntry, utcnow

PAID = {"provider": "fake", "upstream_model": "upstream-model", "input_price_per_mtok": 2.5,
        "output_price_per_mtok": 10, "max_output_tokens": 100}
CHEAP = {**PAID, "input_price_per_mtok": 1, "output_price_per_mtok": 3}
HI = [{"role": "user", "content": "hi"}]
ADMIN_TOKEN = "admin-secret-for-usage"
TODAY = utcnow().date()
YESTERDAY = TODAY - datetime.timedelta(days=1)

both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def settings(make_settings):
    return make_settings(models={"paid-model": PAID, "cheap-model": CHEAP})


@pytest.fixture
def traffic(client, monkeypatch):
    """Requests of two accounts (A: keys k1 and k2; B: one key); returns the secrets and A's id."""
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    with db.database.connection_context(), db.database.atomic():
        k1, a1 = create_key("k1")
        k2, a2 = create_key("k2", account=k1.account)
        k3, b = create_key("b")
        credits.grant_credits(k1.account_id, credits.to_micro(100))
        credits.grant_credits(k3.account_id, credits.to_micro(100))

    def chat(secret: str, model: str, tags: str | None = None, user: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {secret}"} | ({"X-Gateway-Tags": tags} if tags else {})
        body = {"model": model, "messages": HI} | ({"user": user} if user else {})
        client.post("/v1/chat/completions", json=body, headers=headers).get_data()

    chat(a1, "paid-model", "team:core", "alice")
    chat(a1, "paid-model", "team:core", "alice")
    chat(a1, "paid-model", "team:core,feat:x", "bob")
    chat(a1, "paid-model", "aXb", "=cmd()")
    chat(a2, "cheap-model", None, "alice")
    chat(a1, "no-such-model", "team:core")  # a refusal: a row that costs nothing
    client.post("/v1/messages", json={"model": "paid-model", "max_tokens": 20, "messages": HI},
                headers={"x-api-key": a2}).get_data()
    chat(b, "paid-model", "team:core", "alice")
    writer(client.application).call(Settlement(1, None, None, 0, "barrier"))
    with db.database.connection_context():  # one of A's requests happened yesterday
        moved = UsageEntry.select().where(UsageEntry.account == k1.account_id, UsageEntry.end_user == "bob").get()
        when = moved.created_at - datetime.timedelta(days=1)
        UsageEntry.update(created_at=when).where(UsageEntry.id == moved.id).execute()
        LedgerEntry.update(created_at=when).where(LedgerEntry.request_id == moved.request_id).execute()
    return {"k1": a1, "k2": a2, "b": b, "account": k1.account_id, "k1_id": k1.id, "k2_id": k2.id}


def rows_of(account_id: int | None, since: datetime.date = YESTERDAY) -> list[UsageEntry]:
    with db.database.connection_context():
        query = UsageEntry.select().where(UsageEntry.created_at >= datetime.datetime.combine(since, datetime.time()))
        return list(query.where(UsageEntry.account == account_id) if account_id else query)


def ledger_charges(account_id: int | None, since: datetime.date = YESTERDAY) -> int:
    with db.database.connection_context():
        query = LedgerEntry.select().where(LedgerEntry.kind == "charge", LedgerEntry.created_at >= datetime.datetime
                                           .combine(since, datetime.time()))
        return sum(entry.amount for entry in (query.where(LedgerEntry.account == account_id) if account_id else query))


def usage(client, secret: str, **args) -> dict:
    answer = client.get("/api/v1/usage", query_string={"from": YESTERDAY.isoformat(), **args},
                        headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.json


def micro_sum(groups: list[dict]) -> int:
    return sum(credits.to_micro(group["spend"]) for group in groups)


@both_databases
@pytest.mark.parametrize("group_by", ["day", "model", "key", "user"])
def test_groups_add_up_to_the_ledger(client, traffic, group_by):
    report = usage(client, traffic["k1"], group_by=group_by)
    rows = rows_of(traffic["account"])
    charged = ledger_charges(traffic["account"])
    assert charged > 0 and micro_sum(report["data"]) == charged == credits.to_micro(report["total"]["spend"])
    assert sum(group["requests"] for group in report["data"]) == len(rows) == report["total"]["requests"] == 7
    assert sum(group["input_tokens"] for group in report["data"]) == sum(row.prompt_tokens for row in rows)
    assert sum(group["output_tokens"] for group in report["data"]) == sum(row.completion_tokens for row in rows)
    assert report["group_by"] == group_by and report["account_id"] == traffic["account"]


@both_databases
def test_each_group_holds_its_own_rows(client, traffic):
    rows = rows_of(traffic["account"])

    def expected(keep) -> tuple[int, int]:
        kept = [row for row in rows if keep(row)]
        return len(kept), sum(row.cost for row in kept)

    def shown(report, name) -> dict:
        return {group[name]: (group["requests"], credits.to_micro(group["spend"])) for group in report["data"]}

    assert shown(usage(client, traffic["k1"], group_by="day"), "day") == {
        YESTERDAY.isoformat(): expected(lambda row: row.created_at.date() == YESTERDAY),
        TODAY.isoformat(): expected(lambda row: row.created_at.date() == TODAY)}
    assert shown(usage(client, traffic["k1"], group_by="model"), "model") == {
        model: expected(lambda row, model=model: row.model == model)
        for model in ("paid-model", "cheap-model", "no-such-model")}
    assert shown(usage(client, traffic["k1"], group_by="user"), "user") == {
        user: expected(lambda row, user=user: row.end_user == user) for user in ("alice", "bob", "=cmd()", None)}
    keys = usage(client, traffic["k1"], group_by="key")["data"]
    assert {group["key"]: group["key_name"] for group in keys} == {traffic["k1_id"]: "k1", traffic["k2_id"]: "k2"}


@both_databases
def test_tag_groups_count_a_row_in_each_of_its_tags(client, traffic):
    report = usage(client, traffic["k1"], group_by="tag")
    rows = rows_of(traffic["account"])
    by_tag = {group["tag"]: (group["requests"], credits.to_micro(group["spend"])) for group in report["data"]}

    def tagged(tag) -> tuple[int, int]:
        kept = [row for row in rows if (tag in row.tags.split(",") if row.tags else tag is None)]
        return len(kept), sum(row.cost for row in kept)

    assert by_tag == {tag: tagged(tag) for tag in ("team:core", "feat:x", "aXb", None)}
    assert by_tag["team:core"][0] == 4 and by_tag["feat:x"][0] == 1  # the refusal is tagged too
    assert credits.to_micro(report["total"]["spend"]) == ledger_charges(traffic["account"])


@both_databases
def test_filters_are_exact(client, traffic):
    rows = rows_of(traffic["account"])

    def total(**args) -> tuple[int, int]:
        report = usage(client, traffic["k1"], **args)["total"]
        return report["requests"], credits.to_micro(report["spend"])

    def expected(keep) -> tuple[int, int]:
        kept = [row for row in rows if keep(row)]
        return len(kept), sum(row.cost for row in kept)

    assert total(tag="team:core") == expected(lambda row: row.tags and "team:core" in row.tags.split(","))
    assert total(tag="feat:x") == (1, expected(lambda row: row.end_user == "bob")[1])
    assert total(tag="team:cor") == total(tag="TEAM:core") == total(tag="a_b") == total(tag="core") == (0, 0)
    assert total(user="alice") == expected(lambda row: row.end_user == "alice")
    assert total(model="cheap-model") == expected(lambda row: row.model == "cheap-model")
    assert total(key=traffic["k2_id"]) == expected(lambda row: row.api_key_id == traffic["k2_id"])
    assert total(to=YESTERDAY.isoformat()) == expected(lambda row: row.created_at.date() == YESTERDAY)
    assert total(**{"from": TODAY.isoformat()}) == expected(lambda row: row.created_at.date() == TODAY)
    assert total(to="9999-12-31") == total()  # the last day there is
    assert usage(client, traffic["k1"], **{"from": "", "to": "0001-01-02"})["from"] == "0001-01-01"


def test_another_accounts_key_filter_shows_nothing(client, traffic):
    assert usage(client, traffic["b"], key=traffic["k1_id"])["total"]["requests"] == 0
    assert usage(client, traffic["b"])["total"]["requests"] == 1  # its own request only


@both_databases
@pytest.mark.parametrize("group_by", ["day", "key", "tag", "user"])
def test_csv_parses_and_adds_up(client, traffic, group_by):
    answer = client.get("/api/v1/usage", query_string={"from": YESTERDAY.isoformat(), "group_by": group_by,
                                                       "format": "csv"},
                        headers={"Authorization": f"Bearer {traffic['k1']}"})
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    assert "attachment" in answer.headers["Content-Disposition"]
    lines = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert lines and set(lines[0]) >= {group_by, "requests", "spend", "input_tokens", "output_tokens"}
    if group_by != "tag":
        assert sum(credits.to_micro(line["spend"]) for line in lines) == ledger_charges(traffic["account"])
        assert sum(int(line["requests"]) for line in lines) == 7
    if group_by == "user":  # a spreadsheet would run a cell that starts with =
        assert {line["user"] for line in lines} == {"alice", "bob", "'=cmd()", ""}


def test_admin_route_needs_the_admin_token(client, traffic):
    def admin(token: str | None, **args):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return client.get("/admin/usage", query_string={"from": YESTERDAY.isoformat(), **args}, headers=headers)

    assert admin(None).status_code == 401
    assert admin(traffic["k1"]).status_code == 401  # an API key is not the admin token
    everyone = admin(ADMIN_TOKEN).json
    assert everyone["account_id"] is None and everyone["total"]["requests"] == len(rows_of(None)) == 8
    assert credits.to_micro(everyone["total"]["spend"]) == ledger_charges(None)
    one = admin(ADMIN_TOKEN, account=traffic["account"], group_by="tag").json
    assert one == usage(client, traffic["k1"], group_by="tag")
    assert admin(ADMIN_TOKEN, format="csv").mimetype == "text/csv"


def test_admin_route_is_off_without_a_token_configured(client, traffic, monkeypatch):
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN")
    assert client.get("/admin/usage", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 404


@pytest.mark.parametrize(("args", "param"), [
    ({"group_by": "week"}, "group_by"),
    ({"format": "xml"}, "format"),
    ({"from": "yesterday"}, "from"),
    ({"from": TODAY.isoformat(), "to": YESTERDAY.isoformat()}, "from"),
    ({"key": "0"}, "key"),
])
def test_bad_queries_are_a_400_naming_the_parameter(client, api_key, args, param):
    answer = client.get("/api/v1/usage", query_string=args, headers={"Authorization": f"Bearer {api_key}"})
    assert answer.status_code == 400 and answer.json["error"]["param"] == param
    assert answer.json["error"]["code"] == 400  # /api/v1 answers OpenRouter's error shape


def test_needs_a_key(client):
    assert client.get("/api/v1/usage").status_code == 401


def test_defaults_to_the_last_30_days_by_day(client, api_key):
    report = client.get("/api/v1/usage", headers={"Authorization": f"Bearer {api_key}"}).json
    assert (report["from"], report["to"], report["group_by"]) == (
        (TODAY - datetime.timedelta(days=29)).isoformat(), TODAY.isoformat(), "day")
    assert report["data"] == [] and report["total"] == {"requests": 0, "spend": 0.0, "input_tokens": 0,
                                                        "output_tokens": 0}


def test_dashboard_usage_page_groups_and_filters(app, traffic):
    from gateway.dashboard import users
    from tests.test_dashboard import PASSWORD, sign_in

    with db.database.connection_context():
        users.create_user("member@example.com", PASSWORD, UsageEntry.select().where(
            UsageEntry.account == traffic["account"]).get().account, "member")
    browser = app.test_client()
    assert sign_in(browser, "member@example.com").status_code in (302, 303)
    page = browser.get("/dashboard/usage", query_string={"group_by": "tag", "user": "alice"}).get_data(as_text=True)
    grouped = page[page.index('<table id="grouped"'):page.index("</table>", page.index('<table id="grouped"'))]
    alice = [row for row in rows_of(traffic["account"]) if row.end_user == "alice"]
    assert "team:core" in grouped and "feat:x" not in grouped  # bob's tag: filtered out
    assert f'<td class="num">{sum(1 for row in alice if row.tags)}</td>' in grouped
    assert 'value="alice"' in page and '<option selected>tag</option>' in page
    listed = browser.get("/dashboard/usage", query_string={"tag": "feat:x"}).get_data(as_text=True)
    assert listed.count("<tr data-request-id=") == 1 and "team:core, feat:x" in listed and "bob" in listed
    assert 'id="grouped"' not in listed  # no grouping asked
