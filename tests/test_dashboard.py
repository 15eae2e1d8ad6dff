"""The dashboard through Flask's test client: sign-in, sessions, CSRF, sign-in limits, isolation, CLI, sign-up."""

from __future__ import annotations

import io
import json
import re
import sys

import itsdangerous.timed
import pytest

from gateway import create_app, db, lifecycle
from gateway.accounting import credits
from gateway.accounting.keys import create_key, find_key
from gateway.cli import main
from gateway.dashboard import users
from gateway.tables import SignInFailure, User
from tests.mcp_fixtures.launch import TOOL_SERVER

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


def csrf_token(client, path: str = "/dashboard/login") -> str:
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def form_tokens(client, path: str) -> dict[str, str]:
    """The CSRF token and the one-use form token (when the page has one) of a freshly rendered page."""
    page = client.get(path).get_data(as_text=True)
    found = FORM_TOKEN.search(page)
    return {"csrf_token": CSRF.search(page).group(1), **({"form_token": found.group(1)} if found else {})}


@pytest.fixture(name="make_user")
def make_user_fixture(app):
    """Create a user (with a new account unless `account` is given) and return it."""

    def build(email: str, role: str = "member", account=None) -> User:
        with db.database.connection_context():
            return users.create_user(email, PASSWORD, account, role)

    return build


def sign_in(client, email: str, password: str = PASSWORD):
    return client.post("/dashboard/login", data={"email": email, "password": password,
                                                 "csrf_token": csrf_token(client)})


@pytest.fixture
def dashboard_app(make_settings):
    """An app whose sign-in limits are 3 attempts per address and email, 5 per email (a variant of `app`)."""
    application = create_app(make_settings(dashboard={"sign_in_attempts": 3, "sign_in_attempts_per_email": 5}))
    db.upgrade()
    yield application
    lifecycle.close(application)


def test_sign_in_sets_a_scoped_http_only_cookie_and_the_api_sets_none(client, make_user):
    make_user("Alice@Example.com")
    assert "Set-Cookie" not in client.get("/healthz").headers
    response = sign_in(client, "alice@example.com")
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "Balance of alice@example.com" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store" and "frame-ancestors 'none'" in page.headers[
        "Content-Security-Policy"]


def test_secure_cookie_setting(make_settings, tmp_path):
    application = create_app(make_settings(dashboard={"secure_cookies": True}))
    db.upgrade()
    try:
        response = application.test_client().get("/dashboard/login")
        assert "Secure" in response.headers["Set-Cookie"]
    finally:
        lifecycle.close(application)


def test_pages_need_a_session(client):
    for path in ("/dashboard/", "/dashboard/keys", "/dashboard/usage", "/dashboard/admin/accounts"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/dashboard/login?next=")


def test_wrong_password_and_unknown_email_are_refused_alike(client, make_user):
    make_user("bob@example.com")
    for email, password in (("bob@example.com", "wrong password"), ("nobody@example.com", PASSWORD)):
        response = sign_in(client, email, password)
        assert response.status_code == 401
        assert "Wrong email or password." in response.get_data(as_text=True)
    assert client.get("/dashboard/").status_code == 302


def test_form_without_csrf_token_is_refused(client, make_user):
    make_user("carol@example.com")
    response = client.post("/dashboard/login", data={"email": "carol@example.com", "password": PASSWORD})
    assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)
    assert sign_in(client, "carol@example.com").status_code == 302
    refused = client.post("/dashboard/keys", data={"name": "no token"})
    assert refused.status_code == 400 and "CSRF" in refused.get_data(as_text=True)


def sign_in_from(application, address: str, email: str, password: str = PASSWORD):
    """A sign-in from another client address (a fresh browser)."""
    browser = application.test_client()
    token = csrf_token(browser)
    return browser.post("/dashboard/login", environ_base={"REMOTE_ADDR": address},
                        data={"email": email, "password": password, "csrf_token": token})


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_sign_in_limit_per_pair_and_per_email(dashboard_app, make_user):
    """Issue 23.9: a guesser locks out neither the user elsewhere nor other users behind the same address."""
    client = dashboard_app.test_client()
    make_user("dave@example.com")
    make_user("erin@example.com")
    for _ in range(3):
        assert sign_in(client, "dave@example.com", "guess").status_code == 401
    limited = sign_in(client, "dave@example.com")  # the right password no longer helps from this address
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert sign_in_from(dashboard_app, "10.1.2.3", "dave@example.com").status_code == 302  # dave, elsewhere
    assert sign_in(client, "erin@example.com").status_code == 302  # another user at the guesser's address
    for address in ("10.0.0.1", "10.0.0.2"):  # 5 failures for dave's email in all: its own bound
        assert sign_in_from(dashboard_app, address, "dave@example.com", "guess").status_code == 401
    assert sign_in_from(dashboard_app, "10.0.0.3", "dave@example.com").status_code == 429
    with db.database.connection_context():
        assert SignInFailure.select().where(SignInFailure.email == "erin@example.com").count() == 0


def test_idle_session_is_signed_out(client, make_user, monkeypatch):
    make_user("frank@example.com")
    assert sign_in(client, "frank@example.com").status_code == 302
    assert client.get("/dashboard/keys").status_code == 200
    later = itsdangerous.timed.time.time() + 3601  # the default idle_timeout_s is 3600
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: later)
    assert client.get("/dashboard/keys").status_code == 302


def test_deleted_user_is_signed_out(client, make_user):
    user = make_user("gina@example.com")
    assert sign_in(client, "gina@example.com").status_code == 302
    with db.database.connection_context():
        users.delete_user(user.id)
    assert client.get("/dashboard/").status_code == 302


def test_members_see_and_change_only_their_own_account(client, make_user):
    make_user("hank@example.com")
    with db.database.connection_context():
        other, _ = create_key("someone else's key")
        credits.grant_credits(other.account_id, 5_000_000)
    assert sign_in(client, "hank@example.com").status_code == 302
    created = client.post("/dashboard/keys", data={"name": "mine", **form_tokens(client, "/dashboard/keys")},
                          follow_redirects=True)
    assert created.status_code == 200 and "sk-gw-" in created.get_data(as_text=True)
    token = csrf_token(client, "/dashboard/keys")
    keys_page = client.get("/dashboard/keys").get_data(as_text=True)
    assert "mine" in keys_page and other.prefix not in keys_page and "someone else" not in keys_page
    assert client.post(f"/dashboard/keys/{other.id}/revoke", data={"csrf_token": token}).status_code == 404
    assert client.post(f"/dashboard/keys/{other.id}/limits", data={"csrf_token": token}).status_code == 404
    with db.database.connection_context():
        assert not find_key(other.id).revoked
    assert client.get("/dashboard/admin/keys").status_code == 403
    assert client.get("/dashboard/admin/accounts").status_code == 403


def test_overview_shows_the_credit_balance_figures(client, make_user, make_key):
    user = make_user("iris@example.com")
    with db.database.connection_context():
        credits.grant_credits(user.account_id, 12_500_000)
    secret = make_key("iris key", account=user.account)
    api = client.get("/api/v3/auth/credit-balance", headers={"Authorization": f"Bearer {secret}"}).get_json()
    sign_in(client, "iris@example.com")
    page = client.get("/dashboard/").get_data(as_text=True)
    assert api["current_balance"] == 12.5
    assert '<dd id="current-balance">12.5</dd>' in page and f"<dd>{api['tier']}</dd>" in page


def test_key_limits_are_set_and_cleared(client, make_user):
    make_user("jack@example.com")
    sign_in(client, "jack@example.com")
    client.post("/dashboard/keys", data={"name": "limited", "rpm": "7", "spend_limit": "2.5",
                                         **form_tokens(client, "/dashboard/keys")})
    token = csrf_token(client, "/dashboard/keys")
    with db.database.connection_context():
        key = User.get(User.email == "jack@example.com").account.keys.get()
    assert (key.rpm, key.tpm, key.spend_limit) == (7, None, 2_500_000)
    data = {f"k{key.id}-rpm": "", f"k{key.id}-tpm": "900", f"k{key.id}-spend_limit": "", "csrf_token": token}
    assert client.post(f"/dashboard/keys/{key.id}/limits", data=data).status_code == 302
    with db.database.connection_context():
        key = find_key(key.id)
    assert (key.rpm, key.tpm, key.spend_limit) == (None, 900, None)
    bad = {f"k{key.id}-rpm": "0", "csrf_token": token}
    assert "Limits not changed" in client.post(f"/dashboard/keys/{key.id}/limits", data=bad,
                                               follow_redirects=True).get_data(as_text=True)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_admin_pages_render_and_manage_any_account(client, make_user):
    make_user("root@example.com", role="admin")
    with db.database.connection_context():
        key, _ = create_key("tenant")
    sign_in(client, "root@example.com")
    for path in ("/dashboard/admin/accounts", f"/dashboard/admin/accounts/{key.account_id}", "/dashboard/admin/users",
                 "/dashboard/admin/keys", "/dashboard/admin/mcp", "/dashboard/admin/usage"):
        response = client.get(path)
        assert response.status_code == 200, path
    token = csrf_token(client, "/dashboard/admin/users")
    granted = client.post(f"/dashboard/admin/accounts/{key.account_id}/credits", follow_redirects=True,
                          data={"amount": "3", "expires_in_days": "10", "source": "promo",
                                **form_tokens(client, f"/dashboard/admin/accounts/{key.account_id}")})
    assert "Granted 3 credits" in granted.get_data(as_text=True)
    client.post(f"/dashboard/admin/accounts/{key.account_id}/tier", data={"tier": "premium", "csrf_token": token})
    client.post(f"/dashboard/keys/{key.id}/revoke", data={"csrf_token": token})
    with db.database.connection_context():
        account = find_key(key.id).account
        assert find_key(key.id).revoked and account.tier == "premium"
        assert credits.credit_balance(account)["expiring_credits"] == 0  # 10 days away: beyond the 7-day window
        assert credits.credit_balance(account)["current_balance"] == 3
    added = client.post("/dashboard/admin/users", data={"email": "new@example.com", "password": "short",
                                                        "account_id": key.account_id, "csrf_token": token})
    assert added.status_code == 400
    client.post("/dashboard/admin/users", data={"email": "new@example.com", "password": PASSWORD, "role": "member",
                                                "account_id": key.account_id,
                                                **form_tokens(client, "/dashboard/admin/users")})
    with db.database.connection_context():
        assert User.get(User.email == "new@example.com").account_id == key.account_id


def test_signup_is_off_by_default_and_grants_the_starting_credits_when_on(client, make_settings):
    assert client.get("/dashboard/signup").status_code == 404
    application = create_app(make_settings(dashboard={"signup": True, "signup_credits": 2.5}))
    db.upgrade()
    try:
        browser = application.test_client()
        token = csrf_token(browser, "/dashboard/signup")
        response = browser.post("/dashboard/signup", data={"email": "kim@example.com", "password": PASSWORD,
                                                           "confirm": PASSWORD, "csrf_token": token})
        assert response.status_code == 302
        with db.database.connection_context():
            user = User.get(User.email == "kim@example.com")
            assert (user.role, user.account.tier) == ("member", "free")
            assert credits.credit_balance(user.account)["current_balance"] == 2.5
    finally:
        lifecycle.close(application)


def test_dashboard_off(make_settings):
    application = create_app(make_settings(dashboard={"enabled": False}))
    try:
        response = application.test_client().get("/dashboard/login")
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "unknown_route"
    finally:
        lifecycle.close(application)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_cli(capsys, monkeypatch, *args: str, stdin: str = "") -> tuple[int, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_users_cli(database_url, capsys, monkeypatch):
    monkeypatch.setenv("GATEWAY_DATABASE_URL", database_url)
    code, out = run_cli(capsys, monkeypatch, "users", "create", "--email", "Lee@Example.com", "--admin",
                        stdin=PASSWORD + "\n")
    assert code == 0 and PASSWORD not in out
    listed = json.loads(run_cli(capsys, monkeypatch, "users", "list", "--json")[1])
    assert [(u["email"], u["role"]) for u in listed] == [("lee@example.com", "admin")]
    answers = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    monkeypatch.setattr(sys, "stdin", Terminal())
    assert main(["users", "create", "--email", "max@example.com", "--account", str(listed[0]["account_id"])]) == 0
    code, out = run_cli(capsys, monkeypatch, "users", "create", "--email", "max@example.com", stdin=PASSWORD)
    assert code == 1 and "already exists" in out
    code, out = run_cli(capsys, monkeypatch, "users", "create", "--email", "ned@example.com", stdin="short\n")
    assert code == 1 and "8 to 1024 characters" in out
    with db.database.connection_context():
        stored = User.get(User.email == "lee@example.com").password_hash
        assert User.get(User.email == "max@example.com").account_id == listed[0]["account_id"]
    assert stored.startswith("scrypt:") and PASSWORD not in stored
    assert run_cli(capsys, monkeypatch, "users", "delete", "max@example.com")[0] == 0
    assert run_cli(capsys, monkeypatch, "users", "delete", "max@example.com")[0] == 1
    assert len(json.loads(run_cli(capsys, monkeypatch, "users", "list", "--json")[1])) == 1


def test_admin_mcp_page_shows_state_and_tools(make_settings, make_user):
    application = create_app(make_settings(mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]}}))
    try:
        client = application.test_client()
        with application.app_context():
            application.extensions["gateway.mcp"].servers.wait_started("tools", 30)
            expected = [tool.name for tool in application.extensions["gateway.mcp"].servers.tools("tools")]
        make_user("ops@example.com", role="admin")
        sign_in(client, "ops@example.com")
        page = client.get("/dashboard/admin/mcp").get_data(as_text=True)
        assert '<span class="state available">available</span>' in page and expected
        assert all(f"<code>{name}</code>" in page for name in expected)
    finally:
        lifecycle.close(application)
