"""The bound on failed authentication attempts per client address (per worker, sliding window)."""

from __future__ import annotations

import hmac
import json

import pytest

from gateway.accounting import auth_throttle
from gateway.accounting.auth_throttle import FailedAuthThrottle

LIMIT, WINDOW = 3, 60.0
ADMIN_TOKEN = "throttle-admin-token"
ATTACKER, NEIGHBOUR, PROXY = "203.0.113.7", "198.51.100.1", "127.0.0.1"
BAD = {"Authorization": "Bearer sk-gw-not-a-key"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_retry_after_and_forgetting() -> None:
    clock = Clock()
    throttle = FailedAuthThrottle(LIMIT, WINDOW, max_addresses=2, clock=clock)
    for offset in (0, 10, 20):
        assert throttle.retry_after("a") is None
        clock.now = 1000 + offset
        throttle.record_failure("a")
    assert throttle.retry_after("a") == 40  # until the first failure (t=0) leaves the window
    clock.now = 1059.5
    assert throttle.retry_after("a") == 1
    clock.now = 1060.0
    assert throttle.retry_after("a") is None
    throttle.record_failure("a")  # t=60: the failures at 10, 20, 60 are in the window
    assert throttle.retry_after("a") == 10
    throttle.record_failure("b")
    throttle.record_failure("c")  # "a" failed least recently: forgotten
    assert throttle.retry_after("a") is None and len(throttle._failures) == 2


def test_limit_zero_turns_it_off() -> None:
    throttle = FailedAuthThrottle(0, WINDOW)
    for _ in range(100):
        throttle.record_failure("a")
    assert throttle.retry_after("a") is None


@pytest.fixture
def settings(make_settings, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    return make_settings(auth={"failed_attempts_per_address": LIMIT, "failed_attempts_window_s": WINDOW},
                         server={"trusted_proxies": [PROXY]})


@pytest.fixture
def clock(app) -> Clock:
    """The app's throttle, on a clock the test moves."""
    clock = Clock()
    app.extensions[auth_throttle.EXTENSION] = FailedAuthThrottle(LIMIT, WINDOW, clock=clock)
    return clock


def get(client, path: str, headers: dict[str, str], peer: str, forwarded: str | None = None):
    sent = {**headers, **({"X-Forwarded-For": forwarded} if forwarded else {})}
    return client.get(path, headers=sent, environ_base={"REMOTE_ADDR": peer})


def test_failures_throttle_the_address_even_for_a_good_key_until_the_window_passes(client, clock, auth_headers):
    for _ in range(LIMIT):
        assert get(client, "/v1/models", BAD, ATTACKER).status_code == 401
    refused = get(client, "/v1/models", auth_headers, ATTACKER)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    assert refused.json == {"error": {
        "message": "Too many failed authentication attempts from this address; retry after 60 seconds.",
        "type": "rate_limit_error", "param": None, "code": "too_many_failed_attempts"}}
    openrouter = get(client, "/api/v1/models", auth_headers, ATTACKER)
    assert openrouter.status_code == 429 and openrouter.json["error"]["code"] == 429
    assert get(client, "/v1/models", auth_headers, NEIGHBOUR).status_code == 200  # only that address
    clock.now += WINDOW
    assert get(client, "/v1/models", auth_headers, ATTACKER).status_code == 200


def test_forwarded_for_from_an_untrusted_peer_is_ignored(client, clock, auth_headers):
    for index in range(LIMIT):
        assert get(client, "/v1/models", BAD, ATTACKER, forwarded=f"192.0.2.{index}").status_code == 401
    assert get(client, "/v1/models", auth_headers, ATTACKER, forwarded="192.0.2.99").status_code == 429


def test_forwarded_for_from_a_trusted_proxy_names_the_client(client, clock, auth_headers):
    for _ in range(LIMIT):
        assert get(client, "/v1/models", BAD, PROXY, forwarded=f"6.6.6.6, {ATTACKER}").status_code == 401
    assert get(client, "/v1/models", auth_headers, PROXY, forwarded=ATTACKER).status_code == 429
    assert get(client, "/v1/models", auth_headers, PROXY, forwarded=NEIGHBOUR).status_code == 200
    assert get(client, "/v1/models", auth_headers, PROXY).status_code == 200  # the proxy itself


def test_wrong_admin_tokens_count_and_a_non_ascii_token_is_a_401(client, clock):
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert get(client, "/admin/keys", {"Authorization": "Bearer t\u00e9st"}, ATTACKER).status_code == 401
    for _ in range(LIMIT - 1):
        assert get(client, "/admin/keys", {"Authorization": "Bearer wrong"}, ATTACKER).status_code == 401
    assert get(client, "/admin/keys", admin, ATTACKER).status_code == 429
    assert get(client, "/admin/keys", admin, NEIGHBOUR).status_code == 200


def test_routes_without_authentication_are_never_throttled(client, clock):
    for _ in range(LIMIT):
        get(client, "/v1/models", BAD, ATTACKER)
    assert get(client, "/healthz", {}, ATTACKER).status_code == 200


def test_the_access_log_names_the_same_client(client, clock, auth_headers, capfd):
    headers = {**auth_headers, "X-Forwarded-For": f"6.6.6.6, {ATTACKER}"}
    for peer in (PROXY, NEIGHBOUR):
        answer = client.get("/v1/models", headers=headers, environ_base={"REMOTE_ADDR": peer}, buffered=True)
        assert answer.status_code == 200
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith('{"time"')]
    assert [line["remote_addr"] for line in lines if line["path"] == "/v1/models"] == [ATTACKER, NEIGHBOUR]


def test_the_admin_token_is_compared_in_constant_time(client, clock, monkeypatch):
    compared = []
    constant_time = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or constant_time(a, b))
    for token in ("wrong", ADMIN_TOKEN):
        get(client, "/admin/keys", {"Authorization": f"Bearer {token}"}, NEIGHBOUR)
    assert compared == [(b"wrong", ADMIN_TOKEN.encode()), (ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode())]
