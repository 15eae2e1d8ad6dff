"""Holds that cover what is sent: the prepared request's tools and prompt, a bounded debt, a request above tpm.

The upstream here counts like a real one: every byte of the messages and of the tool definitions it
is sent (4 characters a token) plus a chat template (5 tokens a message, 3 a request).
"""

from __future__ import annotations

import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from gateway import db
from gateway.accounting import credits
from gateway.accounting.usage import Usage
from gateway.config import ModelSettings, ProviderSettings
from gateway.tables import ApiKey, LedgerEntry, Reservation, UsageEntry
from gateway.upstream.prepared import prepare
from gateway.upstream.routing import Route
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, chat_completion
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.scripted_model import answer_chunks, tool_call_chunks, usage

PRICE = 1000  # micro-credits per token, input and output
PAID = {"provider": "fake", "input_price_per_mtok": PRICE, "output_price_per_mtok": PRICE, "max_output_tokens": 10}
CHAT = {"model": "paid-model", "messages": [{"role": "user", "content": "use tools"}], "tools": "auto"}
RESPONSE = {"model": "paid-model", "input": "use tools",
            "tools": [{"type": "mcp", "server_label": "tools", "require_approval": "never"}]}
MESSAGES = {"model": "paid-model", "max_tokens": 10, "messages": [{"role": "user", "content": "use tools"}],
            "mcp_servers": [{"type": "url", "url": "gateway:tools", "name": "tools"}]}  # Anthropic's MCP connector
OUTPUT = 5  # what the counting upstream generates


def counted_prompt(body: dict[str, Any]) -> int:
    """The prompt tokens a real upstream reports: messages and tool definitions, with its template."""
    messages = body.get("messages") or []
    text = "".join(json.dumps(m.get("content")) for m in messages) + json.dumps(body.get("tools") or [])
    return math.ceil(len(text) / 4) + 5 * len(messages) + 3


class CountingModel:
    """Answers "ok" at once, reporting the prompt it was really sent (tool definitions included)."""

    def __init__(self) -> None:
        self.counted: list[int] = []

    def __call__(self, path: str, body: dict[str, Any]) -> StreamReply | JsonReply:
        prompt = counted_prompt(body)
        self.counted.append(prompt)
        if body.get("stream"):
            return StreamReply([*answer_chunks("ok"), (0, usage(prompt, OUTPUT))])
        counts = {"prompt_tokens": prompt, "completion_tokens": OUTPUT, "total_tokens": prompt + OUTPUT}
        return JsonReply(chat_completion("ok", model=body["model"], usage=counts))


@pytest.fixture
def settings(make_settings):
    return make_settings(
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]},
                    "time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}},
        profiles={"acme/default": {"mcp_servers": ["tools", "time"]}},
        mcp={"default_profile": "acme/default", "tool_timeout_s": 3},
        models={"paid-model": PAID},
    )


def funded_key(make_key, micro_credits: int, **options: Any) -> tuple[str, int]:
    secret = make_key("payer", scope="acme", **options)
    with db.database.connection_context():
        account_id = ApiKey.get(ApiKey.name == "payer").account_id
        credits.grant_credits(account_id, micro_credits)
    return secret, account_id


def books(account_id: int) -> dict[str, Any]:
    with db.database.connection_context():
        charges = [e.amount for e in LedgerEntry.select().where(LedgerEntry.account == account_id,
                                                                 LedgerEntry.kind == "charge")]
        return {"balance": credits.balance_of(account_id), "charged": sum(charges),
                "usage_cost": sum(row.cost for row in UsageEntry.select()),
                "open": Reservation.select().where(Reservation.status == "open").count(),
                "largest_hold": max([hold.amount for hold in Reservation.select()], default=0)}


def ask(client, family: str, headers: dict[str, str]):
    if family == "chat":
        return client.post("/v1/chat/completions", json=CHAT, headers=headers)
    if family == "messages":
        return client.post("/v1/messages", json=MESSAGES, headers=headers)
    return client.post("/v1/responses", json=RESPONSE, headers=headers)


FAMILIES = ["chat", "responses", "messages"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_first_turn_holds_the_mcp_tool_definitions(client, make_key, fake_upstream, family):
    """The overdraft of issue 23.1: turn 1 was held without the MCP tools the gateway adds (fails on the old code)."""
    model = CountingModel()
    fake_upstream.responder = model
    secret, account_id = funded_key(make_key, 100 * PRICE)  # the messages and output fit; the tools do not
    answer = ask(client, family, {"X-API-Key": secret})
    if family == "responses" and answer.status_code == 200:  # its mcp_list_tools went out: a failed response
        assert answer.json["status"] == "failed"
    else:
        assert answer.status_code == 402, answer.get_data(as_text=True)
    error = answer.json["error"]
    assert (error["type"] == "billing_error") if family == "messages" else (error["code"] == "insufficient_balance")
    assert model.counted == []  # refused before turn 1 was sent
    assert books(account_id)["balance"] == 100 * PRICE


@pytest.mark.parametrize("family", FAMILIES)
def test_charged_tokens_include_the_tools_and_the_hold_covered_them(client, make_key, fake_upstream, family):
    model = CountingModel()
    fake_upstream.responder = model
    secret, account_id = funded_key(make_key, 10_000 * PRICE)
    answer = ask(client, family, {"X-API-Key": secret})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    sent = fake_upstream.bodies()[0]
    assert "mcp__tools__echo" in {tool["function"]["name"] for tool in sent["tools"]}
    assert counted_prompt(sent) > 300  # the tool definitions dominate the prompt
    with db.database.connection_context():
        row = UsageEntry.get()
    assert (row.prompt_tokens, row.completion_tokens) == (model.counted[0], OUTPUT)
    book = books(account_id)
    assert book["largest_hold"] >= row.cost == book["charged"] == book["usage_cost"]
    assert book["balance"] == 10_000 * PRICE - row.cost and book["open"] == 0


def race(base_url: str, secret: str, count: int = 200) -> list[int]:
    def one(_: int) -> int:
        return requests.post(f"{base_url}/v1/chat/completions", json=CHAT, headers={"X-API-Key": secret},
                             timeout=120).status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_race_of_200_on_a_tool_profile_never_overdraws(live_server, make_key, fake_upstream, database_url):
    """200 concurrent `tools: "auto"` requests against a balance for a few: none leaves the balance below 0."""
    fake_upstream.responder = CountingModel()
    secret, account_id = funded_key(make_key, 5_000 * PRICE)
    statuses = race(live_server, secret)
    assert set(statuses) <= {200, 402} and statuses.count(200) >= 1 and statuses.count(402) >= 1
    book = books(account_id)
    assert book["balance"] >= 0, book  # within the debt bound: holds cover every turn, so no debt at all
    assert book["charged"] == book["usage_cost"] and book["open"] == 0


def test_a_request_above_the_keys_tpm_is_a_400_naming_the_limit(client, make_key, fake_upstream):
    """Issue 23.7: no retry can admit it, so no 429 with Retry-After (fails on the old code)."""
    secret, _ = funded_key(make_key, 10_000 * PRICE, tpm=1000)
    body = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}
    answer = client.post("/v1/chat/completions", json=body, headers={"X-API-Key": secret})
    assert answer.status_code == 400 and "Retry-After" not in answer.headers
    error = answer.json["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "request_above_tpm_limit",
                                                               "max_tokens")
    assert "1000 tokens per min" in error["message"]
    assert fake_upstream.requests == []
    fits = client.post("/v1/chat/completions", json={**body, "max_tokens": 10}, headers={"X-API-Key": secret})
    assert fits.status_code == 200


def test_a_short_request_is_held_at_most_twice_what_it_costs() -> None:
    """Issue 23.10: a hold far above cost refuses payable requests (the old margins held 2.8 times it)."""
    route = Route.of("paid-model", ModelSettings(**PAID, upstream_model="upstream"))
    body = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    prepared = prepare(route, "chat/completions", body, ProviderSettings(base_url="http://u/v1"), False)
    charged = prepared.estimate().price.cost(Usage(counted_prompt(prepared.body), 10))
    assert charged <= prepared.estimate().hold <= 2 * charged


def test_a_stream_past_its_hold_and_debt_bound_is_stopped_at_a_chunk(client, make_key, fake_upstream):
    """An upstream that ignores max_tokens: the stream ends at the chunk where the debt bound is passed."""
    words = [(0, chat_chunk("forty characters of text, again and again")) for _ in range(400)]
    fake_upstream.responder = lambda path, body: StreamReply([*words, (0, chat_chunk(finish="stop"))])
    secret, account_id = funded_key(make_key, 10_000 * PRICE)
    body = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "stream": True}
    answer = client.post("/v1/chat/completions", json=body, headers={"X-API-Key": secret})
    events = [json.loads(line[6:]) for line in answer.get_data(as_text=True).splitlines()
              if line.startswith("data: {")]
    assert events[-1]["error"]["code"] == "debt_bound_reached"
    assert len(events) < 100  # 400 chunks were offered
    book = books(account_id)
    assert book["charged"] <= 2 * book["largest_hold"] + 10 * PRICE  # hold + bound, and the chunk that passed it


def test_a_loop_past_its_hold_and_debt_bound_sends_no_further_turn(client, make_key, fake_upstream):
    """A turn that reports far more than its hold: the loop stops before the next turn (402 debt_bound_reached)."""
    bodies: list[dict[str, Any]] = []

    def overcounting(path: str, body: dict[str, Any]) -> StreamReply:
        bodies.append(body)
        return StreamReply([*tool_call_chunks([("mcp__tools__echo", {"text": "x"})]), (0, usage(1_000_000, 5))])

    fake_upstream.responder = overcounting
    secret, account_id = funded_key(make_key, 10_000_000 * PRICE)
    answer = ask(client, "chat", {"X-API-Key": secret})
    assert answer.status_code == 402 and answer.json["error"]["code"] == "debt_bound_reached"
    assert len(bodies) == 1
    assert books(account_id)["charged"] == (1_000_000 + 5) * PRICE  # what was used is charged in full


TYPICAL = {**PAID, "max_output_tokens": 1000, "typical_output_tokens": 20}


@pytest.fixture
def typical_settings(make_settings):
    return make_settings(models={"paid-model": TYPICAL})


@pytest.mark.parametrize("funds", [10_000, 100], ids=["funded", "short"])
def test_a_stream_is_held_for_typical_output_and_its_hold_grows(make_key, fake_upstream, typical_settings, funds):
    """Issue 23.10: a stream without max_tokens is held for the model's typical output, not its whole cap."""
    from gateway import create_app, lifecycle

    app = create_app(typical_settings)
    client = app.test_client()
    chunks = [(0, chat_chunk("forty characters of text, again and again")) for _ in range(60)]  # ~600 tokens
    fake_upstream.responder = lambda path, body: StreamReply([*chunks, (0, chat_chunk(finish="stop"))])
    secret, account_id = funded_key(make_key, funds * PRICE)  # "short" pays the typical output, not the cap
    body = {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    answer = client.post("/v1/chat/completions", json=body, headers={"X-API-Key": secret})
    assert answer.status_code == 200
    events = [json.loads(line[6:]) for line in answer.get_data(as_text=True).splitlines()
              if line.startswith("data: {")]
    assert fake_upstream.bodies()[0]["max_tokens"] == 1000  # the upstream is still told the model's cap
    book = books(account_id)
    if funds == 10_000:
        assert "error" not in events[-1] and book["largest_hold"] >= book["charged"] > 600 * PRICE
    else:
        assert events[-1]["error"]["code"] == "insufficient_balance"  # the hold could not grow: stopped
        assert 0 <= book["balance"] < funds * PRICE
        denied = client.post("/v1/chat/completions", json={**body, "stream": False}, headers={"X-API-Key": secret})
        assert denied.status_code == 402  # a JSON answer cannot be stopped: it is held for its whole cap
    lifecycle.close(app)
