"""Failover through a live gateway (gunicorn workers) over three loopback fakes: what clients see, and the money.

- One fake crashes mid-load: no client sees an error (JSON, and streams that had not started), the
  dead fake is cooling down on every worker (each worker's own /admin/deployments, found through
  /proc), and after a restart on the same port traffic comes back once the cooldown has passed.
- What is retried and what is not: 429, 5xx, 529 and the provider's credential errors go to the next
  deployment; another 4xx is the client's answer; a stream broken after its first chunk ends with an
  error event, is never retried, and costs what was generated.
- Money: the ledger is the sum of the answering attempts' usage x price, each usage row names the
  deployment that answered and its attempts, and no hold stays open.

Shared cooldowns across workers and hosts (a 429 with Retry-After) are tests/test_routing_hosts.py.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway import db
from gateway.accounting.tokens import estimate_prompt_tokens, estimate_text_tokens
from gateway.config import ModelSettings
from gateway.tables import UsageEntry
from tests.faults.books import Payer, audit, open_holds
from tests.faults.load import Seen, fund, post_json, post_stream
from tests.live_gateway import LiveGateway, live_gateway
from tests.polling import wait_until
from tests.routing_fakes import (
    COMPLETION_TOKENS,
    INPUT_PRICE,
    OUTPUT_PRICE,
    PROMPT_TOKENS,
    ROUTED_MODEL,
    STREAM_PIECES,
    RoutingFake,
    routing_config,
    routing_fakes,
)

WORKERS = 2
THREADS = 8  # client threads of the mixed load
LOAD_REQUESTS = 200
KILL_AFTER = 60  # chat requests the fakes have received when one of them crashes
GRANT = 1_000_000_000  # micro-credits: holds of 8 requests in flight and every charge fit many times over
BACKUP_MODEL = "backup-model"
BACKUP_DEPLOYMENT = "d/backup-upstream"  # its one deployment's default name: provider/upstream_model
ADMIN_TOKEN = "routing-failover-admin"
ADMIN_ENV = {"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN}
PRICES = {model: ModelSettings(provider="a", input_price_per_mtok=INPUT_PRICE, output_price_per_mtok=OUTPUT_PRICE)
          for model in (ROUTED_MODEL, BACKUP_MODEL)}
HEALTHY = "healthy"
COOLING = "gateway_deployment_cooling"
ATTEMPTS = "gateway_deployment_requests_total"
RETRIES = "gateway_deployment_retries_total"
PROBE_CONNECTIONS = 64  # fresh connections tried before every worker has answered one
RETRIED_STATUSES = (429, 500, 502, 503, 529, 401, 403)  # each goes on to the next deployment
A_TIMEOUT_S = 1  # fake a's read timeout in the retry test
FAST_COOLDOWN = {"failures_to_cool": 2, "cooldown_s": 2, "window_s": 60, "state_refresh_s": 0.2}


def chat(stream: bool = False, text: str = "hi") -> dict[str, Any]:
    return {"model": ROUTED_MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 50,
            "stream": stream}


# -- which worker answered: the server side of a loopback connection, found in /proc ----------------------------

def connection_inode(server_port: int, client_port: int) -> str | None:
    """The socket inode of the server's end of the established loopback connection from `client_port`."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1].endswith(f":{server_port:04X}") and fields[2].endswith(f":{client_port:04X}")
                and fields[3] == "01"):  # 01: ESTABLISHED
            return fields[9]
    return None


def serving_worker(server: LiveGateway, client_port: int) -> int | None:
    """The pid of the gateway worker holding the connection from `client_port` (None once it is closed)."""
    inode = connection_inode(server.port, client_port)
    target = f"socket:[{inode}]"
    for pid in server.workers() if inode else []:
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # the worker went away
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(descriptor) == target:
                    return pid
            except OSError:  # closed meanwhile
                continue
    return None


def ask_every_worker(server: LiveGateway, path: str, headers: dict[str, str]) -> dict[int, Any]:
    """GET `path` until every worker has answered it once: {worker pid: its JSON answer}.

    Each try is a fresh keep-alive connection; which worker accepted it is read from /proc while it
    is still open, so an answer is known to be that worker's own view.
    """
    workers = set(server.workers())
    answers: dict[int, Any] = {}
    for _ in range(PROBE_CONNECTIONS):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            pid = serving_worker(server, connection.sock.getsockname()[1])
        finally:
            connection.close()
        assert response.status == 200, body
        if pid is not None:
            answers.setdefault(pid, json.loads(body))
        if set(answers) >= workers:
            return answers
    raise AssertionError(f"only workers {sorted(answers)} of {sorted(workers)} answered {PROBE_CONNECTIONS} "
                         f"connections")


def deployment_views(server: LiveGateway, name: str) -> dict[int, dict[str, Any]]:
    """Each worker's view of a deployment, by name (GET /admin/deployments): {worker pid: its state}."""
    answers = ask_every_worker(server, "/admin/deployments", {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    return {pid: next(state for state in answer["data"] if state["deployment"] == name)
            for pid, answer in answers.items()}


def metric(server: LiveGateway, name: str, **labels: str) -> float:
    """The sum of a series' samples over every worker (GET /metrics) whose labels include `labels`."""
    text = requests.get(f"{server.base_url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def statuses_on_every_worker(server: LiveGateway, name: str) -> set[str]:
    return {view["status"] for view in deployment_views(server, name).values()}


# -- clients ------------------------------------------------------------------------------------------------------

def sender(base_url: str, payer: Payer) -> Callable[[int], Seen]:
    """Request number i: JSON when even, a stream when odd; each thread keeps its own session."""
    sessions = threading.local()
    json_send = post_json(base_url, payer, chat())
    stream_send = post_stream(base_url, payer, chat())

    def send(index: int) -> Seen:
        request_id = uuid.uuid4().hex
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        try:
            return (stream_send if index % 2 else json_send)(sessions.session, request_id)
        except requests.RequestException as exc:
            sessions.session = requests.Session()
            return Seen(request_id, None, False, repr(exc)[:300])

    return send


def crash_between_answers(fake: RoutingFake) -> None:
    """Kill `fake` while none of its answers is half written: the requests in flight on it have had no byte.

    New requests wait for their first byte from now on; once those that were answering are done, the
    fake stops like a crash (listener closed, open connections reset).
    """
    arrived = fake.received
    fake.slow(60)
    deadline = time.monotonic() + 5
    while fake.in_flight > fake.received - arrived and time.monotonic() < deadline:
        time.sleep(0.005)  # past the bound, whatever is still in flight is waiting out the delay too
    fake.stop()
    fake.clear()


def usage_rows(payer: Payer) -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().where(UsageEntry.account == payer.account_id).order_by(UsageEntry.id))


def settled_rows(payer: Payer, count: int) -> list[UsageEntry]:
    """The payer's usage rows once all `count` are written and no hold is open (streams settle a moment late)."""
    wait_until(lambda: len(usage_rows(payer)) >= count and not open_holds(), f"{count} usage rows, no open hold")
    return audit(payer, PRICES)


def answered_by(rows: list[UsageEntry]) -> Counter:
    return Counter(row.deployment for row in rows)


# -- tests --------------------------------------------------------------------------------------------------------

@pytest.fixture
def fakes() -> Any:
    started = routing_fakes(3)
    yield started
    for fake in started:
        fake.stop()


def test_a_fake_killed_mid_load_costs_no_client_an_error_cools_on_every_worker_and_comes_back(
        tmp_path, database_url, fakes):
    a, b, c = fakes
    payer = fund(database_url, GRANT)
    config = routing_config(database_url, fakes, tables={"routing": FAST_COOLDOWN})
    with live_gateway(tmp_path, config, workers=WORKERS, threads=16, env=ADMIN_ENV) as server:
        send = sender(server.base_url, payer)
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(send, index) for index in range(LOAD_REQUESTS)]
            wait_until(lambda: sum(fake.received for fake in fakes) >= KILL_AFTER, "the load under way")
            crash_between_answers(a)
            seen = [future.result() for future in futures]
        errors = [answer for answer in seen if not answer.completed]
        assert not errors, errors[:5]

        # Dead, so cooling (or awaiting its trial) on every worker, once each has refreshed its copy of the state.
        wait_until(lambda: HEALTHY not in statuses_on_every_worker(server, "a"), "the dead fake cooling everywhere")
        assert statuses_on_every_worker(server, "b") == statuses_on_every_worker(server, "c") == {HEALTHY}
        wait_until(lambda: metric(server, COOLING, deployment="a") == 1, "the cooling gauge of the dead fake")
        assert metric(server, COOLING, deployment="b") == metric(server, COOLING, deployment="c") == 0

        a.start()  # the same port
        before = a.answered
        back: list[Seen] = []
        wait_until(lambda: back.append(send(0)) or a.answered > before, "traffic back on the restarted fake")
        wait_until(lambda: statuses_on_every_worker(server, "a") == {HEALTHY}, "the restarted fake healthy everywhere")
        wait_until(lambda: metric(server, COOLING, deployment="a") == 0, "the cooling gauge back to 0")
        assert all(answer.completed for answer in back)
        rows = settled_rows(payer, LOAD_REQUESTS + len(back))
        answered = {name: metric(server, ATTEMPTS, deployment=name, outcome="ok") for name in "abc"}
        failed_attempts = metric(server, ATTEMPTS) - sum(answered.values())
        retries = metric(server, RETRIES)

    assert {row.request_id for row in rows} == {answer.request_id for answer in seen + back}
    assert all(row.status == 200 and not row.estimated for row in rows)
    assert {(row.prompt_tokens, row.completion_tokens) for row in rows} == {(PROMPT_TOKENS, COMPLETION_TOKENS)}
    counts = answered_by(rows)
    assert counts["b"] == b.answered and counts["c"] == c.answered  # never cut: every answer is a row
    assert 0 < counts["a"] <= a.answered  # an answer the crash cut is retried elsewhere
    retried = [row for row in rows if row.attempts > 1]
    assert answered == {name: counts[name] for name in "abc"}  # the metrics' answers are the rows'
    assert failed_attempts == retries == sum(row.attempts - 1 for row in rows)
    assert len(retried) >= FAST_COOLDOWN["failures_to_cool"]  # each failure on the dead fake was retried
    assert {row.deployment for row in retried} <= {"b", "c"}  # the dead fake never answered one
    print(f"\nfailover: {len(seen)} requests under load ({len(seen) // 2} streams), {len(errors)} client errors, "
          f"{len(retried)} answered after more than one attempt ({sum(row.attempts for row in rows) - len(rows)} "
          f"extra attempts, {sum(row.streamed for row in retried)} of them streams), answered by {dict(counts)}; "
          f"{len(back)} requests until the restarted fake answered")


def test_what_is_retried_what_is_not_and_what_it_costs(tmp_path, database_url, fakes):
    """`ordered` over a, b, c: a's scripted failures are retried on b, or not at all; every attempt is counted."""
    a, b, c = fakes
    payer = fund(database_url, GRANT)
    no_cooling = {"failures_to_cool": 100, "state_refresh_s": 0.2, "backoff_s": 0.01}
    config = routing_config(database_url, fakes, strategy="ordered", deployments=[{"timeout_s": A_TIMEOUT_S}],
                            tables={"routing": no_cooling})
    with live_gateway(tmp_path, config, workers=WORKERS, threads=16, env=ADMIN_ENV) as server:
        url = f"{server.base_url}/v1/chat/completions"

        def post(body: dict[str, Any]) -> requests.Response:
            return requests.post(url, json=body, headers=payer.headers, timeout=30)

        expected: list[tuple[int, str | None, int]] = []  # (status, deployment, attempts) of each request, in order

        def retried_on_b(fault: str) -> None:
            for stream in (False, True):
                answer = post(chat(stream))
                assert answer.status_code == 200, (fault, stream, answer.text)
                assert answer.text.rstrip().endswith("[DONE]") if stream else answer.json()["choices"], fault
                expected.append((200, "b", 2))

        for status in RETRIED_STATUSES:
            a.fail(status, count=2)  # the JSON request's and the stream's
            retried_on_b(f"status {status}")
        a.stop()
        retried_on_b("connection refused")
        a.start()
        a.slow(A_TIMEOUT_S * 3)
        retried_on_b("read timeout before the first byte")
        a.clear()

        a.fail(400, count=1)  # the request's own fault: the client's answer, on the first attempt
        refused = post(chat())
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error"
        expected.append((400, "a", 1))  # the row names the deployment that refused it, after one attempt

        a.break_stream_after_first_chunk(1)
        body = chat(stream=True)
        broken = post(body)
        events = [line[6:] for line in broken.text.splitlines() if line.startswith("data: ")]
        relayed = "".join(json.loads(data)["choices"][0]["delta"].get("content") or ""
                          for data in events[:-1] if json.loads(data).get("choices"))
        assert broken.status_code == 200 and relayed == STREAM_PIECES[0]
        error = json.loads(events[-1])["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == "upstream_error"
        expected.append((502, "a", 1))

        assert post(chat()).status_code == 200  # a answers again: the failures above did not cool it down
        expected.append((200, "a", 1))
        rows = settled_rows(payer, len(expected))

    assert [(row.status, row.deployment, row.attempts) for row in rows] == expected
    not_received = 2  # the attempts on the stopped fake
    assert sum(row.attempts for row in rows) == a.received + b.received + c.received + not_received
    assert c.received == 0
    stream_row = rows[-2]
    assert stream_row.estimated and stream_row.cost > 0  # charged for the chunk it relayed, not retried
    assert (stream_row.prompt_tokens, stream_row.completion_tokens) == (estimate_prompt_tokens(body),
                                                                        estimate_text_tokens(STREAM_PIECES[0]))
    assert rows[-3].cost == 0  # the 400
    assert all(row.cost == rows[0].cost > 0 for row in rows if row.status == 200)  # one answer's usage, once


def test_every_deployment_cooling_is_a_503_with_retry_after_or_the_clients_fallback_model(tmp_path, database_url,
                                                                                          fakes):
    """a, b and c fail and cool down: 503 no_available_deployment without a fallback, else `backup-model` on d,
    whose one deployment is never skipped for cooling."""
    a, b, c = fakes
    d = RoutingFake("d").start()
    payer = fund(database_url, GRANT)
    backup = {"provider": "d", "upstream_model": "backup-upstream", "retries": 0, "input_price_per_mtok": INPUT_PRICE,
              "output_price_per_mtok": OUTPUT_PRICE}
    tables = {"routing": {"failures_to_cool": 1, "cooldown_s": 30, "state_refresh_s": 0.2},
              "providers": {"d": {"base_url": d.base_url, "timeout_s": 10}}, "models": {BACKUP_MODEL: backup}}
    try:
        with live_gateway(tmp_path, routing_config(database_url, fakes, tables=tables), workers=WORKERS,
                          threads=16, env=ADMIN_ENV) as server:
            url = f"{server.base_url}/v1/chat/completions"

            def post(body: dict[str, Any]) -> requests.Response:
                return requests.post(url, json=body, headers=payer.headers, timeout=30)

            for fake in fakes:
                fake.fail(500)
            assert post(chat()).status_code == 502  # three attempts, three failures: each deployment cools
            assert (a.received, b.received, c.received) == (1, 1, 1)
            wait_until(lambda: all(statuses_on_every_worker(server, fake.name) == {"cooling"} for fake in fakes),
                       "a, b and c cooling on every worker")

            for stream in (False, True):
                refused = post(chat(stream))
                assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_available_deployment"
                assert 0 < int(refused.headers["Retry-After"]) <= tables["routing"]["cooldown_s"]
                fallen_back = post({**chat(stream), "models": [ROUTED_MODEL, BACKUP_MODEL]})
                assert fallen_back.status_code == 200, fallen_back.text
                assert fallen_back.text.rstrip().endswith("[DONE]") if stream else fallen_back.json()["choices"]
            assert (a.received, b.received, c.received, d.answered) == (1, 1, 1, 2)

            d.fail(500, count=1)
            assert post({**chat(), "model": BACKUP_MODEL}).status_code == 502  # d cools down (failures_to_cool 1)
            wait_until(lambda: statuses_on_every_worker(server, BACKUP_DEPLOYMENT) == {"cooling"},
                       "d cooling everywhere")
            assert post({**chat(), "model": BACKUP_MODEL}).status_code == 200  # its model's only deployment
            assert d.answered == 3
            rows = settled_rows(payer, 7)
    finally:
        d.stop()
    assert rows[0].deployment in ("a", "b", "c") and rows[0].attempts == 3  # a failure's row: the last one tried
    assert [(row.status, row.model, row.deployment) for row in rows] == [
        (502, ROUTED_MODEL, rows[0].deployment),
        (503, ROUTED_MODEL, None), (200, BACKUP_MODEL, BACKUP_DEPLOYMENT),  # every deployment cooling: none tried
        (503, ROUTED_MODEL, None), (200, BACKUP_MODEL, BACKUP_DEPLOYMENT),
        (502, BACKUP_MODEL, BACKUP_DEPLOYMENT), (200, BACKUP_MODEL, BACKUP_DEPLOYMENT),
    ]
    assert [row.attempts for row in rows if row.status == 200] == [1, 1, 1]  # the cooling model's skip is no attempt
