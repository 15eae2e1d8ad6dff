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

import json
import os
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from typing import Self

import pytest
import requests

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.config import ModelSettings
from gateway.tables import LedgerEntry, Reservation, UsageEntry
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, default_responder, usage_chunk
from tests.faults.books import Payer, audit, open_holds
from tests.faults.load import BOUND_S, Load, Seen, Send, wait_for
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.scripted_model import ScriptedModel
from tests.served_gateway import rss_kib, served_gateway

SOAK_SECONDS = float(os.environ.get("GATEWAY_SOAK_SECONDS", "60"))  # read at import: conftest clears GATEWAY_*
WORKERS = 3
MODEL = "soak-model"
PRICED = {"provider": "fake", "input_price_per_mtok": 1000, "output_price_per_mtok": 2000, "max_output_tokens": 64}
GRANT = credits.to_micro(1_000_000)
PROFILE_ROUTE = "/api/v1/openai/soak/default/chat/completions"
BUILTIN_MCP = {"type": "mcp", "server_label": "tools", "require_approval": "never"}
FAIL_500, FAIL_429, SLOW = "soak:fail-500", "soak:fail-429", "soak:slow"  # what a message asks the upstream for
SLOW_CHUNKS = 40  # a dropped stream's length: 40 x 50 ms, left after two chunks
CHAIN_TURNS = 4  # a Responses chain starts over after this many turns (its history stays small)
RSS_SAMPLE_S = 1.0
OPENAI_ERROR = {"message", "type", "param", "code"}
RSS_GROWTH_BOUND_KIB = 50 * 1024  # generous: a leak shows in the printed slope long before this


class SoakUpstream:
    """The fake upstream's answers: failures and slow streams when a message asks, tool calls when offered."""

    def __init__(self) -> None:
        self.tools = ScriptedModel([("mcp__tools__echo", {"text": "soak"})])

    def __call__(self, path: str, body: dict) -> JsonReply | StreamReply:
        said = json.dumps(body.get("messages", []))
        if FAIL_500 in said:
            return JsonReply({"error": {"message": "injected failure", "type": "server_error"}}, status=500)
        if FAIL_429 in said:
            return JsonReply({"error": {"message": "injected rate limit", "type": "rate_limit_error"}}, status=429,
                             headers={"Retry-After": "1"})
        if SLOW in said:
            events = [(0, chat_chunk(role="assistant", content=""))]
            events += [(0.05, chat_chunk(f"w{index} ")) for index in range(SLOW_CHUNKS)]
            return StreamReply([*events, (0, chat_chunk(finish="stop")), (0, usage_chunk())])
        if body.get("tools"):
            self.tools.bodies.clear()  # the script keeps every body: this one runs for the whole soak
            return self.tools(path, body)
        return default_responder(path, body)


def chat_body(say: str = "hi", **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": say}], **extra}


def post(session: requests.Session, url: str, payer: Payer, request_id: str, body: dict) -> requests.Response:
    return session.post(url, json=body, timeout=BOUND_S, headers={**payer.headers, "x-request-id": request_id})


def json_send(url: str, payer: Payer, body: dict, completed: Callable[[dict], bool]) -> Send:
    """POST a body and read the JSON answer; `completed` checks a 200's body."""

    def send(session: requests.Session, request_id: str) -> Seen:
        answer = post(session, url, payer, request_id, body)
        ok = answer.status_code == 200 and completed(answer.json())
        return Seen(request_id, answer.status_code, ok, "" if ok else answer.text[:300])

    return send


def stream_send(url: str, payer: Payer, body: dict, last_event: str) -> Send:
    """POST a streaming body and read it to the end; complete when its last data line is `last_event`."""

    def send(session: requests.Session, request_id: str) -> Seen:
        with session.post(url, json={**body, "stream": True}, stream=True, timeout=BOUND_S,
                          headers={**payer.headers, "x-request-id": request_id}) as answer:
            text = answer.content.decode()
        data = [line for line in text.splitlines() if line.startswith("data: ")]
        ok = answer.status_code == 200 and bool(data) and last_event in data[-1]
        return Seen(request_id, answer.status_code, ok, "" if ok else text[-300:])

    return send


def chain_send(base: str, payer: Payer) -> Send:
    """Stored Responses, each continuing the previous one with `previous_response_id` (CHAIN_TURNS long)."""
    previous: list[str] = []

    def send(session: requests.Session, request_id: str) -> Seen:
        body = {"model": MODEL, "input": f"turn {len(previous)}", "store": True}
        if previous:
            body["previous_response_id"] = previous[-1]
        answer = post(session, f"{base}/v1/responses", payer, request_id, body)
        ok = answer.status_code == 200 and answer.json().get("previous_response_id") == body.get("previous_response_id")
        if ok:
            previous[:] = [] if len(previous) + 1 == CHAIN_TURNS else [*previous, answer.json()["id"]]
        return Seen(request_id, answer.status_code, ok, "" if ok else answer.text[:300])

    return send


def dropped_stream_send(port: int, payer: Payer) -> Send:
    """A slow stream the client closes after two chunks (its own socket: the session is not involved)."""

    def send(_session: requests.Session, request_id: str) -> Seen:
        body = json.dumps(chat_body(SLOW, stream=True)).encode()
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {payer.secret}\r\n"
                f"x-request-id: {request_id}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=BOUND_S) as sock:
                sock.sendall(head.encode() + body)
                received = b""
                while received.count(b"data: ") < 2 and (more := sock.recv(4096)):
                    received += more
        except OSError as exc:
            return Seen(request_id, None, False, repr(exc))
        status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else None
        return Seen(request_id, status, status == 200 and received.count(b"data: ") >= 2, "")

    return send


def bad_requests_send(base: str, prober: Payer) -> Send:
    """One of several bad requests in turn (a key of its own account): each a 4xx in OpenAI's error shape."""
    deep = chat_body(extra=json.loads("[" * 100 + "]" * 100))
    cases = [
        (chat_body() | {"messages": None}, 400), ({"model": MODEL}, 400), (deep, 400),
        (chat_body(max_tokens=-1), 400), (chat_body(temperature="hot"), 400),
        ('{"model": ', 400), ('{"model": "soak-model", "messages": [], "temperature": NaN}', 400),
        (chat_body(model="no-such-model"), 404),
    ]
    turn = iter(range(sys.maxsize))

    def send(session: requests.Session, request_id: str) -> Seen:
        body, expected = cases[next(turn) % len(cases)]
        data = body if isinstance(body, str) else json.dumps(body)
        answer = session.post(f"{base}/v1/chat/completions", data=data, timeout=BOUND_S, headers={
            **prober.headers, "x-request-id": request_id, "Content-Type": "application/json"})
        error = answer.json().get("error") if answer.headers.get("Content-Type") == "application/json" else None
        ok = answer.status_code == expected and isinstance(error, dict) and set(error) >= OPENAI_ERROR
        return Seen(request_id, answer.status_code, ok, "" if ok else f"{data[:60]} -> {answer.text[:200]}")

    return send


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


def kinds(base: str, port: int, payer: Payer, prober: Payer) -> dict[str, tuple[Send, int]]:
    """Each kind of request: its client action and the status every one of them must get."""
    chat, responses = f"{base}/v1/chat/completions", f"{base}/v1/responses"
    said = lambda text: lambda answer: answer["choices"][0]["message"]["content"] == text  # noqa: E731
    mcp_done = lambda answer: any(item["type"] == "mcp_call" and item["status"] == "completed"  # noqa: E731
                                  for item in answer["output"])
    return {
        "chat": (json_send(chat, payer, chat_body(), said("Hello from upstream")), 200),
        "chat stream": (stream_send(chat, payer, chat_body(), "[DONE]"), 200),
        "responses chain": (chain_send(base, payer), 200),
        "responses stream": (stream_send(responses, payer, {"model": MODEL, "input": "hi"}, "[DONE]"), 200),
        "tools auto": (json_send(f"{base}{PROFILE_ROUTE}", payer, chat_body(tools="auto"), said("Tools said: soak")),
                       200),
        "responses mcp": (json_send(responses, payer, {"model": MODEL, "input": "go", "tools": [BUILTIN_MCP]},
                                    mcp_done), 200),
        "upstream 500": (json_send(chat, payer, chat_body(FAIL_500), bool), 502),
        "upstream 500 stream": (stream_send(chat, payer, chat_body(FAIL_500), ""), 502),
        "upstream 429": (json_send(chat, payer, chat_body(FAIL_429), bool), 429),
        "dropped stream": (dropped_stream_send(port, payer), 200),
        "bad request": (bad_requests_send(base, prober), 0),  # its own expectation per case
    }


INJECTED = {"upstream 500", "upstream 500 stream", "upstream 429"}


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
    with served_gateway(tmp_path, tables) as server, ExitStack() as stack:
        workers = sorted(server.workers())
        base = f"http://127.0.0.1:{server.port}"
        rss = stack.enter_context(RssSampler(workers))
        loads = {kind: (stack.enter_context(Load([send])), expected)
                 for kind, (send, expected) in kinds(base, server.port, payer, prober).items()}
        time.sleep(SOAK_SECONDS)
        stack.close()  # the clients stop (each finishes its request), then the sampler
        assert sorted(server.workers()) == workers  # none died (and none was recycled: max_requests = 0)
        wait_for(lambda: open_holds() == 0, lambda: "every hold settled")
        log = server.log.read_text()

    seen = {kind: load.seen for kind, (load, _) in loads.items()}
    report = soak_report(seen, payer, rss)
    with capsys.disabled():
        print(report)
    failed = {kind: [s for s in load.seen if s.status != expected or (expected == 200 and not s.completed)]
              for kind, (load, expected) in loads.items() if kind != "bad request"}
    failed["bad request"] = [s for s in seen["bad request"] if not s.completed]
    assert {kind: answers[:3] for kind, answers in failed.items() if answers} == {}
    assert all(answers for answers in seen.values())  # every kind ran
    server_errors = [(kind, s.status) for kind, answers in seen.items() for s in answers if (s.status or 0) >= 500]
    assert {kind for kind, _ in server_errors} <= INJECTED
    assert "Traceback" not in log, log[log.index("Traceback"):][:3000]
    assert_books(payer, seen)
    for pid in workers:
        assert rss.growth_kib(pid) < RSS_GROWTH_BOUND_KIB, report


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
