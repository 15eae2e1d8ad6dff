"""Soak: a bounded run of mixed traffic through real gunicorn (3 gthread workers) on PostgreSQL.

One client thread per kind of request, on loopback: chat JSON and streamed, Responses stored and
continued with `previous_response_id`, Responses streamed, MCP tools (`tools: "auto"` on a profile
route, and the Responses MCP tool, on a stdio server), requests whose upstream is told to fail
(500, answered 502; 429, passed through), streams the client drops midway, and bad requests. Then:

- the payer's ledger balances to the micro-credit (tests/faults/books.py `audit`), request by
  request: each charge is its usage row's cost, every 200 has its row, each dropped stream a 499 row;
- no reservation is open, each was settled by its request, and no worker died;
- every 5xx was injected;
- each worker's RSS slope is printed; only a generous growth bound is asserted.

`GATEWAY_SOAK_SECONDS` sets the traffic's duration (default 60) for a longer manual run.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from typing import Self

import pytest

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.config import ModelSettings
from gateway.tables import LedgerEntry, Reservation, UsageEntry
from tests.fake_upstream import FakeUpstream
from tests.faults.books import Payer, audit, open_holds
from tests.faults.load import BOUND_S, Load, Seen, wait_for
from tests.live_gateway import live_gateway, rss_kib
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.soak_traffic import INJECTED, MODEL, PRICED, SoakUpstream, kinds

SOAK_SECONDS = float(os.environ.get("GATEWAY_SOAK_SECONDS", "60"))  # read at import: conftest clears GATEWAY_*
WORKERS = 3
GRANT = credits.to_micro(1_000_000)
RSS_SAMPLE_S = 1.0
RSS_GROWTH_BOUND_KIB = 50 * 1024  # generous: a leak shows in the printed slope long before this


class RssSampler:
    """Samples each worker's RSS every RSS_SAMPLE_S in a thread: (seconds since start, KiB) per pid."""

    def __init__(self, pids: list[int]) -> None:
        self.samples: dict[int, list[tuple[float, int]]] = {pid: [] for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(BOUND_S)

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            for pid, samples in self.samples.items():
                samples.append((time.monotonic() - self._start, rss_kib(pid)))

    def steady(self, pid: int) -> list[tuple[float, int]]:
        """Samples after the warm-up (the first fifth of the run: imports, pools and MCP servers start)."""
        samples = self.samples[pid]
        return samples[len(samples) // 5:]

    def slope_kib_per_min(self, pid: int) -> float:
        """Least-squares slope of the steady samples."""
        seconds, kib = zip(*self.steady(pid), strict=True)
        return statistics.linear_regression(seconds, kib).slope * 60

    def growth_kib(self, pid: int) -> int:
        """Largest RSS of the steady run over its first sample."""
        kib = [value for _, value in self.steady(pid)]
        return max(kib) - kib[0]


def new_payer(name: str, grant: int, **options) -> Payer:
    with db.database.connection_context():
        key, secret = create_key(name, rpm=1_000_000, tpm=1_000_000_000, **options)
        credits.grant_credits(key.account_id, grant)
    return Payer(secret, key.account_id, grant)


@pytest.mark.soak
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_soak(tmp_path, database_url, fake_upstream, capsys):
    db.bind(database_url)
    db.upgrade()
    payer = new_payer("soak", GRANT, scope="soak")
    prober = new_payer("soak-prober", GRANT)
    fake_upstream.responder = SoakUpstream()
    tables = {
        "server": {"workers": WORKERS, "threads": 16, "max_requests": 0, "access_log": ""},
        "database": {"url": database_url},
        "limits": {"max_streams_per_key": 64, "max_streams_per_account": 64},
        "providers": {"fake": {"base_url": fake_upstream.base_url}},
        "models": {MODEL: PRICED},
        "mcpServers": {"tools": {"command": sys.executable, "args": [TOOL_SERVER]}},
        "profiles": {"soak/default": {"mcp_servers": ["tools"]}},
        "mcp": {"tool_timeout_s": BOUND_S},
    }
    with live_gateway(tmp_path, tables) as server, ExitStack() as stack:
        workers = sorted(server.workers())
        base = f"http://127.0.0.1:{server.port}"
        rss = stack.enter_context(RssSampler(workers))
        loads = {kind: stack.enter_context(Load([send])) for kind, send in kinds(base, server.port, payer, prober).items()}
        run_for(SOAK_SECONDS, fake_upstream)
        stack.close()  # the clients stop (each finishes its request), then the sampler
        assert sorted(server.workers()) == workers  # none died (and none was recycled: max_requests = 0)
        wait_for(lambda: open_holds() == 0, lambda: "every hold settled")
        log = server.log_text()

    seen = {kind: load.seen for kind, load in loads.items()}
    report = soak_report(seen, payer, rss)
    with capsys.disabled():
        print(report)
    failed = {kind: [s for s in answers if not s.completed][:3] for kind, answers in seen.items()}
    assert {kind: answers for kind, answers in failed.items() if answers} == {}  # each the expected answer
    assert all(answers for answers in seen.values())  # every kind ran
    server_errors = [(kind, s.status) for kind, answers in seen.items() for s in answers if (s.status or 0) >= 500]
    assert {kind for kind, _ in server_errors} <= INJECTED
    assert "Traceback" not in log, log[log.index("Traceback"):][:3000]
    assert_books(payer, seen)
    for pid in workers:
        assert rss.growth_kib(pid) < RSS_GROWTH_BOUND_KIB, report


def run_for(seconds: float, fake_upstream: FakeUpstream) -> None:
    """Let the traffic run; the fake upstream records every request, so a long soak forgets them as it goes."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 5.0))
        fake_upstream.requests.clear()


def assert_books(payer: Payer, seen: dict[str, list[Seen]]) -> None:
    """Ledger == balance drop == usage x price (audit); each request's charge is its row's cost; rows match answers."""
    rows = audit(payer, {MODEL: ModelSettings(**PRICED)})
    by_request = {row.request_id: row for row in rows}
    assert len(by_request) == len(rows)  # one row per request
    with db.database.connection_context():
        charges = Counter()
        for entry in LedgerEntry.select().where(LedgerEntry.account == payer.account_id, LedgerEntry.kind == "charge"):
            charges[entry.request_id] += entry.amount
        kinds_in_ledger = {entry.kind for entry in LedgerEntry.select().where(LedgerEntry.account == payer.account_id)}
        holds = Counter(hold.status for hold in Reservation.select().where(Reservation.account == payer.account_id))
    assert kinds_in_ledger <= {"grant", "charge"}
    assert dict(charges) == {row.request_id: row.cost for row in rows if row.cost}
    assert set(holds) <= {"settled"}
    answered = [s for kind, answers in seen.items() if kind not in ("bad request", "dropped stream") for s in answers]
    assert {s.request_id: by_request[s.request_id].status for s in answered if s.status == 200} == {
        s.request_id: 200 for s in answered if s.status == 200}
    assert all(by_request[s.request_id].cost > 0 for s in answered if s.status == 200)
    assert {by_request[s.request_id].status for s in seen["dropped stream"]} == {499}
    assert all(by_request[s.request_id].cost == 0 for kind in INJECTED for s in seen[kind])


def soak_report(seen: dict[str, list[Seen]], payer: Payer, rss: RssSampler) -> str:
    """The run's figures: requests and statuses by kind, 5xx, the ledger's delta, open holds, RSS per worker."""
    with db.database.connection_context():
        ledger = Counter()
        for entry in LedgerEntry.select().where(LedgerEntry.account == payer.account_id):
            ledger[entry.kind] += entry.amount
        usage_cost = sum(row.cost for row in UsageEntry.select().where(UsageEntry.account == payer.account_id))
        balance = credits.balance_of(payer.account_id)
    lines = [f"\nsoak: {SOAK_SECONDS:.0f} s, {WORKERS} workers, {sum(map(len, seen.values()))} requests"]
    for kind, answers in seen.items():
        statuses = Counter(s.status for s in answers)
        lines.append(f"  {kind:<20} {len(answers):>6}  " + ", ".join(f"{k}: {v}" for k, v in sorted(
            statuses.items(), key=lambda item: str(item[0]))))
    errors = Counter(kind in INJECTED for kind, answers in seen.items() for s in answers if (s.status or 0) >= 500)
    lines.append(f"  5xx: {errors[True]} injected, {errors[False]} not injected")
    lines.append(f"  ledger: grants {ledger['grant']} - charges {ledger['charge']} - balance {balance} = "
                 f"{ledger['grant'] - ledger['charge'] - balance} micro-credits; "
                 f"charges - usage costs = {ledger['charge'] - usage_cost}; open holds {open_holds()}")
    for pid in rss.samples:
        steady = rss.steady(pid)
        lines.append(f"  worker {pid}: RSS {steady[0][1] / 1024:.1f} -> {steady[-1][1] / 1024:.1f} MiB, "
                     f"slope {rss.slope_kib_per_min(pid):+.1f} KiB/min over {len(steady)} samples")
    return "\n".join(lines)
