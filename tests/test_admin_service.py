"""The admin service: a key and its credits in one transaction, operator limits as a member's ceiling,
stream limits set through the admin API and the CLI and named in the 429, `--credits 0`."""

from __future__ import annotations

import json
import re

import pytest

from gateway import db
from gateway.accounting import admin_service, credits
from gateway.accounting.admin_service import KeySpec
from gateway.dashboard import users
from gateway.errors import InvalidRequest
from gateway.tables import Account, ApiKey, CreditGrant
from tests.test_cli import config_file, run

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')
ADMIN = {"Authorization": "Bearer adm"}
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


def signed_in_member(client, account_id: int, email: str = "member@example.com") -> str:
    """Sign a new member of this account in; the CSRF token of their keys page."""
    with db.database.connection_context():
        users.create_user(email, PASSWORD, Account.get_by_id(account_id), "member")
    token = CSRF.search(client.get("/dashboard/login").get_data(as_text=True)).group(1)
    client.post("/dashboard/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
    return CSRF.search(client.get("/dashboard/keys").get_data(as_text=True)).group(1)


def post_limits(client, key_id: int, token: str, **fields: str) -> str:
    """Post the key's limits form as a member; the page it lands on."""
    data = {f"k{key_id}-{name}": fields.get(name, "") for name in ("rpm", "tpm", "spend_limit", "max_streams")}
    return client.post(f"/dashboard/keys/{key_id}/limits", data={**data, "csrf_token": token},
                       follow_redirects=True).get_data(as_text=True)


def key_limits(key_id: int) -> tuple:
    with db.database.connection_context():
        key = ApiKey.get_by_id(key_id)
    return key.rpm, key.spend_limit, key.max_streams


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_member_cannot_lift_the_limits_an_operator_set(client, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "adm")
    created = client.post("/admin/keys", json={"name": "tenant", "rpm": 2, "spend_limit": 0.5, "credits": 10},
                          headers=ADMIN).json
    key_id, account_id = created["id"], created["account_id"]
    assert created["operator_limits"] == {"rpm": 2, "spend_limit": 0.5}
    token = signed_in_member(client, account_id)

    page = post_limits(client, key_id, token, rpm="1000000000")  # and an empty spend limit
    assert "Limits not changed" in page and "may be at most 2" in page
    assert key_limits(key_id) == (2, 500_000, None)
    api = {"Authorization": f"Bearer {created['key']}"}
    statuses = [client.post("/v1/chat/completions", json=CHAT, headers=api).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # the operator's rpm 2 still holds

    post_limits(client, key_id, token, rpm="1", spend_limit="0.25")  # lowering is the member's to do
    assert key_limits(key_id) == (1, 250_000, None)
    post_limits(client, key_id, token)  # clearing returns to the operator's limits
    assert key_limits(key_id) == (2, 500_000, None)

    client.patch(f"/admin/accounts/{account_id}", json={"max_streams": 3}, headers=ADMIN)
    assert "may be at most 3" in post_limits(client, key_id, token, rpm="2", spend_limit="0.5", max_streams="5")
    post_limits(client, key_id, token, rpm="2", spend_limit="0.5", max_streams="3")
    assert key_limits(key_id) == (2, 500_000, 3)

    lifted = client.patch(f"/admin/keys/{key_id}", json={"rpm": None}, headers=ADMIN).json
    assert lifted["operator_limits"] == {"spend_limit": 0.5} and lifted["rpm"] is None
    post_limits(client, key_id, token, rpm="100", spend_limit="0.5")
    assert key_limits(key_id)[0] == 100


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_key_and_its_credits_are_one_transaction(app):
    with db.database.connection_context():
        before = (Account.select().count(), ApiKey.select().count())
        with pytest.raises(InvalidRequest, match="positive"):
            admin_service.create_key(KeySpec("overdrawn", credits=-1), by_operator=True)
        assert (Account.select().count(), ApiKey.select().count()) == before
        key, _ = admin_service.create_key(KeySpec("funded", credits=credits.to_micro(3)), by_operator=True)
        assert credits.balance_of(key.account_id) == credits.to_micro(3)
        listed = admin_service.list_keys()
        assert listed[0].id == key.id and listed[0].account.name == "funded"


def test_keys_create_with_zero_credits_makes_a_key_without_a_grant(tmp_path, capsys):
    config = config_file(tmp_path)
    code, out = run(capsys, "keys", "create", "--name", "free", "--credits", "0", "--max-streams", "4",
                    "--json", "--config", config)
    assert code == 0
    created = json.loads(out)
    assert created["max_streams"] == 4 and created["operator_limits"] == {"max_streams": 4}
    _, out = run(capsys, "keys", "update", str(created["id"]), "--max-streams", "6", "--json", "--config", config)
    assert json.loads(out)["max_streams"] == 6
    db.bind(f"sqlite:///{tmp_path / 'cli.db'}")
    with db.database.connection_context():
        assert CreditGrant.select().where(CreditGrant.account == created["account_id"]).count() == 0


def test_a_key_past_its_stream_limit_is_told_which_and_how_to_raise_it(client, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "adm")
    created = client.post("/admin/keys", json={"name": "streamer", "max_streams": 1}, headers=ADMIN).json
    api = {"Authorization": f"Bearer {created['key']}"}
    held = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=api)
    refused = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=api)
    assert held.status_code == 200 and refused.status_code == 429
    error = refused.json["error"]
    assert error["code"] == "too_many_streams" and error["type"] == "rate_limit_error"
    assert f"gateway keys update {created['id']} --max-streams N" in error["message"]
    assert f"PATCH /admin/keys/{created['id']}" in error["message"]
    limit = client.get("/api/v1/key", headers=api).json["data"]["stream_limit"]
    assert limit["streams"] == 1 and limit["account_streams"] is None and limit["tenant_share"] == 0.75
    held.close()
    assert client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=api).status_code == 200


def test_an_admin_sets_an_accounts_stream_limit_on_the_dashboard(client, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "adm")
    first = client.post("/admin/keys", json={"name": "first"}, headers=ADMIN).json
    second = client.post("/admin/keys", json={"name": "second", "account_id": first["account_id"]},
                         headers=ADMIN).json
    with db.database.connection_context():
        users.create_user("root@example.com", PASSWORD, None, "admin")
    token = CSRF.search(client.get("/dashboard/login").get_data(as_text=True)).group(1)
    client.post("/dashboard/login", data={"email": "root@example.com", "password": PASSWORD, "csrf_token": token})
    page = f"/dashboard/admin/accounts/{first['account_id']}"
    token = CSRF.search(client.get(page).get_data(as_text=True)).group(1)
    client.post(f"{page}/tier", data={"tier": "free", "max_streams": "1", "csrf_token": token})
    assert client.get(f"/admin/accounts/{first['account_id']}", headers=ADMIN).json["max_streams"] == 1

    held = client.post("/v1/chat/completions", json={**CHAT, "stream": True},
                       headers={"Authorization": f"Bearer {first['key']}"})
    refused = client.post("/v1/chat/completions", json={**CHAT, "stream": True},
                          headers={"Authorization": f"Bearer {second['key']}"})
    assert held.status_code == 200 and refused.status_code == 429
    assert f"PATCH /admin/accounts/{first['account_id']}" in refused.json["error"]["message"]
    held.close()


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_an_accounts_key_limits_bound_every_key_a_member_has_or_makes(client, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "adm")
    created = client.post("/admin/keys", json={"name": "tenant"}, headers=ADMIN).json
    account_id = created["account_id"]
    patched = client.patch(f"/admin/accounts/{account_id}", json={"key_limits": {"rpm": 2, "spend_limit": 0.5}},
                           headers=ADMIN).json
    assert patched["key_limits"] == {"rpm": 2, "spend_limit": 0.5}
    assert key_limits(created["id"]) == (2, 500_000, None)  # an existing key is held under them at once
    token = signed_in_member(client, account_id)

    page = client.get("/dashboard/keys").get_data(as_text=True)
    form_token = FORM_TOKEN.search(page).group(1) if FORM_TOKEN.search(page) else ""
    refused = client.post("/dashboard/keys", data={"name": "greedy", "rpm": "1000000000", "csrf_token": token,
                                                   "form_token": form_token})
    assert refused.status_code == 400 and "may be at most 2" in refused.get_data(as_text=True)
    page = client.get("/dashboard/keys").get_data(as_text=True)
    form_token = FORM_TOKEN.search(page).group(1) if FORM_TOKEN.search(page) else ""
    client.post("/dashboard/keys", data={"name": "modest", "csrf_token": token, "form_token": form_token})
    with db.database.connection_context():
        made = ApiKey.get(ApiKey.name == "modest")
        assert not ApiKey.select().where(ApiKey.name == "greedy").exists()
    assert key_limits(made.id) == (2, 500_000, None)  # a member's new key starts at the account's ceilings
    assert "may be at most 2" in post_limits(client, made.id, token, rpm="3", spend_limit="0.5")
    post_limits(client, made.id, token, rpm="1")
    assert key_limits(made.id) == (1, 500_000, None)
