"""UpstreamClient: translation of failures at the boundary (mocked with `responses`)."""

from __future__ import annotations

import time

import pytest
import requests
import responses
from urllib3.exceptions import ReadTimeoutError

from gateway.config import ProviderSettings
from gateway.errors import UpstreamError, UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from gateway.upstream.client import STREAM_QUEUE_EVENTS, UpstreamClient
from tests.polling import wait_until

BASE = "http://upstream.test/v1"


@pytest.fixture
def upstream(monkeypatch):
    monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream-secret")
    providers = {"p": ProviderSettings(base_url=BASE, api_key_env="UPSTREAM_KEY", timeout_s=12, connect_timeout_s=3)}
    client = UpstreamClient(providers, pool_size=8)
    yield client
    client.close()


@responses.activate
def test_sends_key_and_timeouts(upstream):
    responses.post(f"{BASE}/chat/completions", json={"ok": True})
    assert upstream.post_json("p", "chat/completions", {"model": "m"}) == {"ok": True}
    call = responses.calls[0]
    assert call.request.headers["Authorization"] == "Bearer sk-upstream-secret"
    assert call.request.req_kwargs["timeout"] == (3, 12)


@pytest.mark.parametrize(
    "kwargs,error,status,code",
    [
        ({"body": requests.ConnectTimeout()}, UpstreamTimeout, 504, "upstream_timeout"),
        ({"body": requests.ReadTimeout()}, UpstreamTimeout, 504, "upstream_timeout"),
        # how requests reports a read timeout while streaming a body
        ({"body": requests.ConnectionError(ReadTimeoutError(None, "/", "Read timed out."))}, UpstreamTimeout, 504,
         "upstream_timeout"),
        ({"body": requests.ConnectionError()}, UpstreamUnavailable, 502, "upstream_unavailable"),
        ({"json": {"error": {"message": "x"}}, "status": 500}, UpstreamError, 502, "upstream_error"),
        ({"json": {"error": {"message": "x", "code": "c"}}, "status": 422}, UpstreamRejected, 422, "c"),
        ({"body": "plain text", "status": 404}, UpstreamRejected, 404, "upstream_rejected"),
        ({"json": {"error": "just a string"}, "status": 400}, UpstreamRejected, 400, "upstream_rejected"),
        ({"json": [1, 2]}, UpstreamError, 502, "upstream_error"),
        ({"body": "{broken"}, UpstreamError, 502, "upstream_error"),
    ],
)
@responses.activate
def test_failures_are_translated(upstream, kwargs, error, status, code):
    responses.post(f"{BASE}/chat/completions", **kwargs)
    with pytest.raises(error) as caught:
        upstream.post_json("p", "chat/completions", {})
    assert (caught.value.status, caught.value.code) == (status, code)
    assert "sk-upstream-secret" not in caught.value.message


@responses.activate
def test_429_keeps_retry_after(upstream):
    responses.post(f"{BASE}/chat/completions", json={"error": {"message": "slow"}}, status=429,
                   headers={"Retry-After": "9"})
    with pytest.raises(UpstreamRejected) as caught:
        upstream.post_json("p", "chat/completions", {})
    assert caught.value.status == 429 and caught.value.headers == {"Retry-After": "9"}


def test_closed_client_refuses_work(upstream):
    upstream.close()
    upstream.close()
    with pytest.raises(Exception) as caught:
        upstream.post_json("p", "chat/completions", {})
    assert getattr(caught.value, "status", None) == 503


def test_proxy_environment_is_read_once_per_session(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "")
    providers = {"p": ProviderSettings(base_url=BASE)}
    client = UpstreamClient(providers, pool_size=2)
    session = client._session("p")
    assert session.proxies["http"] == "http://proxy.internal:3128" and session.trust_env is False
    client.close()


@responses.activate
def test_a_stream_reads_a_bounded_number_of_events_ahead_and_stops_once_closed():
    responses.post(f"{BASE}/chat/completions", content_type="text/event-stream",
                   body=b"".join(b'data: {"n": %d}\n\n' % n for n in range(1000)))
    client = UpstreamClient({"p": ProviderSettings(base_url=BASE)}, pool_size=1)
    stream = client.open_stream("p", "chat/completions", {"stream": True})
    deadline = time.monotonic() + 5
    while stream._queue.qsize() < STREAM_QUEUE_EVENTS and time.monotonic() < deadline:
        time.sleep(0.01)
    # the reader holds the next event and waits for room instead of reading on
    wait_until(lambda: stream._queue.not_full._waiters, "the reader waiting on the full queue")
    assert stream._queue.qsize() == STREAM_QUEUE_EVENTS
    assert next(stream.events(1.0)).data == '{"n": 0}'
    stream.close()
    assert client._executor.submit(lambda: "free").result(timeout=2) == "free"  # the one reader thread is back
    client.close()
