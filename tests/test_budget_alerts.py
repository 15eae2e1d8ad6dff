"""Budget alerts: the pure core (thresholds, body, signature, backoff), the claim shared by workers, and the webhook
received by a loopback HTTP server: once at 80 %, once at 100 %, retried after a 500, never twice."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from gateway import db
from gateway.accounting import admin_service, budget_alerts
from gateway.accounting.budget_alerts import BudgetAlerts, alert_body, backoff_s, crossed, signature
from gateway.accounting.budget_spend import BudgetState
from gateway.accounting.budgets import Budget
from gateway.config import BudgetAlertSettings
from gateway.tables import BudgetAlert
from tests.fake_upstream import JsonReply, chat_completion
from tests.live_gateway import live_gateway
from tests.polling import wait_until

DAY = datetime.datetime(2026, 12, 7)
MICRO = 1_000_000


def state(spent: float, amount: float = 10, start: datetime.datetime = DAY) -> BudgetState:
    """Account 1's daily budget (row 1) of `amount` credits, with `spent` of it spent."""
    budget = Budget(account_id=1, amount=int(amount * MICRO), period="daily", id=1)
    return BudgetState(budget, int(spent * MICRO), start, start + datetime.timedelta(days=1))


class Receiver:
    """A loopback webhook: records every POST (headers and JSON), answering the statuses queued in `fail_with` first."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_with: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    status = receiver.fail_with.pop(0) if receiver.fail_with else 204
                    receiver.received.append((dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def alerts(self) -> list[dict]:
        with self.lock:
            return [json.loads(body) for _, body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.close()


@pytest.mark.parametrize(("spent", "expected"), [
    (0, []), (7.99, []), (8, [8000]), (9.99, [8000]), (10, [8000, 10000]), (12, [8000, 10000]),
])
def test_crossed_thresholds_are_exact(spent: float, expected: list[int]) -> None:
    assert crossed(state(spent), (0.8, 1.0)) == expected


def test_a_zero_budget_sends_nothing() -> None:
    assert crossed(state(0, amount=0), (0.8, 1.0)) == []


def test_body_names_the_budget_its_period_and_spend() -> None:
    body = json.loads(alert_body(state(8.5), 8000, DAY + datetime.timedelta(hours=3)))
    assert body["budget"] == {"id": "budget:1", "kind": "account", "target": "account 1", "key_id": None,
                              "model": None, "tag": None, "period": "daily", "amount": 10,
                              "description": "the account's daily budget of 10.0 credits"}
    assert (body["account_id"], body["spent"], body["threshold"]) == (1, 8.5, 0.8)
    assert (body["period_start"], body["resets_at"]) == ("2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z")
    assert body["id"] == "budget:1:2026-12-07T00:00:00Z:8000"


def test_signature_is_hmac_sha256_of_the_body() -> None:
    expected = hmac.new(b"s3cret", b'{"a":1}', hashlib.sha256).hexdigest()
    assert signature("s3cret", '{"a":1}') == f"sha256={expected}"


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(retry) for retry in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff_s(30) == budget_alerts.MAX_BACKOFF_S


@pytest.fixture
def database(database_url: str) -> Iterator[None]:
    db.bind(database_url)
    db.upgrade()
    yield
    db.database.close_all()


def alerts_of(url: str, states: list[BudgetState], **options) -> BudgetAlerts:
    """A worker's alerts over a fixed list of budget states (the spend is the test's to move)."""
    settings = BudgetAlertSettings(url=url, **options)
    return BudgetAlerts(settings, lambda accounts, now: list(states), clock=lambda: DAY + datetime.timedelta(hours=1),
                        full_scan_interval_s=0)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_fires_once_at_80_and_once_at_100_with_two_workers(database, receiver, monkeypatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    states: list[BudgetState] = [state(5)]
    workers = [alerts_of(receiver.url, states, secret_env="HOOK_SECRET") for _ in range(2)]
    for spent in (5, 8.2, 8.9, 10, 10):
        states[:] = [state(spent)]
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=lambda w=w, b=barrier: (b.wait(), w.scan())) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [alert["threshold"] for alert in receiver.alerts()] == [0.8, 1.0]
    for headers, body in receiver.received:
        assert headers["X-Gateway-Signature"] == signature("s3cret", body.decode())
    with db.database.connection_context():
        assert [(row.threshold, row.status, row.attempts) for row in BudgetAlert.select().order_by(BudgetAlert.id)] == [
            (8000, "sent", 1), (10000, "sent", 1)]


def test_a_new_period_alerts_again(database, receiver) -> None:
    states = [state(9)]
    worker = alerts_of(receiver.url, states)
    worker.scan()
    states[:] = [state(9, start=DAY + datetime.timedelta(days=1))]
    worker.scan()
    assert [alert["period_start"] for alert in receiver.alerts()] == ["2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z"]


def test_retried_after_a_500(database, receiver) -> None:
    receiver.fail_with = [500, 503]
    worker = alerts_of(receiver.url, [state(8)], retries=2)
    assert worker.scan() == 1
    assert len(receiver.received) == 3
    assert len({body for _, body in receiver.received}) == 1  # the same bytes every try
    with db.database.connection_context():
        row = BudgetAlert.get()
        assert (row.status, row.attempts, row.last_error) == ("sent", 3, None)


def test_given_up_after_its_retries(database, receiver) -> None:
    receiver.fail_with = [500, 500]
    worker = alerts_of(receiver.url, [state(8)], retries=1)
    assert worker.scan() == 0
    with db.database.connection_context():
        row = BudgetAlert.get()
        assert (row.status, row.attempts, row.last_error) == ("failed", 2, "HTTP 500")


def test_a_claim_whose_sender_died_is_taken_over(database, receiver) -> None:
    dead = alerts_of("http://127.0.0.1:9/unused", [state(8)])
    with db.database.connection_context():
        dead.claim(state(8), 8000, DAY - datetime.timedelta(hours=2))  # claimed, never sent
    assert alerts_of(receiver.url, [state(8)]).scan() == 1
    assert [alert["threshold"] for alert in receiver.alerts()] == [0.8]


def test_the_thread_scans_until_closed(database, receiver) -> None:
    worker = alerts_of(receiver.url, [state(10)])
    worker.scan_interval_s = 0.05
    worker.start()
    wait_until(lambda: len(receiver.received) == 2, "both alerts")
    worker.close()
    worker.close()
    assert not worker._thread.is_alive()


PRICE_PER_TOKEN = 1000  # micro-credits per output token
COST = PRICE_PER_TOKEN * 10  # each request below: 10 output tokens
PAID = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


def full_cost_responder(path, body):
    usage = {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}
    return JsonReply(chat_completion(model=body["model"], usage=usage))


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_two_gunicorn_workers_send_each_alert_once(tmp_path, database_url, app, fake_upstream, receiver):
    """A key's daily limit worth 10 requests: the 8th sends the 80 % alert (retried after a 500), the 10th the
    100 % one, the 11th is refused; the receiver gets each once, though both workers scan."""
    if budget_alerts.EXTENSION not in app.extensions:
        pytest.skip("gateway/lifecycle.py does not start the budget alerts yet (see the budget-admin report)")
    with db.database.connection_context():
        key, secret = admin_service.create_key(admin_service.KeySpec(
            "alerted", limits={"spend_limit": 10 * COST}, credits=100 * COST, limit_reset="daily"), by_operator=True)
    fake_upstream.responder = full_cost_responder
    receiver.fail_with = [500]
    config = (f'[database]\nurl = "{database_url}"\n[providers.fake]\nbase_url = "{fake_upstream.base_url}"\n'
              f'[models.paid-model]\nprovider = "fake"\noutput_price_per_mtok = {PRICE_PER_TOKEN}\n'
              f'[budget_alerts]\nurl = "{receiver.url}"\nretries = 2\n')
    headers = {"Authorization": f"Bearer {secret}"}
    with live_gateway(tmp_path, config, workers=2, threads=4) as served:
        send = lambda: requests.post(f"{served.base_url}/v1/chat/completions", json=PAID, headers=headers, timeout=30)  # noqa: E731
        assert [send().status_code for _ in range(8)] == [200] * 8
        wait_until(lambda: len(receiver.alerts()) == 2, "the 80 % alert, once refused with a 500")
        assert [send().status_code for _ in range(3)] == [200, 200, 402]
        wait_until(lambda: sent_alerts() == 2, "the 100 % alert")
    alerts = receiver.alerts()
    assert [(alert["threshold"], alert["spent"]) for alert in alerts] == [(0.8, 0.08), (0.8, 0.08), (1.0, 0.1)]
    assert alerts[0] == alerts[1]  # the retry sent the same alert
    assert alerts[2]["budget"] | {"description": None} == {
        "id": f"key:{key.id}", "kind": "key", "target": f"key {key.id}", "key_id": key.id, "model": None, "tag": None,
        "period": "daily", "amount": 0.1, "description": None}
    assert alerts[2]["account_id"] == key.account_id


def sent_alerts() -> int:
    with db.database.connection_context():
        return BudgetAlert.select().where(BudgetAlert.status == "sent").count()
