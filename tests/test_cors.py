"""CORS: no Access-Control-* header unless `[server] cors_origins` is set; then only for those origins."""

from __future__ import annotations

import pytest

from gateway import create_app, db, lifecycle
from gateway.api.cors import allowed_origin

APP_ORIGIN, OTHER_ORIGIN = "https://app.example.com", "https://evil.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"}
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


def cors_headers(response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.lower().startswith("access-control-")}


@pytest.fixture
def cors_client(make_settings, make_key):
    """A client of an app with cors_origins set (the key is made in the default app's database)."""
    app = create_app(make_settings(server={"cors_origins": [APP_ORIGIN + "/"]}))
    db.upgrade()
    yield app.test_client()
    lifecycle.close(app)


def test_no_cors_headers_by_default(client, auth_headers):
    origin = {"Origin": APP_ORIGIN}
    answers = [
        client.get("/v1/models", headers={**auth_headers, **origin}),
        client.get("/v1/models", headers=origin),  # a 401
        client.options("/v1/chat/completions", headers={**origin, **PREFLIGHT}),
        client.post("/v1/chat/completions", json=CHAT, headers={**auth_headers, **origin}),
        client.get("/healthz", headers=origin),
    ]
    assert [answer.status_code for answer in answers][:2] == [200, 401]
    assert all(cors_headers(answer) == {} for answer in answers)
    assert answers[2].status_code != 204  # no preflight answered


def test_configured_origin_gets_preflight_and_headers(cors_client, auth_headers):
    preflight = cors_client.options("/v1/chat/completions", headers={"Origin": APP_ORIGIN, **PREFLIGHT})
    assert preflight.status_code == 204  # answered before authentication: a preflight carries no key
    assert cors_headers(preflight) == {
        "Access-Control-Allow-Origin": APP_ORIGIN,
        "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
        "Access-Control-Max-Age": "600",
        "Access-Control-Allow-Headers": PREFLIGHT["Access-Control-Request-Headers"],
    }
    answer = cors_client.post("/v1/chat/completions", json=CHAT, headers={**auth_headers, "Origin": APP_ORIGIN})
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "x-request-id" in answer.headers["Access-Control-Expose-Headers"]
    assert "Origin" in answer.headers["Vary"]
    refused = cors_client.get("/v1/models", headers={"Origin": APP_ORIGIN})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Access-Control-Allow-Credentials" not in answer.headers


def test_other_origins_get_nothing(cors_client, auth_headers):
    preflight = cors_client.options("/v1/chat/completions", headers={"Origin": OTHER_ORIGIN, **PREFLIGHT})
    assert preflight.status_code == 401 and cors_headers(preflight) == {}
    answer = cors_client.get("/v1/models", headers={**auth_headers, "Origin": OTHER_ORIGIN})
    assert answer.status_code == 200 and cors_headers(answer) == {} and "Origin" in answer.headers["Vary"]
    assert cors_headers(cors_client.get("/v1/models", headers=auth_headers)) == {}  # no Origin: not a browser


@pytest.mark.parametrize(("origin", "origins", "expected"), [
    (APP_ORIGIN, {APP_ORIGIN}, APP_ORIGIN),
    (APP_ORIGIN + "/", {APP_ORIGIN}, APP_ORIGIN + "/"),
    ("https://app.example.com.evil.example", {APP_ORIGIN}, None),
    ("http://app.example.com", {APP_ORIGIN}, None),
    ("null", {APP_ORIGIN}, None),
    (OTHER_ORIGIN, {"*"}, "*"),
    (None, {"*"}, None),
    (APP_ORIGIN, set(), None),
])
def test_allowed_origin(origin, origins, expected):
    assert allowed_origin(origin, origins) == expected
