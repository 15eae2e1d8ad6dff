"""Per-worker services: created by init_app from settings, started once, closed by close."""

from __future__ import annotations

import threading
import time

import httpx2
import pytest

from gateway import create_app, lifecycle
from gateway.errors import ServiceUnavailable
from gateway.mcp.bridge import McpBridge
from gateway.mcp.remote import remote_http_client
from gateway.responses import background


def test_background_runner_has_the_configured_size_and_closes_with_the_app(make_settings):
    app = create_app(make_settings(responses={"background_workers": 3}))
    runner = background.runner(app)
    assert runner._executor._max_workers == 3
    lifecycle.close(app)
    with pytest.raises(ServiceUnavailable):
        runner.submit("resp_1", lambda stop: None, lambda: None)


def test_start_once_runs_its_function_once_across_threads():
    once, calls = lifecycle.StartOnce(), []

    def start() -> None:
        time.sleep(0.05)
        calls.append(threading.get_ident())

    threads = [threading.Thread(target=once, args=(start,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(calls) == 1 and once.started


def test_apps_start_independently(make_settings):
    first, second = create_app(make_settings()), create_app(make_settings())
    try:
        lifecycle.start(first)
        assert first.extensions["gateway.start_once"].started
        assert not second.extensions["gateway.start_once"].started
    finally:
        lifecycle.close(first)
        lifecycle.close(second)


def test_mcp_http_timeouts_come_from_settings(make_settings):
    settings = make_settings(mcp={"http_timeout_s": 4.0, "http_read_timeout_s": 40.0})
    servers = lifecycle.builtin_servers(settings, McpBridge())
    assert servers._http_timeout == httpx2.Timeout(4.0, read=40.0)
    client = remote_http_client("https://mcp.example.com/mcp", None, None, False, 4.0, read_timeout_s=40.0)
    assert client.timeout == httpx2.Timeout(4.0, read=40.0)
