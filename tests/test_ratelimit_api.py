"""Rate limits through HTTP: headers on every metered response, 429 with Retry-After."""

from __future__ import annotations

import os
import uuid

import openai
import pytest

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL")
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
           "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


def test_headers_on_success_and_429_when_over(client, make_key, fake_upstream):
    headers = {"X-API-Key": make_key(rpm=2)}
    first = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert all(name in first.headers for name in HEADERS)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-limit-tokens"] == "1000000"
    client.post("/v1/chat/completions", json=CHAT, headers=headers)
    denied = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert denied.status_code == 429
    assert denied.json["error"]["type"] == "rate_limit_error"
    assert "requests per min" in denied.json["error"]["message"]
    assert int(denied.headers["Retry-After"]) >= 1
    assert denied.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(fake_upstream.requests) == 2


def test_token_limit(client, make_key):
    headers = {"X-API-Key": make_key(tpm=25)}
    assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200  # uses 18; next needs 4 + 5
    denied = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert denied.status_code == 429 and "tokens per min" in denied.json["error"]["message"]


def test_defaults_come_from_limits_table(make_settings, make_key, make_app):
    app = make_app(make_settings(limits={"rpm": 1}))
    headers = {"X-API-Key": make_key()}
    assert app.test_client().post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    assert app.test_client().post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 429


def test_sdk_sees_rate_limit_error(live_server, make_key):
    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key=make_key(rpm=1), max_retries=0)
    client.chat.completions.create(**CHAT)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**CHAT)


def test_redis_windows_through_http(make_settings, make_key, fake_upstream):
    url = REDIS_URL
    if not url:
        pytest.skip("GATEWAY_TEST_REDIS_URL is not set")
    from gateway import create_app, lifecycle

    app = create_app(make_settings(limits={"backend": "redis", "url": url}))
    try:
        headers = {"X-API-Key": make_key(f"redis-{uuid.uuid4().hex}", rpm=2)}
        client = app.test_client()
        statuses = [client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
    finally:
        lifecycle.close(app)
