"""Real gunicorn, 20 streams in flight: SIGTERM, SIGHUP and a USR2 binary upgrade let them finish,
settled, with nothing left open."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time

import pytest
import requests

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.tables import LedgerEntry, Reservation, UsageEntry
from tests.fake_upstream import StreamReply, chat_chunk, usage_chunk
from tests.live_gateway import accepting, children, live_gateway
from tests.test_metrics_workers import scrape

STREAMS = 20
CHUNKS = 12
CHUNK_GAP_S = 0.15  # each stream lasts about 2 s: the signal lands in the middle of all of them
PRICE = 1_000_000  # credits per 1M output tokens: one credit per token
OUTPUT_TOKENS = 7
BOUND_S = 30.0


def slow_stream(path, body):
    events = [(0, chat_chunk(role="assistant", content=""))]
    events += [(CHUNK_GAP_S, chat_chunk(f"w{index} ")) for index in range(CHUNKS)]
    events += [(0, chat_chunk(finish="stop")), (0, usage_chunk(11, OUTPUT_TOKENS))]
    return StreamReply(events)


class Stream(threading.Thread):
    """One streaming chat request: counts its chunks and whether it ended with [DONE]."""

    def __init__(self, port: int, secret: str) -> None:
        super().__init__(daemon=True)
        self.port, self.secret = port, secret
        self.started = threading.Event()
        self.chunks = 0
        self.done = False
        self.error: str | None = None

    def run(self) -> None:
        body = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                "max_tokens": 20}
        try:
            with requests.post(f"http://127.0.0.1:{self.port}/v1/chat/completions", json=body, stream=True,
                               headers={"Authorization": f"Bearer {self.secret}"}, timeout=BOUND_S) as response:
                for line in response.iter_lines():
                    if line.startswith(b"data: "):
                        self.chunks += 1
                        self.started.set()
                        self.done = self.done or line == b"data: [DONE]"
        except requests.RequestException as exc:
            self.error = repr(exc)
        finally:
            self.started.set()


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def streamer(tmp_path, fake_upstream, **server) -> tuple[int, str, dict]:
    """A funded key of a new account (account id, secret) and the tables of a gateway streaming slowly."""
    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    db.bind(database)
    db.upgrade()
    with db.database.connection_context():
        key, secret = create_key("streamer")
        credits.grant_credits(key.account_id, credits.to_micro(10_000))
    fake_upstream.responder = slow_stream
    tables = {
        "server": {"workers": 2, "threads": 16, "access_log": str(tmp_path / "access.log"), **server},
        "database": {"url": database},
        "limits": {"max_streams_per_key": STREAMS, "max_streams_per_account": STREAMS},
        "providers": {"fake": {"base_url": fake_upstream.base_url}},
        "models": {"paid-model": {"provider": "fake", "output_price_per_mtok": PRICE}},
    }
    return key.account_id, secret, tables


def streams_in_flight(port: int, secret: str) -> list[Stream]:
    """STREAMS streaming requests, each past its first chunk."""
    streams = [Stream(port, secret) for _ in range(STREAMS)]
    for stream in streams:
        stream.start()
    for stream in streams:
        assert stream.started.wait(BOUND_S)
    return streams


def assert_finished_and_settled(streams: list[Stream], account_id: int) -> None:
    """Every stream ended with [DONE], charged once at the exact cost, its hold settled, nothing open."""
    assert [stream.error for stream in streams] == [None] * STREAMS
    assert all(stream.done and stream.chunks == CHUNKS + 3 for stream in streams)
    with db.database.connection_context():
        rows = list(UsageEntry.select().where(UsageEntry.account == account_id))
        charges = [entry.amount for entry in LedgerEntry.select().where(
            LedgerEntry.account == account_id, LedgerEntry.kind == "charge")]
        holds = [hold.status for hold in Reservation.select().where(Reservation.account == account_id)]
        open_holds = Reservation.select().where(Reservation.status == "open").count()
        balance = credits.balance_of(account_id)
    assert len(rows) == STREAMS and {row.status for row in rows} == {200}
    assert {row.cost for row in rows} == {credits.to_micro(OUTPUT_TOKENS)}
    assert len(charges) == STREAMS
    assert sum(charges) == credits.to_micro(OUTPUT_TOKENS * STREAMS) == credits.to_micro(10_000) - balance
    assert holds == ["settled"] * STREAMS and open_holds == 0


def served_by(access_log, route: str) -> int:
    """The pid of the worker that answered the one request to `route`."""
    lines = [json.loads(line) for line in access_log.read_text().splitlines()]
    [line] = [line for line in lines if line["route"] == route]
    return line["pid"]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_streams_in_flight_finish_and_are_settled(tmp_path, fake_upstream, stop_signal):
    account_id, secret, tables = streamer(tmp_path, fake_upstream)
    with live_gateway(tmp_path, tables) as server:
        old_workers = set(server.workers())
        streams = streams_in_flight(server.port, secret)
        server.process.send_signal(stop_signal)
        if stop_signal == signal.SIGHUP:
            wait_for(lambda: len(set(server.workers()) - old_workers) == 2, "new workers after the reload")
            new = requests.get(f"http://127.0.0.1:{server.port}/v1/models", timeout=10,
                               headers={"Authorization": f"Bearer {secret}", "Connection": "close"})
            assert new.status_code == 200
        for stream in streams:
            stream.join(BOUND_S)
        if stop_signal == signal.SIGTERM:
            server.process.wait(BOUND_S)  # the master left once its workers had finished

    assert_finished_and_settled(streams, account_id)
    if stop_signal == signal.SIGHUP:
        assert served_by(tmp_path / "access.log", "/v1/models") not in old_workers  # new connections: new workers


def test_usr2_binary_upgrade_under_streams(tmp_path, fake_upstream):
    """gunicorn's procedure: USR2 starts a new master (`<pidfile>.2`) beside the old one; TERM to the old
    master then stops its workers gracefully (WINCH does that only for a daemonized master)."""
    pidfile = tmp_path / "gateway.pid"
    # held streams keep their threads: each worker must be able to hold all of them
    account_id, secret, tables = streamer(tmp_path, fake_upstream, pidfile=str(pidfile), threads=STREAMS + 4)
    release = threading.Event()  # the streams wait after their first chunk until the old workers stopped accepting
    fake_upstream.responder = lambda path, body: dataclasses.replace(slow_stream(path, body), release=release)
    with live_gateway(tmp_path, tables) as server:
        old_master, old_workers = server.process.pid, set(server.workers())
        streams = streams_in_flight(server.port, secret)
        new_master = server.binary_upgrade(pidfile, workers=2)
        new_workers = set(children(new_master))
        assert not new_workers & old_workers and int(pidfile.read_text()) == old_master
        assert all(accepting(pid, server.port) for pid in old_workers)  # both masters' workers accept
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: not any(accepting(pid, server.port) for pid in old_workers), "old workers stop accepting")
        assert [(stream.done, stream.error) for stream in streams] == [(False, None)] * STREAMS  # still held
        new = requests.get(f"http://127.0.0.1:{server.port}/v1/models", timeout=10,
                           headers={"Authorization": f"Bearer {secret}", "Connection": "close"})
        assert new.status_code == 200
        release.set()
        for stream in streams:
            stream.join(BOUND_S)
        server.process.wait(BOUND_S)  # the old master left once its workers had finished
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(new_master), "new master promoted")
        assert set(children(new_master)) == new_workers
        assert {scrape(server) for _ in range(6)} == {STREAMS}  # the new workers count the old workers' streams

    assert_finished_and_settled(streams, account_id)
    assert served_by(tmp_path / "access.log", "/v1/models") in new_workers
