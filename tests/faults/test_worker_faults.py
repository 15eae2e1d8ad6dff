"""A gunicorn worker killed with -9 while JSON requests and streams are in flight, over three workers.

Its holds are swept after the reservation TTL; nothing is charged twice; every answered request
has exactly one usage row at the full price; the ledger, the balance drop and the rows agree.
A request the dead worker was serving gets no answer (its stream breaks) and costs nothing.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from gateway import db
from gateway.accounting import credits
from gateway.tables import LedgerEntry, UsageEntry
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, chat_completion, usage_chunk
from tests.faults.books import open_holds
from tests.faults.load import PRICE_PER_TOKEN, Load, fund, post_json, post_stream, priced_config, wait_for
from tests.live_gateway import LiveGateway, live_gateway

MAX_TOKENS = 10
COST = PRICE_PER_TOKEN * MAX_TOKENS
GRANT = 100_000 * COST
PAID = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}
RESERVATION_TTL_S = 2
STREAM_CHUNKS = 8  # at 0.03 s each: streams are in flight when the worker dies
CLIENTS = 6  # of each kind
ENOUGH = 15  # answered requests to see before the kill, and again after it


def slow_full_cost(path, body):
    """A JSON answer after 20 ms, or a stream of STREAM_CHUNKS chunks; both report MAX_TOKENS of output."""
    if body.get("stream"):
        return StreamReply([(0.03, chat_chunk("word ")) for _ in range(STREAM_CHUNKS)]
                           + [(0, chat_chunk(finish="stop")), (0, usage_chunk(5, MAX_TOKENS))])
    time.sleep(0.02)
    usage = {"prompt_tokens": 5, "completion_tokens": MAX_TOKENS, "total_tokens": 5 + MAX_TOKENS}
    return JsonReply(chat_completion(model=body["model"], usage=usage))


def kill_one_worker_mid_run(served: LiveGateway, load: Load) -> None:
    wait_for(lambda: load.successes() >= ENOUGH, lambda: f"requests before the kill: {load.statuses()}")
    os.kill(served.workers()[0], signal.SIGKILL)
    after = load.successes()
    wait_for(lambda: load.successes() >= after + ENOUGH, lambda: f"requests after the kill: {load.statuses()}")


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_worker_killed_mid_run_loses_no_charge_and_leaves_no_hold(tmp_path, database_url, fake_upstream):
    payer = fund(database_url, GRANT)
    fake_upstream.responder = slow_full_cost
    config = priced_config(database_url, fake_upstream.base_url, RESERVATION_TTL_S, key_cache_ttl_s=1)
    with live_gateway(tmp_path, config, workers=3, threads=8) as served:
        sends = [post_json(served.base_url, payer, PAID), post_stream(served.base_url, payer, PAID)] * CLIENTS
        with Load(sends) as load:
            kill_one_worker_mid_run(served, load)
        wait_for(lambda: open_holds() == 0, lambda: f"the sweep of the killed worker's {open_holds()} holds")
    with db.database.connection_context():
        charged = sum(e.amount for e in LedgerEntry.select().where(LedgerEntry.account == payer.account_id,
                                                                   LedgerEntry.kind == "charge"))
        drop = GRANT - credits.balance_of(payer.account_id)
        rows = list(UsageEntry.select().where(UsageEntry.account == payer.account_id))
    assert charged == drop == sum(row.cost for row in rows) > 0
    rows_per_request = Counter(row.request_id for row in rows)
    answered = {seen.request_id for seen in load.seen if seen.completed}
    assert all(rows_per_request[request_id] == 1 for request_id in answered)
    assert max(rows_per_request.values()) == 1
    assert {row.cost for row in rows if row.request_id in answered} == {COST}
    broken = [seen for seen in load.seen if not seen.completed]
    assert broken, "the kill hit no request in flight"
    assert all(seen.status in (None, 200) for seen in broken), Counter(seen.status for seen in broken)
