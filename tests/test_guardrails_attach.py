"""Guardrails attached to keys and accounts (admin API, CLI, dashboard), the cached caller that carries them,
which guardrails apply to a request (GET /admin/guardrails) and `gateway config show`'s list of them."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from gateway import create_app, db
from gateway.accounting import keys
from gateway.accounting.keycache import KeyCache
from gateway.cli import main
from gateway.config import load_settings
from gateway.dashboard import users
from gateway.tables import Account, ApiKey
from tests.fake_upstream import JsonReply, chat_completion

ADMIN = {"Authorization": "Bearer adm"}
SECRET = "sk-proj-Q2x9Lm4TzR7vN8bK1cY5hW3jD6fG0sPa"
both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
INJECTION = {"name": "injection", "pattern": "(?i)ignore (all )?previous instructions"}
GUARDRAILS = {  # declared in this order: the order they run in
    "pii": {"type": "pii", "action": "redact", "default": True},
    "secrets": {"type": "pii", "stages": ["output"], "detectors": ["secret"]},
    "injection": {"type": "regex", "stages": ["tool_output"], "patterns": [INJECTION]},
    "size": {"type": "max_size", "max_chars": 100_000},
    "shout": {"type": "regex", "action": "log", "patterns": [{"name": "caps", "pattern": "[A-Z]{40}"}]},
}


@pytest.fixture
def settings(make_settings):
    return make_settings(
        guardrails=GUARDRAILS,
        models={"test-model": {"provider": "fake", "upstream_model": "upstream-model", "guardrails": ["injection"]}},
        profiles={"acme/default": {"guardrails": ["size"]}},
    )


@pytest.fixture
def admin(monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "adm")
    return ADMIN


def stored(key_id: int) -> tuple[str | None, str | None]:
    """A key's and its account's `guardrails` columns as stored."""
    with db.database.connection_context():
        key = ApiKey.get_by_id(key_id)
        return key.guardrails, Account.get_by_id(key.account_id).guardrails


# --- the admin API ---------------------------------------------------------------------------------


@both_databases
def test_the_admin_api_sets_and_clears_a_keys_guardrails(client, admin):
    created = client.post("/admin/keys", json={"name": "k", "guardrails": ["shout", "secrets", "shout"]},
                          headers=admin)
    assert created.status_code == 201 and created.json["guardrails"] == ["shout", "secrets"]
    key_id = created.json["id"]
    assert stored(key_id) == ('["shout", "secrets"]', None)
    assert [key["guardrails"] for key in client.get("/admin/keys", headers=admin).json["data"]] == [["shout", "secrets"]]

    changed = client.patch(f"/admin/keys/{key_id}", json={"guardrails": ["size"], "rpm": 5}, headers=admin)
    assert changed.status_code == 200 and changed.json["guardrails"] == ["size"] and changed.json["rpm"] == 5
    for cleared in ([], None):
        client.patch(f"/admin/keys/{key_id}", json={"guardrails": ["size"]}, headers=admin)
        answer = client.patch(f"/admin/keys/{key_id}", json={"guardrails": cleared}, headers=admin)
        assert answer.status_code == 200 and answer.json["guardrails"] == []
        assert stored(key_id) == (None, None)
    untouched = client.patch(f"/admin/keys/{key_id}", json={"tpm": 50}, headers=admin)
    assert untouched.json["guardrails"] == [] and untouched.json["tpm"] == 50


@both_databases
def test_an_unknown_guardrail_is_a_400_naming_it_and_changes_nothing(client, admin):
    refused = client.post("/admin/keys", json={"name": "k", "guardrails": ["pii", "nosuch"]}, headers=admin)
    assert refused.status_code == 400
    assert refused.json["error"]["param"] == "guardrails" and "'nosuch'" in refused.json["error"]["message"]
    with db.database.connection_context():
        assert ApiKey.select().count() == 0  # checked before the key was made
    created = client.post("/admin/keys", json={"name": "k", "guardrails": ["pii"]}, headers=admin).json
    for path in (f"/admin/keys/{created['id']}", f"/admin/accounts/{created['account_id']}"):
        answer = client.patch(path, json={"guardrails": ["secrets", "typo"], "rpm" if "keys" in path else "tier":
                                          7 if "keys" in path else "premium"}, headers=admin)
        assert answer.status_code == 400 and "'typo'" in answer.json["error"]["message"], path
        assert answer.json["error"]["param"] == "guardrails"
    assert stored(created["id"]) == ('["pii"]', None)
    listed = client.get("/admin/keys", headers=admin).json["data"]
    assert listed[0]["rpm"] is None
    assert client.get(f"/admin/accounts/{created['account_id']}", headers=admin).json["tier"] == "free"
    assert client.patch(f"/admin/keys/{created['id']}", json={"guardrails": "pii"}, headers=admin).status_code == 400


@both_databases
def test_the_admin_api_sets_and_clears_an_accounts_guardrails(client, admin):
    created = client.post("/admin/keys", json={"name": "k"}, headers=admin).json
    account_id = created["account_id"]
    assert created["guardrails"] == []
    assert client.get(f"/admin/accounts/{account_id}", headers=admin).json["guardrails"] == []
    changed = client.patch(f"/admin/accounts/{account_id}", json={"guardrails": ["secrets"], "tier": "premium"},
                           headers=admin)
    assert changed.status_code == 200 and changed.json["guardrails"] == ["secrets"] and changed.json["tier"] == "premium"
    assert stored(created["id"]) == (None, '["secrets"]')
    assert client.get(f"/admin/accounts/{account_id}", headers=admin).json["guardrails"] == ["secrets"]
    cleared = client.patch(f"/admin/accounts/{account_id}", json={"guardrails": None}, headers=admin)
    assert cleared.json["guardrails"] == [] and stored(created["id"]) == (None, None)


# --- the cached caller -----------------------------------------------------------------------------


def caller_of(app, secret: str) -> keys.Caller:
    """The caller this app's key cache answers for the secret (as a request would be authenticated)."""
    with app.test_request_context(headers={"Authorization": f"Bearer {secret}"}), db.database.connection_context():
        return keys.cached_caller(secret)


@both_databases
def test_the_cached_caller_carries_the_names_and_a_change_reaches_every_worker(app, client, admin, settings):
    created = client.post("/admin/keys", json={"name": "k", "guardrails": ["shout"]}, headers=admin).json
    secret, key_id, account_id = created["key"], created["id"], created["account_id"]
    other = create_app(settings)  # another worker: its own key cache, the same database
    now = [0.0]
    other.extensions[keys.CACHE] = KeyCache(60, clock=lambda: now[0])
    try:
        for worker in (app, other):
            caller = caller_of(worker, secret)
            assert (caller.key_guardrails, caller.account_guardrails) == (("shout",), ())
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code == 200

        client.patch(f"/admin/keys/{key_id}", json={"guardrails": ["secrets", "pii"]}, headers=admin)
        client.patch(f"/admin/accounts/{account_id}", json={"guardrails": ["size"]}, headers=admin)
        here = caller_of(app, secret)  # the worker that made the change forgot the key at once
        assert (here.key_guardrails, here.account_guardrails) == (("secrets", "pii"), ("size",))
        stale = caller_of(other, secret)  # another worker: within its cache's lifetime, as for any key change
        assert (stale.key_guardrails, stale.account_guardrails) == (("shout",), ())
        now[0] += 61
        fresh = caller_of(other, secret)
        assert (fresh.key_guardrails, fresh.account_guardrails) == (("secrets", "pii"), ("size",))
    finally:
        from gateway import lifecycle

        lifecycle.close(other)


@both_databases
def test_a_keys_and_an_accounts_guardrails_apply_to_its_requests_once_set(client, admin, fake_upstream):
    fake_upstream.responder = lambda path, body: JsonReply(chat_completion(f"the key is {SECRET}"))
    created = client.post("/admin/keys", json={"name": "k"}, headers=admin).json
    headers = {"Authorization": f"Bearer {created['key']}"}
    chat = {"model": "backup-model", "messages": [{"role": "user", "content": "hi"}]}
    assert SECRET in client.post("/v1/chat/completions", json=chat, headers=headers).json["choices"][0]["message"][
        "content"]
    for path in (f"/admin/keys/{created['id']}", f"/admin/accounts/{created['account_id']}"):
        client.patch(path, json={"guardrails": ["secrets"]}, headers=admin)
        blocked = client.post("/v1/chat/completions", json=chat, headers=headers)
        assert blocked.status_code == 400 and blocked.json["error"]["code"] == "content_policy_violation", path
        assert blocked.json["error"]["message"] == "Blocked by guardrail 'secrets' (output)."
        client.patch(path, json={"guardrails": []}, headers=admin)
        assert client.post("/v1/chat/completions", json=chat, headers=headers).status_code == 200


# --- which guardrails apply ------------------------------------------------------------------------


@both_databases
def test_the_applies_endpoint_lists_them_in_order_with_their_sources(client, admin):
    created = client.post("/admin/keys", json={"name": "k", "guardrails": ["shout", "secrets"]}, headers=admin).json
    client.patch(f"/admin/accounts/{created['account_id']}", json={"guardrails": ["secrets"]}, headers=admin)
    answer = client.get(f"/admin/guardrails?model=test-model&key_id={created['id']}&profile=acme/default",
                        headers=admin)
    assert answer.status_code == 200 and answer.json["object"] == "list"
    assert [(row["name"], row["sources"]) for row in answer.json["data"]] == [
        ("pii", ["default"]), ("secrets", ["account", "key"]), ("injection", ["model"]), ("size", ["profile"]),
        ("shout", ["key"])]
    first = answer.json["data"][0]
    assert (first["type"], first["stages"], first["action"]) == ("pii", ["input"], "redact")

    alone = client.get("/admin/guardrails", headers=admin).json["data"]
    assert [(row["name"], row["sources"]) for row in alone] == [("pii", ["default"])]
    model_only = client.get("/admin/guardrails?model=backup-model&profile=", headers=admin).json["data"]
    assert [row["name"] for row in model_only] == ["pii"]


def test_the_applies_endpoint_refuses_what_the_config_lacks(client, admin):
    for query, status, param in (("model=nosuch", 404, "model"), ("profile=acme/other", 404, "profile"),
                                 ("key_id=999", 404, "id"), ("key_id=x", 400, "key_id"), ("key_id=0", 400, "key_id")):
        answer = client.get(f"/admin/guardrails?{query}", headers=admin)
        assert (answer.status_code, answer.json["error"]["param"]) == (status, param), query
    assert client.get("/admin/guardrails").status_code == 401


def test_without_guardrails_the_applies_endpoint_answers_an_empty_list(make_settings, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "adm")
    application = create_app(make_settings())
    db.upgrade()
    try:
        answer = application.test_client().get("/admin/guardrails?model=test-model", headers=ADMIN)
        assert answer.status_code == 200 and answer.json["data"] == []
    finally:
        from gateway import lifecycle

        lifecycle.close(application)


# --- the CLI ---------------------------------------------------------------------------------------


def config_file(tmp_path, database_url: str) -> str:
    """A config with the guardrails above, on the test's database."""
    path = tmp_path / "config.toml"
    tables = "".join(f"[guardrails.{name}]\n" + "".join(f"{field} = {json.dumps(value)}\n" for field, value in spec.items()
                                                         if field != "patterns")
                     + "".join(f'patterns = [{{name = "{p["name"]}", pattern = {json.dumps(p["pattern"])}}}]\n'
                               for p in spec.get("patterns", []))
                     for name, spec in GUARDRAILS.items())
    path.write_text(
        f'[database]\nurl = "{database_url}"\n[providers.p]\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[models.m]\nprovider = "p"\nguardrails = ["injection"]\n'
        '[profiles."acme/default"]\nguardrails = ["size"]\n' + tables
    )
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@both_databases
def test_the_cli_creates_and_changes_a_keys_guardrails(tmp_path, capsys, database_url):
    config = config_file(tmp_path, database_url)
    code, out, _ = run(capsys, "keys", "create", "--name", "k", "--guardrail", "shout", "--guardrail", "pii",
                       "--json", "--config", config)
    assert code == 0
    created = json.loads(out)
    assert created["guardrails"] == ["shout", "pii"]

    code, out, _ = run(capsys, "keys", "update", str(created["id"]), "--guardrail", "size", "--config", config)
    assert code == 0 and "guardrails ['size']" in out
    code, out, _ = run(capsys, "keys", "update", str(created["id"]), "--rpm", "9", "--json", "--config", config)
    assert json.loads(out)["guardrails"] == ["size"]  # untouched by other changes
    code, out, _ = run(capsys, "keys", "update", str(created["id"]), "--no-guardrails", "--json", "--config", config)
    assert code == 0 and json.loads(out)["guardrails"] == []

    code, _, err = run(capsys, "keys", "create", "--name", "x", "--guardrail", "nosuch", "--config", config)
    assert code == 1 and "'nosuch'" in err
    code, _, err = run(capsys, "keys", "update", str(created["id"]), "--guardrail", "typo", "--rpm", "3",
                       "--config", config)
    assert code == 1 and "'typo'" in err
    _, out, _ = run(capsys, "keys", "list", "--json", "--config", config)
    assert [(key["name"], key["rpm"], key["guardrails"]) for key in json.loads(out)] == [("k", 9, [])]


def test_config_show_lists_the_guardrails_and_their_attachments(tmp_path, capsys, database_url):
    config = config_file(tmp_path, database_url)
    code, out, _ = run(capsys, "config", "show", "--config", config)
    assert code == 0
    assert tomllib.loads(out)["guardrails"]["pii"]["action"] == "redact"  # still a config file
    listed = out[out.index("# Guardrails"):]
    assert re.search(r"#\s+pii: pii; stages input; redact; default\n", listed), listed
    assert re.search(r"#\s+secrets: pii; stages output; block\n", listed), listed
    assert re.search(r"#\s+models\.m: injection\n", listed) and re.search(r'#\s+profiles\."acme/default": size\n', listed)
    assert load_settings(config).guardrails.keys() == GUARDRAILS.keys()


def test_config_show_masks_a_webhooks_headers_and_url_secrets(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "x.db"}"\n[guardrails.hook]\ntype = "webhook"\n'
                    'url = "https://checks.example.com/v1?token=hunter2"\nheaders = {Authorization = "Bearer s3cr3t"}\n')
    code, out, _ = run(capsys, "config", "show", "--config", str(path))
    assert code == 0 and "s3cr3t" not in out and "hunter2" not in out
    shown = tomllib.loads(out)["guardrails"]["hook"]
    assert shown["headers"] == {"Authorization": "***"} and shown["url"] == "https://checks.example.com/v1?token=***"
    assert re.search(r"#\s+hook: webhook; stages input; block\n", out)


def test_config_show_says_nothing_of_guardrails_when_none_are_configured(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "x.db"}"\n')
    code, out, _ = run(capsys, "config", "show", "--config", str(path))
    assert code == 0 and "# Guardrails" not in out


# --- the dashboard ---------------------------------------------------------------------------------

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def test_an_admin_sets_an_accounts_and_a_keys_guardrails_on_the_dashboard(client, admin):
    created = client.post("/admin/keys", json={"name": "k"}, headers=admin).json
    account_id = created["account_id"]
    with db.database.connection_context():
        users.create_user("root@example.com", PASSWORD, None, "admin")
    token = CSRF.search(client.get("/dashboard/login").get_data(as_text=True)).group(1)
    client.post("/dashboard/login", data={"email": "root@example.com", "password": PASSWORD, "csrf_token": token})
    page = client.get(f"/dashboard/admin/accounts/{account_id}").get_data(as_text=True)
    assert 'id="guardrails-form"' in page and "pii, secrets, injection, size, shout" in page
    token = CSRF.search(page).group(1)
    url = f"/dashboard/admin/accounts/{account_id}/guardrails"

    page = client.post(url, data={"csrf_token": token, "guardrails": "secrets, size"},
                       follow_redirects=True).get_data(as_text=True)
    assert "The account&#39;s guardrails: secrets, size." in page
    page = client.post(url, data={"csrf_token": token, "key_id": str(created["id"]), "guardrails": "shout"},
                       follow_redirects=True).get_data(as_text=True)
    assert "shout." in page and stored(created["id"]) == ('["shout"]', '["secrets", "size"]')
    page = client.post(url, data={"csrf_token": token, "guardrails": "nosuch"},
                       follow_redirects=True).get_data(as_text=True)
    assert "No guardrail named &#39;nosuch&#39;" in page and stored(created["id"])[1] == '["secrets", "size"]'
    client.post(url, data={"csrf_token": token, "key_id": str(created["id"]), "guardrails": ""})
    assert stored(created["id"]) == (None, '["secrets", "size"]')
