"""Real gunicorn, one key, 20 streams held open at once on 3 workers of 16 threads: none refused.

The old default (`max_streams_per_key = 8` per worker) refused one of them whenever a worker
took more than 8 of the 20 connections, which the workers' uneven shares make likely.
"""

from __future__ import annotations

import threading

import requests

from gateway import db
from gateway.accounting.keys import create_key
from tests.fake_upstream import StreamReply, chat_chunk, usage_chunk
from tests.live_gateway import live_gateway
from tests.test_graceful_restarts import wait_for

STREAMS = 20
BOUND_S = 60.0


class HeldStream(threading.Thread):
    """One streaming chat request: its status, whether it got its first chunk, whether it ended with [DONE]."""

    def __init__(self, url: str, secret: str) -> None:
        super().__init__(daemon=True)
        self.url, self.secret = url, secret
        self.started = threading.Event()
        self.status: int | None = None
        self.done = False
        self.error: str | None = None

    def run(self) -> None:
        body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        try:
            with requests.post(f"{self.url}/v1/chat/completions", json=body, stream=True, timeout=BOUND_S,
                               headers={"Authorization": f"Bearer {self.secret}"}) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    self.started.set()
                    self.done = self.done or line == b"data: [DONE]"
        except requests.RequestException as exc:
            self.error = repr(exc)
        finally:
            self.started.set()


def held_streams(tmp_path, fake_upstream) -> tuple[dict, str, threading.Event]:
    """A migrated database with one key, and the fake holding every stream after its first chunk until the event
    is set: (the gateway's config tables, the key's secret, the event)."""
    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    db.bind(database)
    db.upgrade()
    with db.database.connection_context():
        _, secret = create_key("one app")
    release = threading.Event()
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk(role="assistant", content="")), (0, chat_chunk("held")), (0, chat_chunk(finish="stop")),
         (0, usage_chunk(3, 1))], release=release)
    tables = {"database": {"url": database}, "providers": {"fake": {"base_url": fake_upstream.base_url}},
              "models": {"test-model": {"provider": "fake"}}}
    return tables, secret, release


def test_one_key_holds_20_streams_on_3_workers(tmp_path, fake_upstream):
    tables, secret, release = held_streams(tmp_path, fake_upstream)
    # 32 threads a worker: however the kernel spreads the 20 connections over the workers (a loaded machine may
    # hand most to one), every stream has a thread; with 16, a worker handed 17 held the 17th unanswered.
    with live_gateway(tmp_path, tables, workers=3, threads=32) as server:
        streams = [HeldStream(server.base_url, secret) for _ in range(STREAMS)]
        for stream in streams:
            stream.start()
        wait_for(lambda: all(stream.started.is_set() for stream in streams), "every stream answered")
        held_at_once = sum(stream.status == 200 and stream.error is None for stream in streams)
        release.set()
        for stream in streams:
            stream.join(BOUND_S)
    assert [stream.status for stream in streams] == [200] * STREAMS
    assert held_at_once == STREAMS
    assert all(stream.done and stream.error is None for stream in streams)


def test_a_worker_whose_threads_are_all_busy_leaves_new_connections_to_the_others(tmp_path, fake_upstream):
    """2 workers of 1 thread: while a held stream takes one worker's thread, that worker accepts nothing, so
    every new connection is answered by the other at once (stock gthread would queue about half of them behind
    the stream, unanswered until it ends: they would time out here)."""
    tables, secret, release = held_streams(tmp_path, fake_upstream)
    with live_gateway(tmp_path, tables, workers=2, threads=1) as server:
        held = HeldStream(server.base_url, secret)
        held.start()
        wait_for(held.started.is_set, "the held stream's first chunk")
        statuses = [requests.get(f"{server.base_url}/v1/models", timeout=20,  # a new connection each time
                                 headers={"Authorization": f"Bearer {secret}"}).status_code for _ in range(12)]
        still_held = not held.done and held.error is None
        release.set()
        held.join(BOUND_S)
    assert statuses == [200] * 12 and still_held
    assert held.done and held.error is None
