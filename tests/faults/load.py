"""Concurrent paying clients against a served gateway (gunicorn workers), and the waits of the load tests.

Each client thread repeats one request with its own `x-request-id` until stopped, and records
what it saw: the status (None when the connection broke), whether a stream ended with `[DONE]`,
and the body of every error, so a test can match answers to usage rows and check error shapes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import requests

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from tests.faults.books import Payer

PRICE_PER_TOKEN = 1000  # micro-credits per output token of `paid-model`
BOUND_S = 20  # no wait below takes longer, however slow the machine
REQUEST_TIMEOUT_S = 10


@dataclass(frozen=True)
class Seen:
    """One request as its client saw it."""

    request_id: str
    status: int | None  # None: the connection broke or timed out
    completed: bool  # a 200 whose stream ended with [DONE] (or a whole JSON body)
    error: str = ""  # the body of an answer that did not complete (an error, or a stream that ended in one)


Send = Callable[[requests.Session, str], Seen]


def fund(database_url: str, grant: int) -> Payer:
    """Migrate the database and create a key whose account holds `grant` micro-credits."""
    db.bind(database_url)
    db.upgrade()
    with db.database.connection_context():
        key, secret = create_key("payer")
        credits.grant_credits(key.account_id, grant)
    return Payer(secret, key.account_id, grant)


def priced_config(database_url: str, upstream_url: str, reservation_ttl_s: int, key_cache_ttl_s: float) -> str:
    """A gateway config: `paid-model` on the upstream at PRICE_PER_TOKEN per output token; short TTLs."""
    return (f'[database]\nurl = "{database_url}"\n'
            f'[providers.fake]\nbase_url = "{upstream_url}"\n'
            f'[models.paid-model]\nprovider = "fake"\noutput_price_per_mtok = {PRICE_PER_TOKEN}\n'
            f"[billing]\nreservation_ttl_s = {reservation_ttl_s}\n"
            f"[auth]\nkey_cache_ttl_s = {key_cache_ttl_s}\n")


def wait_for(condition: Callable[[], bool], what: Callable[[], str]) -> None:
    """Poll `condition` until true, or fail after BOUND_S naming what never happened."""
    deadline = time.monotonic() + BOUND_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what()}")
        time.sleep(0.1)


def post_json(base_url: str, payer: Payer, body: dict) -> Send:
    """A client action: POST /v1/chat/completions and read the JSON answer."""

    def send(session: requests.Session, request_id: str) -> Seen:
        answer = session.post(f"{base_url}/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S,
                              headers={**payer.headers, "x-request-id": request_id})
        ok = answer.status_code == 200
        return Seen(request_id, answer.status_code, ok, "" if ok else answer.text)

    return send


def post_stream(base_url: str, payer: Payer, body: dict) -> Send:
    """A client action: POST a streaming chat and read it to the end."""

    def send(session: requests.Session, request_id: str) -> Seen:
        with session.post(f"{base_url}/v1/chat/completions", json={**body, "stream": True}, stream=True,
                          timeout=REQUEST_TIMEOUT_S, headers={**payer.headers, "x-request-id": request_id}) as answer:
            text = answer.content.decode()
        completed = answer.status_code == 200 and text.endswith("data: [DONE]\n\n")
        return Seen(request_id, answer.status_code, completed, "" if completed else text)

    return send


class Load:
    """One client thread per action, each repeating its action until stopped."""

    def __init__(self, sends: list[Send]) -> None:
        self.seen: list[Seen] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(send,)) for send in sends]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(BOUND_S)

    def successes(self) -> int:
        return sum(seen.completed for seen in self.seen)

    def statuses(self) -> Counter:
        return Counter(seen.status for seen in self.seen)

    def _client(self, send: Send) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            request_id = uuid.uuid4().hex
            try:
                seen = send(session, request_id)
            except requests.RequestException as exc:
                seen, session = Seen(request_id, None, False, repr(exc)[:300]), requests.Session()
            self.seen.append(seen)
