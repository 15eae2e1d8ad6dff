"""Accounting across three gunicorn workers: a worker killed with -9 loses nothing; revocations reach all."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Self

import pytest
import requests

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.tables import LedgerEntry, Reservation, UsageEntry
from tests.fake_upstream import JsonReply, chat_completion
from tests.served import Served, gateway_serve

PRICE_PER_TOKEN = 1000
MAX_TOKENS = 10
COST = PRICE_PER_TOKEN * MAX_TOKENS
GRANT = 100_000 * COST
PAID = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}
RESERVATION_TTL_S = 2
KEY_CACHE_TTL_S = 1
CLIENTS = 12
BOUND_S = 20  # no wait below takes longer, however slow the machine


def config(database_url: str, upstream_url: str) -> str:
    return (f'[database]\nurl = "{database_url}"\n'
            f'[providers.fake]\nbase_url = "{upstream_url}"\n'
            f'[models.paid-model]\nprovider = "fake"\noutput_price_per_mtok = {PRICE_PER_TOKEN}\n'
            f"[billing]\nreservation_ttl_s = {RESERVATION_TTL_S}\n"
            f"[auth]\nkey_cache_ttl_s = {KEY_CACHE_TTL_S}\n")


def slow_full_cost(path, body):
    time.sleep(0.02)  # requests are in flight when the worker dies
    usage = {"prompt_tokens": 5, "completion_tokens": MAX_TOKENS, "total_tokens": 5 + MAX_TOKENS}
    return JsonReply(chat_completion(model=body["model"], usage=usage))


@pytest.fixture
def funded(database_url):
    """A key whose account holds GRANT micro-credits; (secret, key id, account id)."""
    db.bind(database_url)
    db.upgrade()
    with db.database.connection_context():
        key, secret = create_key("payer")
        credits.grant_credits(key.account_id, GRANT)
    return secret, key.id, key.account_id


def wait_for(condition: Callable[[], bool], what: Callable[[], str]) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what()}")
        time.sleep(0.1)


class Load:
    """CLIENTS threads sending priced requests, each with its own x-request-id, until stopped."""

    def __init__(self, base_url: str, secret: str) -> None:
        self.seen: list[tuple[str, int | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(base_url, secret)) for _ in range(CLIENTS)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(BOUND_S)

    def successes(self) -> int:
        return sum(status == 200 for _, status in self.seen)

    def statuses(self) -> Counter:
        return Counter(status for _, status in self.seen)

    def _client(self, base_url: str, secret: str) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            request_id = uuid.uuid4().hex
            try:
                status = session.post(f"{base_url}/v1/chat/completions", json=PAID, timeout=10,
                                      headers={"X-API-Key": secret, "x-request-id": request_id}).status_code
            except requests.RequestException:
                status, session = None, requests.Session()
            self.seen.append((request_id, status))


def open_holds() -> int:
    with db.database.connection_context():
        return Reservation.select().where(Reservation.status == "open").count()


def kill_one_worker_mid_run(served: Served, load: Load) -> None:
    wait_for(lambda: load.successes() >= 30, lambda: f"requests before the kill: {load.statuses()}")
    os.kill(served.worker_pids()[0], signal.SIGKILL)
    after = load.successes()
    wait_for(lambda: load.successes() >= after + 30, lambda: f"requests after the kill: {load.statuses()}")


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_worker_killed_mid_run_loses_no_charge_and_leaves_no_hold(tmp_path, database_url, fake_upstream, funded):
    secret, _, account_id = funded
    fake_upstream.responder = slow_full_cost
    with gateway_serve(config(database_url, fake_upstream.base_url), tmp_path) as served:
        with Load(served.base_url, secret) as load:
            kill_one_worker_mid_run(served, load)
        wait_for(lambda: open_holds() == 0, lambda: f"the sweep of the killed worker's {open_holds()} holds")
    with db.database.connection_context():
        charged = sum(e.amount for e in LedgerEntry.select().where(LedgerEntry.account == account_id,
                                                                   LedgerEntry.kind == "charge"))
        drop = GRANT - credits.balance_of(account_id)
        rows = list(UsageEntry.select().where(UsageEntry.account == account_id))
    assert charged == drop == sum(row.cost for row in rows) > 0
    rows_per_request = Counter(row.request_id for row in rows)
    answered = [request_id for request_id, status in load.seen if status == 200]
    assert all(rows_per_request[request_id] == 1 for request_id in answered)
    assert max(rows_per_request.values()) == 1
    assert {row.cost for row in rows if row.request_id in set(answered)} == {COST}


def test_a_revoked_key_is_refused_by_every_worker_within_the_cache_ttl(tmp_path, database_url, fake_upstream,
                                                                      funded):
    secret, key_id, _ = funded
    admin = {"Authorization": "Bearer adm"}
    fresh = {"X-API-Key": secret, "Connection": "close"}  # each request may reach any worker
    with gateway_serve(config(database_url, fake_upstream.base_url), tmp_path,
                       env={"GATEWAY_ADMIN_TOKEN": "adm"}) as served:
        models = f"{served.base_url}/v1/models"
        assert {requests.get(models, headers=fresh, timeout=10).status_code for _ in range(30)} == {200}
        assert requests.delete(f"{served.base_url}/admin/keys/{key_id}", headers=admin, timeout=10).ok
        time.sleep(KEY_CACHE_TTL_S + 0.2)  # the documented delay
        assert {requests.get(models, headers=fresh, timeout=10).status_code for _ in range(30)} == {401}
