"""PostgreSQL stopped under load, then started again, under a real gunicorn gateway (two workers).

While it is down every request gets a clean OpenAI-shaped 503 (never a 500, never a traceback);
once it is back requests succeed again without restarting the gateway; and nothing is lost:
every answered request has its one usage row and charge, no hold stays open after the sweep.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from gateway import db
from gateway.config import ModelSettings
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, chat_completion, usage_chunk
from tests.faults.books import audit, open_holds
from tests.faults.load import PRICE_PER_TOKEN, Load, fund, post_json, post_stream, priced_config, wait_for
from tests.faults.private_postgres import private_postgres
from tests.live_gateway import live_gateway

MAX_TOKENS = 10
COST = PRICE_PER_TOKEN * MAX_TOKENS
GRANT = 100_000 * COST
PAID = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}
RESERVATION_TTL_S = 2
KEY_CACHE_TTL_S = 0.2  # short, so authentication too meets the stopped database
CLIENTS = 4  # of each kind
ENOUGH = 10  # answers to see in each phase: before the stop, while stopped (503s), after the start
PAID_MODEL = ModelSettings(provider="fake", output_price_per_mtok=PRICE_PER_TOKEN)  # as the config serves it


def full_cost(path, body):
    """A JSON answer or a short stream, both reporting MAX_TOKENS of output."""
    if body.get("stream"):
        return StreamReply([(0.01, chat_chunk("word ")) for _ in range(3)]
                           + [(0, chat_chunk(finish="stop")), (0, usage_chunk(5, MAX_TOKENS))])
    usage = {"prompt_tokens": 5, "completion_tokens": MAX_TOKENS, "total_tokens": 5 + MAX_TOKENS}
    return JsonReply(chat_completion(model=body["model"], usage=usage))


def the_error(seen_error: str) -> dict:
    """The error object of a failed answer: the JSON body, or a stream's last event."""
    if seen_error.lstrip().startswith("{"):
        return json.loads(seen_error)["error"]
    return json.loads([line for line in seen_error.splitlines() if line.startswith("data: {")][-1][6:])["error"]


def test_postgres_stopped_under_load_is_a_clean_503_then_recovers_with_nothing_lost(tmp_path, fake_upstream):
    with private_postgres() as cluster:
        if cluster is None:
            pytest.skip("PostgreSQL binaries (/usr/lib/postgresql/*/bin) are not installed")
        payer = fund(cluster.url, GRANT)
        fake_upstream.responder = full_cost
        config = priced_config(cluster.url, fake_upstream.base_url, RESERVATION_TTL_S, KEY_CACHE_TTL_S)
        with live_gateway(tmp_path, config, workers=2) as served:
            sends = [post_json(served.base_url, payer, PAID), post_stream(served.base_url, payer, PAID)] * CLIENTS
            with Load(sends) as load:
                wait_for(lambda: load.successes() >= ENOUGH, lambda: f"requests before the stop: {load.statuses()}")
                workers = sorted(served.workers())
                cluster.stop()
                stopped_at = len(load.seen)
                refused = lambda: sum(seen.status == 503 for seen in load.seen[stopped_at:])  # noqa: E731
                wait_for(lambda: refused() >= ENOUGH, lambda: f"503s while stopped: {load.statuses()}")
                cluster.start()
                back = load.successes()
                wait_for(lambda: load.successes() >= back + ENOUGH, lambda: f"requests after the start: {load.statuses()}")
            assert sorted(served.workers()) == workers  # recovered by the same processes
            db.bind(cluster.url)  # this process's pool too lost its connections with the stop
            wait_for(lambda: open_holds() == 0, lambda: f"the sweep of {open_holds()} holds")
        rows = audit(payer, {"paid-model": PAID_MODEL})
    statuses = Counter(seen.status for seen in load.seen)
    assert set(statuses) <= {200, 503} and statuses[503] >= ENOUGH, statuses  # no 500, no broken connection
    failed = [seen for seen in load.seen if not seen.completed and seen.status is not None]
    for seen in failed:
        error = the_error(seen.error)
        assert set(error) == {"message", "type", "param", "code"}, seen
        assert (error["type"], error["code"]) == ("service_unavailable", "service_unavailable"), seen
        assert "Traceback" not in seen.error and "psycopg" not in seen.error.lower(), seen
    rows_per_request = Counter(row.request_id for row in rows)
    answered = {seen.request_id for seen in load.seen if seen.completed}
    assert all(rows_per_request[request_id] == 1 for request_id in answered)
    assert max(rows_per_request.values()) == 1
    assert {row.cost for row in rows if row.request_id in answered} == {COST}

