"""Streams whose clients never read: a share of the threads per key, dropped after the send timeout, settled as 499.

On a real server, with two tenants (the attacker's key and the probes').
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

from gateway import db
from gateway.errors import CLIENT_CLOSED
from gateway.tables import UsageEntry
from tests import test_serving_worker
from tests.fake_upstream import FakeUpstream, StreamReply, chat_chunk, default_responder
from tests.live_gateway import rss_kib
from tests.slow_clients import Probes, answered_ratio, percentile, request

serve = test_serving_worker.serve  # the fixture, shared
CHAT = test_serving_worker.CHAT
READERS = 34
SEND_TIMEOUT_S = 4.0
ATTACK_S = SEND_TIMEOUT_S  # probes while every admitted stream is held
BIG_STREAM = StreamReply([(0, chat_chunk("x" * 1000))] * 5000)  # ~5 MB per stream, far beyond socket buffers


def big_streams(path: str, body: dict[str, Any]) -> Any:
    """Every streamed chat is 5 MB; the rest as usual."""
    return BIG_STREAM if body.get("stream") else default_responder(path, body)


def open_unread_stream(port: int, key: str) -> tuple[socket.socket, bytes]:
    """Ask for a stream on a socket with a tiny receive buffer; read only the status line."""
    body = json.dumps({**CHAT, "stream": True}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (key.encode(), len(body), body))
    return sock, sock.recv(12)


def settled_disconnects() -> int:
    with db.database.connection_context():
        return UsageEntry.select().where(UsageEntry.status == CLIENT_CLOSED).count()


class RssSampler:
    """Peak RSS of each process, sampled every 0.2 s until stopped."""

    def __init__(self, pids: list[int]) -> None:
        self.peak = {pid: rss_kib(pid) for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            for pid in self.peak:
                self.peak[pid] = max(self.peak[pid], rss_kib(pid))

    def stop(self) -> dict[int, int]:
        self._stop.set()
        self._thread.join(2)
        return self.peak


def test_never_reading_streams_are_capped_dropped_and_settled(
    serve, fake_upstream: FakeUpstream, make_key, auth_headers: dict[str, str]
) -> None:
    fake_upstream.responder = big_streams
    server = serve(send_timeout_s=SEND_TIMEOUT_S)
    attacker = make_key("attacker")
    for _ in range(3):  # warm both workers up before the baseline
        request(server.port, "POST", "/v1/chat/completions", CHAT, auth_headers)
    before = {pid: rss_kib(pid) for pid in server.workers()}
    sampler = RssSampler(list(before))
    probes = Probes([
        lambda: request(server.port, "GET", "/healthz"),
        lambda: request(server.port, "POST", "/v1/chat/completions", CHAT, auth_headers),
    ], pause_s=0.2)
    streams = [open_unread_stream(server.port, attacker) for _ in range(READERS)]
    statuses = [status for _, status in streams]
    admitted = statuses.count(b"HTTP/1.1 200")
    try:
        results = probes.run_for(ATTACK_S)
        deadline = time.monotonic() + 10  # the clients are still connected: only the send timeout ends them
        while settled_disconnects() < admitted and time.monotonic() < deadline:
            time.sleep(0.2)
        dropped = settled_disconnects()
    finally:
        for sock, _ in streams:
            sock.close()
    peak = sampler.stop()
    growth_mib = max(peak[pid] - before[pid] for pid in before) / 1024
    print(f"\n{READERS} unread streams: {admitted} admitted, {statuses.count(b'HTTP/1.1 429')} got 429; "
          f"{len(results)} probes, {answered_ratio(results):.0%} answered, p99 {percentile(results, 0.99):.3f} s; "
          f"worker RSS {sorted(before.values())} KiB before, peak growth {growth_mib:.1f} MiB; "
          f"{dropped} dropped by the send timeout and settled as 499")
    # with several tenants, a key without a stream limit holds at most [limits] stream_share (0.75) of a
    # worker's 16 threads: 12 per worker, so 12 to 24 on 2 workers, as the connections fell
    assert 12 <= admitted <= 24 and statuses.count(b"HTTP/1.1 429") == READERS - admitted
    assert answered_ratio(results) == 1.0
    assert fake_upstream.stream_aborted.wait(5), "the upstream streams were never cut"
    assert dropped == admitted
    assert growth_mib < 40
