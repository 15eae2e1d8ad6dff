"""A provider's copies: config checks, the balancer, and the upstream client spreading real HTTP requests."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gateway.config import ConfigError, ProviderSettings, build_settings
from gateway.errors import UpstreamUnavailable
from gateway.lifecycle import managed_processes
from gateway.upstream.client import UpstreamClient
from gateway.upstream.copies import CopyBalancer
from tests.ports import free_port

HOLD_S = 30.0  # a held answer goes on by itself after this, whatever the test did


def test_copy_base_urls_count_up_from_the_base_port() -> None:
    provider = ProviderSettings(base_url="http://127.0.0.1:18081/v1", copies=3, command=["serve", "{port}"])
    assert provider.copy_base_urls() == [
        "http://127.0.0.1:18081/v1", "http://127.0.0.1:18082/v1", "http://127.0.0.1:18083/v1",
    ]
    assert ProviderSettings(base_url="https://api.example.com/v1").copy_base_urls() == ["https://api.example.com/v1"]
    # `command = []` over the embedded defaults (a server of your own): one base_url, whatever copies says
    assert ProviderSettings(base_url="http://10.0.0.7:8000/v1", copies=4, command=[]).copy_base_urls() == [
        "http://10.0.0.7:8000/v1"
    ]


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ({"base_url": "http://127.0.0.1:9000/v1", "copies": 2, "command": ["serve", "--port", "9000"]},
         "providers.local.copies: 2 copies need {port} in `command` (or set copies = 1)"),
        ({"base_url": "http://localhost/v1", "copies": 2, "command": ["serve", "{port}"]},
         "providers.local.copies: needs a port in base_url"),
    ],
)
def test_copies_need_a_port_for_each(provider: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_settings({"providers": {"local": provider}, "models": {"m": {"provider": "local"}}})


def test_each_copy_is_supervised_on_its_own_port(tmp_path) -> None:
    settings = build_settings({
        "server": {"state_dir": str(tmp_path)},
        "providers": {"local": {"base_url": "http://127.0.0.1:9000/v1", "copies": 2,
                                "command": ["serve", "--port={port}"]}},
        "models": {"m": {"provider": "local"}},
    })
    processes = managed_processes(settings)
    assert list(processes) == ["local", "local-2"]
    assert [process.command for process in processes.values()] == [["serve", "--port=9000"], ["serve", "--port=9001"]]
    assert [process.ready_url for process in processes.values()] == [
        "http://127.0.0.1:9000/v1/models", "http://127.0.0.1:9001/v1/models",
    ]
    assert processes["local-2"].lock_path == f"{tmp_path}/provider-local-9001.lock"


def test_balancer_prefers_the_least_busy_copy_and_takes_turns_among_ties() -> None:
    balancer = CopyBalancer(["a", "b", "c"])
    first, release_first = balancer.acquire()
    second, release_second = balancer.acquire()
    third, _ = balancer.acquire()
    assert sorted([first, second, third]) == ["a", "b", "c"]  # each idle copy before any second request
    release_second()
    release_second()  # idempotent
    assert balancer.acquire()[0] == second  # the only idle copy
    release_first()
    assert balancer.in_flight()[balancer.base_urls.index(first)] == 0


class CopyServer(ThreadingHTTPServer):
    """One copy: answers chat completions naming its port; holds answers while `hold` is clear."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()
        super().__init__(("127.0.0.1", port), CopyHandler)


class CopyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        server: CopyServer = self.server  # type: ignore[assignment]
        server.arrived.set()
        if self.path.endswith("/stream"):  # headers at once, the end when released
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            server.hold.wait(HOLD_S)
            self.wfile.write(b"data: [DONE]\n\n")
            return
        server.hold.wait(HOLD_S)
        port = server.server_address[1]
        data = json.dumps({"object": "chat.completion", "port": port}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def adjacent_servers() -> tuple[CopyServer, CopyServer]:
    """Two copy servers on consecutive loopback ports."""
    for _ in range(50):
        port = free_port()
        if port >= 65535:
            continue
        try:
            first = CopyServer(port)
        except OSError:
            continue
        try:
            return first, CopyServer(port + 1)
        except OSError:
            first.server_close()
    pytest.skip("no two adjacent free loopback ports")


@pytest.fixture
def copies() -> Iterator[tuple[UpstreamClient, list[CopyServer]]]:
    servers = list(adjacent_servers())
    threads = [threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    port = servers[0].server_address[1]
    provider = ProviderSettings(base_url=f"http://127.0.0.1:{port}/v1", copies=2, command=["x", "{port}"],
                                timeout_s=HOLD_S + 5)
    client = UpstreamClient({"local": provider}, 8)
    yield client, servers
    client.close()
    for server in servers:
        server.hold.set()
        server.shutdown()
        server.server_close()


def test_a_request_goes_to_the_idle_copy(copies: tuple[UpstreamClient, list[CopyServer]]) -> None:
    client, servers = copies
    for server in servers:
        server.hold.clear()
    held = client.submit_json("local", "chat/completions", {"messages": []})
    deadline = time.monotonic() + HOLD_S
    while not any(server.arrived.is_set() for server in servers) and time.monotonic() < deadline:
        time.sleep(0.01)
    busy = next(server for server in servers if server.arrived.is_set())
    idle = next(server for server in servers if server is not busy)
    idle.hold.set()
    assert client.post_json("local", "chat/completions", {"messages": []})["port"] == idle.server_address[1]
    busy.hold.set()
    assert held.result(HOLD_S)["port"] == busy.server_address[1]
    assert client.in_flight("local") == [0, 0]
    ports = {client.post_json("local", "chat/completions", {"messages": []})["port"] for _ in range(2)}
    assert ports == {server.server_address[1] for server in servers}  # both idle: they take turns


def test_finished_streams_and_failed_calls_free_their_copy(copies: tuple[UpstreamClient, list[CopyServer]]) -> None:
    client, servers = copies
    for server in servers:
        server.hold.clear()
    stream = client.open_stream("local", "stream", {"messages": []})
    assert sorted(client.in_flight("local")) == [0, 1]
    for server in servers:
        server.hold.set()
    list(stream.events(HOLD_S))
    stream.close()
    assert client.in_flight("local") == [0, 0]
    servers[1].server_close()  # refuses connections from now on
    for _ in range(2):
        try:
            client.post_json("local", "chat/completions", {"messages": []})
        except UpstreamUnavailable:
            pass
    assert client.in_flight("local") == [0, 0]
