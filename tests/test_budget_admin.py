"""Budgets set by an operator: the admin API (Flask client), the CLI and the dashboard's admin form; a key's
limit_reset; each budget's spend in its current period, counted from the ledger."""

from __future__ import annotations

import datetime
import json

import pytest

from gateway import db
from gateway.accounting import budgets
from gateway.accounting.budget_spend import SpendTally, budget_states
from gateway.accounting.keys import create_key
from gateway.cli import main
from gateway.dashboard import users
from gateway.tables import ApiKey, LedgerEntry, utcnow
from gateway.tables import Budget as BudgetRow
from tests.test_dashboard import PASSWORD, form_tokens, sign_in

ADMIN = {"Authorization": "Bearer adm"}
MICRO = 1_000_000


@pytest.fixture(autouse=True)
def admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "adm")


@pytest.fixture
def accounts(app) -> dict[str, int]:
    """Two accounts with a key each: ids of `account`, `key`, `other_account`, `other_key`."""
    with db.database.connection_context(), db.database.atomic():
        key, _ = create_key("team")
        other, _ = create_key("other")
    return {"account": key.account_id, "key": key.id, "other_account": other.account_id, "other_key": other.id}


def charge(account_id: int, key_id: int, credits: float, model: str = "test-model", tags: str | None = None,
           when: datetime.datetime | None = None) -> None:
    """A settled charge in the ledger, as the writer records one."""
    with db.database.connection_context():
        LedgerEntry.create(account=account_id, api_key=key_id, kind="charge", amount=int(credits * MICRO),
                           model=model, tags=tags, created_at=when or utcnow())


def error_of(response) -> dict:
    body = response.get_json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"])
    return body["error"]


def test_account_budget_lifecycle_through_the_admin_api(client, accounts) -> None:
    created = client.post("/admin/budgets", headers=ADMIN,
                          json={"account_id": accounts["account"], "amount": 10, "period": "daily"})
    assert created.status_code == 201
    budget = created.get_json()
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    assert budget | {"created_at": None} == {
        "id": budget["id"], "object": "budget", "account_id": accounts["account"], "key_id": None, "model": None,
        "tag": None, "period": "daily", "kind": "account", "description": "the account's daily budget of 10.0 credits",
        "amount": 10, "spent": 0, "remaining": 10, "period_start": budgets.iso_utc(today),
        "resets_at": budgets.iso_utc(today + datetime.timedelta(days=1)), "created_at": None}
    charge(accounts["account"], accounts["key"], 2.5)
    charge(accounts["account"], accounts["key"], 4, when=today - datetime.timedelta(seconds=1))  # yesterday's
    charge(accounts["other_account"], accounts["other_key"], 3)
    shown = client.get(f"/admin/budgets/{budget['id']}", headers=ADMIN).get_json()
    assert (shown["spent"], shown["remaining"]) == (2.5, 7.5)
    listed = client.get(f"/admin/budgets?account_id={accounts['account']}", headers=ADMIN).get_json()
    assert [item["id"] for item in listed["data"]] == [budget["id"]]
    assert client.get(f"/admin/budgets?account_id={accounts['other_account']}", headers=ADMIN).get_json()["data"] == []
    changed = client.patch(f"/admin/budgets/{budget['id']}", headers=ADMIN, json={"amount": 20, "period": None})
    assert changed.status_code == 200
    assert (changed.get_json()["amount"], changed.get_json()["period"], changed.get_json()["spent"]) == (20, None, 6.5)
    assert changed.get_json()["resets_at"] is None
    deleted = client.delete(f"/admin/budgets/{budget['id']}", headers=ADMIN)
    assert deleted.get_json() == {"id": budget["id"], "object": "budget", "deleted": True}
    assert client.get(f"/admin/budgets/{budget['id']}", headers=ADMIN).status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_model_and_tag_budgets_count_only_their_charges(client, accounts) -> None:
    model_budget = client.post("/admin/budgets", headers=ADMIN, json={
        "account_id": accounts["account"], "key_id": accounts["key"], "model": "backup-model", "amount": 5,
        "period": "monthly"}).get_json()
    tag_budget = client.post("/admin/budgets", headers=ADMIN, json={
        "account_id": accounts["account"], "tag": "team_a", "amount": 5, "period": "weekly"}).get_json()
    assert (model_budget["kind"], tag_budget["kind"]) == ("model", "tag")
    charge(accounts["account"], accounts["key"], 1, model="backup-model", tags="team_a,feature:x")
    charge(accounts["account"], accounts["key"], 2, model="test-model", tags="teamXa")  # `_` is no wildcard
    charge(accounts["account"], accounts["key"], 0.5, model="test-model", tags="x,team_a")
    shown = {item["id"]: item["spent"] for item in client.get("/admin/budgets", headers=ADMIN).get_json()["data"]}
    assert shown == {model_budget["id"]: 1, tag_budget["id"]: 1.5}


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"amount": 1}, 400, "account_id"),
    ({"account_id": 999, "amount": 1}, 404, "account_id"),
    ({"account_id": "A", "amount": -1}, 400, "amount"),
    ({"account_id": "A", "amount": 1, "period": "hourly"}, 400, "period"),
    ({"account_id": "A", "amount": 1, "key_id": "K"}, 400, "model"),
    ({"account_id": "A", "amount": 1, "key_id": "OTHER", "model": "test-model"}, 400, "key_id"),
    ({"account_id": "A", "amount": 1, "key_id": "K", "tag": "t", "model": "test-model"}, 400, "key_id"),
    ({"account_id": "A", "amount": 1, "model": "no-such-model"}, 400, "model"),
    ({"account_id": "A", "amount": 1, "tag": "a b"}, 400, "tag"),
    ({"account_id": "A", "amount": 1, "colour": "red"}, 400, "colour"),
])
def test_refused_budgets_answer_in_the_error_shape(client, accounts, body, status, param) -> None:
    names = {"A": accounts["account"], "K": accounts["key"], "OTHER": accounts["other_key"]}
    body = {name: names.get(value, value) if isinstance(value, str) else value for name, value in body.items()}
    response = client.post("/admin/budgets", headers=ADMIN, json=body)
    assert response.status_code == status
    assert error_of(response)["param"] == param


def test_a_second_budget_of_the_same_scope_and_period_is_a_conflict(client, accounts) -> None:
    body = {"account_id": accounts["account"], "amount": 1, "period": "daily"}
    assert client.post("/admin/budgets", headers=ADMIN, json=body).status_code == 201
    assert client.post("/admin/budgets", headers=ADMIN, json={**body, "period": "monthly"}).status_code == 201
    conflict = client.post("/admin/budgets", headers=ADMIN, json=body)
    assert conflict.status_code == 409 and error_of(conflict)["code"] == "conflict"


def test_budget_routes_need_the_admin_token_and_known_ids(client, accounts) -> None:
    assert client.get("/admin/budgets").status_code == 401
    assert client.patch("/admin/budgets/5", headers=ADMIN, json={"amount": 1}).status_code == 404
    assert client.delete("/admin/budgets/5", headers=ADMIN).status_code == 404
    assert client.get("/admin/budgets?account_id=999", headers=ADMIN).status_code == 404
    budget = client.post("/admin/budgets", headers=ADMIN, json={"account_id": accounts["account"], "amount": 1})
    assert client.patch(f"/admin/budgets/{budget.get_json()['id']}", headers=ADMIN,
                        json={"amount": None}).status_code == 400


def test_a_keys_limit_reset_is_set_changed_and_cleared(client, accounts) -> None:
    created = client.post("/admin/keys", headers=ADMIN, json={"name": "daily", "spend_limit": 5, "limit_reset": "daily"})
    assert created.status_code == 201 and created.get_json()["limit_reset"] == "daily"
    key_id = created.get_json()["id"]
    weekly = client.patch(f"/admin/keys/{key_id}", headers=ADMIN, json={"limit_reset": "weekly"}).get_json()
    assert (weekly["limit_reset"], weekly["spend_limit"]) == ("weekly", 5)
    assert client.patch(f"/admin/keys/{key_id}", headers=ADMIN, json={"limit_reset": "yearly"}).status_code == 400
    cleared = client.patch(f"/admin/keys/{key_id}", headers=ADMIN, json={"limit_reset": None}).get_json()
    assert cleared["limit_reset"] is None
    with db.database.connection_context():
        assert ApiKey.get_by_id(key_id).limit_reset is None


def test_cli_sets_lists_and_deletes_budgets(app, accounts, settings, tmp_path, capsys) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[database]\nurl = "{settings.database.url}"\n[models."test-model"]\nprovider = "fake"\n'
                      f'[providers.fake]\nbase_url = "http://127.0.0.1:9/v1"\n')
    run = ["--config", str(config)]
    assert main(["budgets", "create", *run, "--account", str(accounts["account"]), "--amount", "3", "--period",
                 "weekly", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert (created["amount"], created["period"], created["kind"]) == (3, "weekly", "account")
    assert main(["budgets", "create", *run, "--account", str(accounts["account"]), "--key", str(accounts["key"]),
                 "--model", "test-model", "--amount", "1"]) == 0
    assert "the key's lifetime budget for model 'test-model' of 1.0 credits" in capsys.readouterr().out
    assert main(["budgets", "create", *run, "--account", str(accounts["account"]), "--key",
                 str(accounts["other_key"]), "--model", "test-model", "--amount", "1"]) == 1
    assert "is not a key of account" in capsys.readouterr().err
    assert main(["budgets", "update", *run, str(created["id"]), "--amount", "4", "--period", "none"]) == 0
    assert "lifetime budget of 4.0 credits" in capsys.readouterr().out
    assert main(["budgets", "list", *run, "--account", str(accounts["account"]), "--json"]) == 0
    assert [item["amount"] for item in json.loads(capsys.readouterr().out)] == [4, 1]
    assert main(["budgets", "delete", *run, str(created["id"])]) == 0
    assert main(["budgets", "delete", *run, str(created["id"])]) == 1
    assert main(["keys", "update", *run, str(accounts["key"]), "--spend-limit", "2", "--limit-reset", "monthly",
                 "--json"]) == 0
    shown = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (shown["spend_limit"], shown["limit_reset"]) == (2, "monthly")
    assert main(["keys", "update", *run, str(accounts["key"]), "--limit-reset", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["limit_reset"] is None


def test_dashboard_admin_sets_and_deletes_a_budget(client, accounts) -> None:
    with db.database.connection_context():
        users.create_user("root@example.com", PASSWORD, None, "admin")
    sign_in(client, "root@example.com")
    page = f"/dashboard/admin/accounts/{accounts['account']}"
    form = {**form_tokens(client, page), "amount": "7", "period": "daily", "key_id": "", "model": "", "tag": "team-a"}
    response = client.post(f"{page}/budgets", data=form)
    assert response.status_code == 302
    with db.database.connection_context():
        row = BudgetRow.get()
    assert (row.amount, row.period, row.tag, row.api_key_id) == (7 * MICRO, "daily", "team-a", None)
    shown = client.get(page).get_data(as_text=True)
    assert "the tag &#39;team-a&#39;&#39;s daily budget of 7.0 credits" in shown
    refused = client.post(f"{page}/budgets", data={**form_tokens(client, page), "amount": "1", "period": "lifetime",
                                                   "key_id": str(accounts["key"]), "model": "", "tag": ""})
    assert refused.status_code == 302
    assert "needs `model`" in client.get(page).get_data(as_text=True)
    deleted = client.post(f"{page}/budgets/{row.id}/delete", data=form_tokens(client, page))
    assert deleted.status_code == 302
    with db.database.connection_context():
        assert BudgetRow.select().count() == 0
    period = client.post(f"{page}/limit_reset", data={**form_tokens(client, page), "key_id": str(accounts["key"]),
                                                     "limit_reset": "weekly"})
    assert period.status_code == 302
    foreign = client.post(f"{page}/limit_reset", data={**form_tokens(client, page),
                                                      "key_id": str(accounts["other_key"]), "limit_reset": "daily"})
    assert foreign.status_code == 302
    assert "is not a key of account" in client.get(page).get_data(as_text=True)
    with db.database.connection_context():
        assert [ApiKey.get_by_id(accounts[name]).limit_reset for name in ("key", "other_key")] == ["weekly", None]
    client.patch(f"/admin/keys/{accounts['key']}", headers=ADMIN, json={"spend_limit": 2})
    assert "2 weekly" in client.get(page).get_data(as_text=True)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_the_alerts_tally_adds_new_charges_as_a_fresh_count_would(client, accounts) -> None:
    account, key = accounts["account"], accounts["key"]
    client.post("/admin/budgets", headers=ADMIN, json={"account_id": account, "tag": "t", "amount": 5, "period": "daily"})
    client.patch(f"/admin/keys/{key}", headers=ADMIN, json={"spend_limit": 3, "limit_reset": "monthly"})
    tally, now = SpendTally(), utcnow()
    charge(account, key, 1, tags="t")
    with db.database.connection_context():
        first = {state.identity: state.spent for state in tally([account], now)}
    charge(account, key, 0.25, tags="t")
    charge(account, key, 0.5)
    charge(accounts["other_account"], accounts["other_key"], 9, tags="t")
    with db.database.connection_context():
        again = {state.identity: state.spent for state in tally([account], now)}
        fresh = {state.identity: state.spent for state in budget_states([account], now)}
        tomorrow = {state.identity: state.spent for state in tally([account], now + datetime.timedelta(days=1))}
    assert first == {f"key:{key}": 1 * MICRO, "budget:1": 1 * MICRO}
    assert again == fresh == {f"key:{key}": 1.75 * MICRO, "budget:1": 1.25 * MICRO}
    same_month = (now + datetime.timedelta(days=1)).month == now.month
    assert tomorrow == {f"key:{key}": 1.75 * MICRO if same_month else 0, "budget:1": 0}  # the day starts over
