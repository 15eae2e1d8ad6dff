"""/metrics under real gunicorn: totals that add up over 3 workers, recycled workers and a reload."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from gateway import db
from gateway.accounting.keys import create_key
from tests.live_gateway import LiveGateway, live_gateway

REQUESTS = 60
SCRAPES = 20
BOUND_S = 30.0
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


def chat_total(text: str) -> float:
    """gateway_requests_total of the chat route, over every status and model."""
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "gateway_requests_total" and sample.labels["route"] == "/v1/chat/completions")


def fetch(port: int, method: str, path: str, body=None, headers=None) -> tuple[int, str]:
    """One request on a fresh connection (so any worker may take it): status and body."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=json.dumps(body) if body else None,
                           headers={"Connection": "close", "Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def scrape(server: LiveGateway) -> float:
    status, text = fetch(server.port, "GET", "/metrics")
    assert status == 200
    return chat_total(text)


def settled_total(server: LiveGateway, expected: float) -> float:
    """The chat total once the last request's worker has counted it (after its last byte), within BOUND_S."""
    deadline = time.monotonic() + BOUND_S
    while (total := scrape(server)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return total


def wait_for_new_workers(server: LiveGateway, old: set[int]) -> None:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        workers = set(server.workers())
        if len(workers) == 3 and not workers & old:
            return
        time.sleep(0.1)
    raise AssertionError(f"workers {old} were not replaced")


def test_totals_add_up_over_workers_recycling_and_a_reload(tmp_path, fake_upstream):
    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    db.bind(database)
    db.upgrade()
    with db.database.connection_context():
        _, secret = create_key("scraper")
    tables = {
        "server": {"workers": 3, "threads": 4, "max_requests": 15, "max_requests_jitter": 5,
                   "access_log": str(tmp_path / "access.log"), "log_format": "json"},
        "database": {"url": database},
        "providers": {"fake": {"base_url": fake_upstream.base_url}},
        "models": {"test-model": {"provider": "fake", "upstream_model": "upstream-model"}},
    }
    with live_gateway(tmp_path, tables) as server:
        auth = {"Authorization": f"Bearer {secret}"}
        assert all(fetch(server.port, "POST", "/v1/chat/completions", CHAT, auth)[0] == 200
                   for _ in range(REQUESTS))
        assert settled_total(server, REQUESTS) == REQUESTS
        totals = [scrape(server) for _ in range(SCRAPES)]
        assert totals == [REQUESTS] * SCRAPES
        before = set(server.workers())
        server.process.send_signal(signal.SIGHUP)  # a reload replaces every worker
        wait_for_new_workers(server, before)
        assert scrape(server) == REQUESTS
        assert fetch(server.port, "POST", "/v1/chat/completions", CHAT, auth)[0] == 200
        assert settled_total(server, REQUESTS + 1) == REQUESTS + 1
        _, text = fetch(server.port, "GET", "/metrics")
        assert "gateway_open_streams 0.0" in text

    lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    chat_pids = Counter(line["pid"] for line in lines if line["route"] == "/v1/chat/completions")
    assert sum(chat_pids.values()) == REQUESTS + 1
    assert len(chat_pids) > 3  # spread over the workers, and recycled ones were replaced
    log = [line for line in server.log_text().splitlines() if line.strip()]
    assert log and all(json.loads(line)["level"] for line in log)  # gunicorn's and the app's logs are JSON
