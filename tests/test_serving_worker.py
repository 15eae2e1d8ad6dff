"""The gunicorn worker of `gateway serve`: whole requests reach threads, slow clients are dropped (real server)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_upstream import FakeUpstream, JsonReply, chat_completion
from tests.live_gateway import LiveGateway, start_gateway
from tests.polling import wait_until
from tests.slow_clients import (
    CLOSE_THEN_TRICKLE,
    SLOW_BODY,
    SLOW_HEADER,
    Probes,
    SlowSenders,
    answered_ratio,
    percentile,
    request,
)

ATTACK_S = 6.0
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


def served_tables(database_url: str, fake_upstream: FakeUpstream, **server: Any) -> dict[str, Any]:
    """The config of a served gateway on the fake upstream: 2 workers x 16 threads."""
    return {
        "server": {"workers": 2, "threads": 16, **server},
        "database": {"url": database_url},
        "providers": {"fake": {"base_url": fake_upstream.base_url, "timeout_s": 5, "connect_timeout_s": 2}},
        "models": {"test-model": {"provider": "fake", "upstream_model": "upstream-model"}},
    }


@pytest.fixture
def serve(tmp_path: Path, database_url: str, fake_upstream: FakeUpstream, app) -> Iterator[Callable[..., Any]]:
    """Starts `gateway serve` with these [server] settings on the test database (migrated by `app`)."""
    started: list[LiveGateway] = []

    def start(**server: Any) -> LiveGateway:
        # killed, not stopped gracefully: the tests leave hostile connections open
        started.append(start_gateway(tmp_path, served_tables(database_url, fake_upstream, **server), graceful=False))
        return started[-1]

    yield start
    for gateway in started:
        gateway.stop()


def exchange(port: int, data: bytes, wait_s: float = 5.0) -> bytes:
    """Send raw bytes, then read until the server closes or `wait_s` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        return received


@pytest.mark.parametrize("prefix", [SLOW_HEADER, SLOW_BODY], ids=["slow-headers", "slow-bodies"])
def test_forty_slow_clients_leave_probes_answered(serve, auth_headers: dict[str, str], prefix: bytes) -> None:
    server = serve(client_timeout_s=3.0)
    probes = Probes([
        lambda: request(server.port, "GET", "/healthz"),
        lambda: request(server.port, "POST", "/v1/chat/completions", CHAT, auth_headers),
    ], pause_s=0.2)
    with SlowSenders(server.port, prefix, count=40) as attack:
        wait_until(lambda: attack.connects >= 40, "every attacker connected and holding on")
        results = probes.run_for(ATTACK_S)
    ratio = answered_ratio(results)
    print(f"\n{prefix[:40]!r}: {len(results)} probes, {ratio:.0%} answered within 5 s, "
          f"p99 {percentile(results, 0.99):.3f} s; {attack.connects} attacker connections, {attack.dropped} dropped")
    assert ratio >= 0.9
    assert attack.dropped > 0, "slow clients were never dropped"


def test_closes_linger_without_stalling_the_worker(serve) -> None:
    """gunicorn's close_graceful reads from a closing client for up to 2 s in the event loop itself."""
    server = serve()
    probes = Probes([lambda: request(server.port, "GET", "/healthz")], pause_s=0.1)
    with SlowSenders(server.port, CLOSE_THEN_TRICKLE, count=40, interval_s=0.2) as attack:
        results = probes.run_for(3.0)
    print(f"\n{attack.connects} closed connections still sending: {len(results)} probes, "
          f"{answered_ratio(results):.0%} answered, p99 {percentile(results, 0.99):.3f} s")
    assert answered_ratio(results) >= 0.9


def test_late_request_gets_408_from_the_event_loop(serve) -> None:
    server = serve(client_timeout_s=1.0)
    started = time.monotonic()
    answer = exchange(server.port, SLOW_HEADER, wait_s=5.0)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"code": "request_timeout"' in answer
    assert time.monotonic() - started < 4.0


def test_whole_requests_in_every_framing_are_served(serve, auth_headers: dict[str, str]) -> None:
    server = serve()
    key = auth_headers["Authorization"].encode()
    body = b'{"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}'
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: " + key + b"\r\n"
    # Content-Length, with a kept-alive second request pipelined behind it
    length = head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    health = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = exchange(server.port, length + health)
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer
    # chunked
    chunked = head + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    assert exchange(server.port, chunked).startswith(b"HTTP/1.1 200 ")


def test_expect_continue_gets_one_100_before_the_body(serve, auth_headers: dict[str, str]) -> None:
    server = serve()
    body = b'{"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}'
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth_headers["Authorization"].encode()
            + b"\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nConnection: close\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in answer, answer


def test_a_slow_reader_of_a_large_answer_is_not_dropped(serve, fake_upstream: FakeUpstream,
                                                        auth_headers: dict[str, str]) -> None:
    """The send timeout counts from the last byte the client took, not from the start of a write."""
    fake_upstream.responder = lambda path, body: JsonReply(chat_completion("x" * 14_000_000))  # > socket buffers
    server = serve(send_timeout_s=1.0)
    body = json.dumps(CHAT).encode()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Authorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (auth_headers["Authorization"].encode(), len(body), body))
        received, started = 0, time.monotonic()
        while chunk := sock.recv(65536):
            received += len(chunk)
            time.sleep(0.01)  # at most ~6 MB/s: what the socket buffers cannot hold takes over 1 s
    assert received > 14_000_000 and time.monotonic() - started > 1.0


def test_oversized_body_is_413_before_it_is_sent(serve) -> None:
    server = serve(max_body_bytes=2048)
    answer = exchange(server.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b'"code": "request_too_large"' in answer
