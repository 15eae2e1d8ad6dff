"""The dashboard's security round (issues 22.2 and 23.2, 23.3, 23.5, 23.9), each break as a regression test.

Server-side sessions (a copied cookie dies with sign-out or a password change), the sign-in limit
counted before the password under 40 concurrent attempts on a real server, Post/Redirect/Get with
one-use form tokens (a reload or a second post never acts twice), and no 500 (or JSON) from any
out-of-range number, hostile form value or `next`.
"""

from __future__ import annotations

import datetime
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.dashboard import users
from gateway.dashboard.session import COOKIE
from gateway.tables import ApiKey, CreditGrant, DashboardSession, User, utcnow
from tests.test_dashboard import CSRF, PASSWORD, csrf_token, form_tokens, make_user_fixture, run_cli, sign_in  # noqa: F401 (a fixture)

SECRET = re.compile(r'id="new-key" type="text" readonly value="(sk-gw-[^"]+)"')
BOTH_DATABASES = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


def copy_of(app, client):
    """Another browser holding a copy of `client`'s session cookie (as a thief would)."""
    thief = app.test_client()
    thief.set_cookie(COOKIE, client.get_cookie(COOKIE, path="/dashboard").value, path="/dashboard")
    return thief


def keys_of(email: str) -> list[ApiKey]:
    with db.database.connection_context():
        return list(User.get(User.email == email).account.keys)


def test_a_copied_cookie_stops_working_after_sign_out(app, client, make_user):
    """23.2: the session lived only in the signed cookie, so a copy kept listing and creating keys after logout."""
    make_user("ann@example.com")
    sign_in(client, "ann@example.com")
    thief = copy_of(app, client)
    fields = form_tokens(thief, "/dashboard/keys")
    assert client.post("/dashboard/logout", data={"csrf_token": csrf_token(client, "/dashboard/")}).status_code == 302
    listed = thief.get("/dashboard/keys")
    assert listed.status_code == 302 and listed.headers["Location"].startswith("/dashboard/login")
    created = thief.post("/dashboard/keys", data={"name": "stolen", **fields}, follow_redirects=True)
    assert "sk-gw-" not in created.get_data(as_text=True) and keys_of("ann@example.com") == []
    with db.database.connection_context():
        assert DashboardSession.select().count() == 0


def test_a_password_change_ends_every_session(app, client, make_user):
    """23.2: a password change signs out every other browser and every copy of this one's cookie."""
    make_user("bea@example.com")
    sign_in(client, "bea@example.com")
    other = app.test_client()
    sign_in(other, "bea@example.com")
    thief = copy_of(app, client)
    wrong = client.post("/dashboard/password", data={"current": "not it at all", "password": "a new password",
                                                     "confirm": "a new password", **form_tokens(client, "/dashboard/password")})
    assert wrong.status_code == 400 and "Wrong current password." in wrong.get_data(as_text=True)
    changed = client.post("/dashboard/password", data={"current": PASSWORD, "password": "a new password",
                                                       "confirm": "a new password",
                                                       **form_tokens(client, "/dashboard/password")})
    assert changed.status_code == 302
    assert client.get("/dashboard/keys").status_code == 200  # this browser got a new session
    assert other.get("/dashboard/keys").status_code == 302 and thief.get("/dashboard/keys").status_code == 302
    assert sign_in(app.test_client(), "bea@example.com").status_code == 401
    assert sign_in(app.test_client(), "bea@example.com", "a new password").status_code == 302


def test_an_idle_session_ends_on_the_server(client, make_user):
    """23.2: the session's row, not only the cookie's signature, ends a session unused for `idle_timeout_s`."""
    make_user("ida@example.com")
    sign_in(client, "ida@example.com")
    assert client.get("/dashboard/keys").status_code == 200
    with db.database.connection_context():
        DashboardSession.update(seen_at=utcnow() - datetime.timedelta(seconds=3601)).execute()
    assert client.get("/dashboard/keys").status_code == 302


def test_the_cli_sets_a_password_and_ends_every_session(app, client, make_user, database_url, capsys, monkeypatch):
    """23.2: `gateway users password` (an operator's reset) signs the user out everywhere too."""
    make_user("jo@example.com")
    sign_in(client, "jo@example.com")
    monkeypatch.setenv("GATEWAY_DATABASE_URL", database_url)
    code, out = run_cli(capsys, monkeypatch, "users", "password", "jo@example.com", stdin="another password\n")
    assert code == 0 and "another password" not in out
    assert client.get("/dashboard/keys").status_code == 302
    assert sign_in(app.test_client(), "jo@example.com", "another password").status_code == 302


def sign_in_all_at_once(base_url: str, email: str, passwords: list[str]) -> list[int]:
    """Post every sign-in at the same moment (one browser each, released by a barrier); their statuses."""
    browsers = []
    for password in passwords:
        browser = requests.Session()
        token = CSRF.search(browser.get(f"{base_url}/dashboard/login", timeout=30).text).group(1)
        browsers.append((browser, {"email": email, "password": password, "csrf_token": token}))
    barrier = threading.Barrier(len(browsers))

    def post(browser_and_form) -> int:
        browser, form = browser_and_form
        barrier.wait()
        return browser.post(f"{base_url}/dashboard/login", data=form, allow_redirects=False, timeout=120).status_code

    with ThreadPoolExecutor(len(browsers)) as pool:
        return list(pool.map(post, browsers))


@BOTH_DATABASES
def test_concurrent_sign_ins_are_counted_before_the_password_check(live_server, make_user, monkeypatch):
    """23.3: 40 attempts at once were all checked (the limit was read before, the failure written after)."""
    make_user("cid@example.com")
    checked = Counter()
    authenticate = users.authenticate

    def counted(email: str, password: str):
        checked[password == PASSWORD] += 1
        return authenticate(email, password)

    monkeypatch.setattr(users, "authenticate", counted)
    statuses = Counter(sign_in_all_at_once(live_server, "cid@example.com", [f"guess {n}" for n in range(40)]))
    assert statuses == {401: 5, 429: 35} and checked == {False: 5}  # the default limit: 5 per address and email
    statuses = Counter(sign_in_all_at_once(live_server, "cid@example.com", ["guess"] * 39 + [PASSWORD]))
    assert statuses == {429: 40} and checked == {False: 5}  # the right password among them is not even checked


def test_a_reload_after_creating_a_key_creates_no_second_key(client, make_user):
    """22.2: the secret was rendered in the POST's answer, so a reload posted again and made a second key."""
    make_user("dan@example.com")
    sign_in(client, "dan@example.com")
    fields = form_tokens(client, "/dashboard/keys")
    created = client.post("/dashboard/keys", data={"name": "once", **fields})
    assert created.status_code == 303 and created.headers["Location"] == "/dashboard/keys/new"
    with db.database.connection_context():  # the secret waits for its page encrypted, under the cookie's token
        waiting = [row.new_key for row in DashboardSession.select()]
    assert len(waiting) == 1 and waiting[0] and "sk-gw-" not in waiting[0]
    shown = client.get("/dashboard/keys/new")
    secret = SECRET.search(shown.get_data(as_text=True)).group(1)
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    reloaded = client.get("/dashboard/keys/new", follow_redirects=True).get_data(as_text=True)
    assert secret not in reloaded and "shown only once" in reloaded
    again = client.post("/dashboard/keys", data={"name": "once", **fields}, follow_redirects=True)
    assert "already sent" in again.get_data(as_text=True)
    assert [key.name for key in keys_of("dan@example.com")] == ["once"]


def grant_form(client, account_id: int) -> dict[str, str]:
    return {"amount": "3", "source": "promo", **form_tokens(client, f"/dashboard/admin/accounts/{account_id}")}


@BOTH_DATABASES
def test_a_grant_posted_twice_grants_once(app, client, make_user, live_server):
    """23.5: the admin grant form posted twice granted twice; now its one-use token allows one, even at once."""
    make_user("root@example.com", role="admin")
    with db.database.connection_context():
        key, _ = create_key("tenant")
    sign_in(client, "root@example.com")
    form = grant_form(client, key.account_id)
    path = f"/dashboard/admin/accounts/{key.account_id}/credits"
    assert "Granted 3 credits" in client.post(path, data=form, follow_redirects=True).get_data(as_text=True)
    assert "already sent" in client.post(path, data=form, follow_redirects=True).get_data(as_text=True)
    form = grant_form(client, key.account_id)  # the same form sent by 8 connections at once
    cookie = client.get_cookie(COOKIE, path="/dashboard").value
    barrier = threading.Barrier(8)

    def post(_: int) -> int:
        barrier.wait()
        return requests.post(live_server + path, data=form, cookies={COOKIE: cookie}, allow_redirects=False,
                             timeout=60).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(post, range(8))) == {302, 303}
    with db.database.connection_context():
        assert CreditGrant.select().where(CreditGrant.account == key.account_id).count() == 2
        assert credits.credit_balance(key.account)["current_balance"] == 6


@BOTH_DATABASES
@pytest.mark.parametrize(("method", "path", "status"), [
    ("get", "/dashboard/usage?page=200000000000000000", 400),
    ("get", "/dashboard/admin/usage?page=99999999999999999999", 400),
    ("get", "/dashboard/admin/accounts?page=99999999999999999999", 400),
    ("get", "/dashboard/admin/accounts/99999999999999999999", 404),
    ("get", "/dashboard/admin/accounts/9223372036854775808", 404),
    ("post", "/dashboard/keys/99999999999999999999/revoke", 404),
    ("post", "/dashboard/keys/99999999999999999999/limits", 404),
    ("post", "/dashboard/admin/accounts/99999999999999999999/credits", 404),
    ("post", "/dashboard/admin/users/99999999999999999999/delete", 404),
    ("get", "/dashboard/no/such/page", 404),
    ("get", "/dashboard/usage?page=%C2%B2&key=99999999999999999999999&account=%C2%B2", 200),
])
def test_out_of_range_numbers_answer_the_html_error_page(client, make_user, method, path, status):
    """23.5: huge pages and ids were 500s in JSON (OverflowError on SQLite, bigint out of range on PostgreSQL)."""
    make_user("eve@example.com", role="admin")
    sign_in(client, "eve@example.com")
    response = getattr(client, method)(path, data={"csrf_token": csrf_token(client, "/dashboard/")})
    assert response.status_code == status and response.mimetype == "text/html"
    assert (f"Error {status}" in response.get_data(as_text=True)) == (status != 200)


@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "-Infinity", "1e999999"])
def test_hostile_numbers_in_forms_are_refused(client, make_user, value):
    """23.5: Decimal accepts NaN, which no bound can be compared with (an InvalidOperation, so a 500)."""
    user = make_user("fay@example.com", role="admin")
    sign_in(client, "fay@example.com")
    created = client.post("/dashboard/keys", data={"name": "k", "spend_limit": value,
                                                   **form_tokens(client, "/dashboard/keys")})
    assert created.status_code == 400 and keys_of("fay@example.com") == []
    granted = client.post(f"/dashboard/admin/accounts/{user.account_id}/credits", follow_redirects=True,
                          data={**grant_form(client, user.account_id), "amount": value})
    assert granted.status_code == 200 and "Granted" not in granted.get_data(as_text=True)


@pytest.mark.parametrize(("target", "landing"), [
    ("/dashboard/\r\nX:1", "/dashboard/"),
    ("/dashboard/%0d%0aX:1", "/dashboard/%0d%0aX:1"),  # still encoded: a harmless path
    ("//evil.example/dashboard/", "/dashboard/"),
    ("/dashboard//evil.example", "/dashboard/"),
    ("/dashboard/\\evil.example", "/dashboard/"),
    ("https://evil.example/dashboard/", "/dashboard/"),
    ("/dashboard/usage?page=2", "/dashboard/usage?page=2"),
])
def test_next_is_only_a_plain_dashboard_path(client, make_user, target, landing):
    """23.5: `next` with CR LF, signed in, was a 500 (a header with a line break); other sites are never a target."""
    make_user("gus@example.com")
    sign_in(client, "gus@example.com")
    response = client.get("/dashboard/login", query_string={"next": target})
    assert response.status_code == 302 and response.headers["Location"] == landing
    assert "X" not in response.headers


def test_every_state_changing_form_redirects_after_acting(client, make_user):
    """22.2: Post/Redirect/Get: each form that changes something answers a redirect to a page a reload can't repost."""
    admin = make_user("hal@example.com", role="admin")
    sign_in(client, "hal@example.com")
    key_id = account_id = admin.account_id
    with db.database.connection_context():
        key_id = create_key("theirs", account=admin.account)[0].id
    forms = [
        ("/dashboard/keys", "/dashboard/keys", {"name": "mine"}),
        (f"/dashboard/keys/{key_id}/limits", "/dashboard/keys", {f"k{key_id}-rpm": "9"}),
        (f"/dashboard/keys/{key_id}/revoke", "/dashboard/keys", {}),
        (f"/dashboard/admin/accounts/{account_id}/tier", f"/dashboard/admin/accounts/{account_id}", {"tier": "premium"}),
        (f"/dashboard/admin/accounts/{account_id}/credits", f"/dashboard/admin/accounts/{account_id}",
         {"amount": "1", "source": "grant"}),
        ("/dashboard/admin/accounts", "/dashboard/admin/accounts", {"name": "new", "tier": "free"}),
        ("/dashboard/admin/users", "/dashboard/admin/users", {"email": "ivy@example.com", "password": PASSWORD,
                                                              "role": "member"}),
    ]
    for path, form_page, data in forms:
        response = client.post(path, data={**data, **form_tokens(client, form_page)})
        assert response.status_code in (302, 303), path
        assert client.get(response.headers["Location"]).status_code == 200, path
