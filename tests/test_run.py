"""The run object's lifecycle: one finish on every path, holds released, charges equal usage x price."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from gateway import db
from gateway.accounting.credits import Price, grant_credits
from gateway.accounting.tokens import estimate_prompt_tokens, estimate_text_tokens
from gateway.accounting.usage import Usage
from gateway.tables import ApiKey, LedgerEntry, Reservation, UsageEntry
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.scripted_model import ScriptedModel, tool_call_chunks, usage

PAID = {"provider": "fake", "input_price_per_mtok": 1000, "output_price_per_mtok": 2000, "max_output_tokens": 100}
CHAT = {"model": "paid-model", "messages": [{"role": "user", "content": "use tools"}], "tools": "auto"}
RESPONSE = {"model": "paid-model", "input": "use tools",
            "tools": [{"type": "mcp", "server_label": "tools", "require_approval": "never"}]}


@pytest.fixture
def settings(make_settings):
    return make_settings(
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]}},
        profiles={"acme/default": {"mcp_servers": ["tools"]}},
        mcp={"default_profile": "acme/default", "tool_timeout_s": 3},
        models={"paid-model": PAID},
    )


@pytest.fixture
def headers(make_key) -> dict[str, str]:
    secret = make_key("payer", scope="acme")
    with db.database.connection_context():
        grant_credits(ApiKey.get(ApiKey.name == "payer").account_id, 10_000_000)
    return {"X-API-Key": secret}


def paid_price(settings) -> Price:
    return Price.of(settings.models["paid-model"])


def settled_row(settings) -> UsageEntry:
    """The request's one usage row, after checking that nothing is held and the ledger equals it."""
    with db.database.connection_context():
        assert not Reservation.select().where(Reservation.status == "open").exists()
        rows = list(UsageEntry.select())
        assert len(rows) == 1
        row = rows[0]
        assert row.cost == paid_price(settings).cost(Usage(row.prompt_tokens, row.completion_tokens))
        charges = [entry.amount for entry in LedgerEntry.select().where(LedgerEntry.kind == "charge")]
        assert sum(charges) == row.cost
        return row


def explode(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("injected bug")


def explode_on_call(number: int, original):
    """A wrapper that raises on its `number`-th call and delegates otherwise."""
    calls = {"count": 0}

    def wrapper(*args: Any, **kwargs: Any):
        calls["count"] += 1
        if calls["count"] == number:
            raise RuntimeError("injected bug")
        return original(*args, **kwargs)

    return wrapper


def inject(monkeypatch: pytest.MonkeyPatch, stage: str, family: str) -> None:
    """Make the run raise a plain RuntimeError at one stage."""
    from gateway.api import chat, chat_render
    from gateway.loop import tool_loop, turn
    from gateway.mcp.toolset import Toolset
    from gateway.responses import admission, builder, store

    if stage == "admission":
        if family == "chat":
            monkeypatch.setattr(chat, "profile_toolset", explode)  # held, the toolset not yet open
        else:
            monkeypatch.setattr(admission, "request_echo", explode)
    elif stage == "first turn":
        monkeypatch.setattr(turn.TurnReader, "feed", explode)
    elif stage == "tool call":
        monkeypatch.setattr(Toolset, "start_call", explode)
    elif stage == "later turn":
        # the first preparing is admission's (first_turn), the second turn 1's
        monkeypatch.setattr(tool_loop, "prepare_turn", explode_on_call(3, tool_loop.prepare_turn))
    elif stage == "rendering" and family == "chat":
        original = chat_render.ChatRender.take
        monkeypatch.setattr(chat_render.ChatRender, "take", lambda self, event: (
            explode() if type(event).__name__ == "TextDelta" else original(self, event)))
    elif stage == "rendering":
        original = builder.ResponseBuilder.feed
        monkeypatch.setattr(builder.ResponseBuilder, "feed", lambda self, event: (
            explode() if type(event).__name__ == "TextDelta" else original(self, event)))
    elif stage == "store":
        monkeypatch.setattr(store, "save", explode)


def post(client, family: str, headers: dict[str, str], stream: bool):
    if family == "chat":
        return client.post("/v1/chat/completions", json={**CHAT, "stream": stream}, headers=headers)
    return client.post("/v1/responses", json={**RESPONSE, "stream": stream}, headers=headers)


def failed_in_stream(answer, family: str) -> bool:
    """Whether a 200 stream ended with an error the SDKs raise (chat) or a failed response (Responses)."""
    text = answer.get_data(as_text=True)
    if family == "chat":
        last = [line for line in text.splitlines() if line.startswith("data: {")][-1]
        return "error" in json.loads(last[6:])
    return "event: error" in text


STAGES = [("chat", s) for s in ("admission", "first turn", "tool call", "later turn", "rendering")] + [
    ("responses", s) for s in ("admission", "first turn", "tool call", "later turn", "rendering", "store")]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("family,stage", STAGES)
def test_a_bug_at_any_stage_releases_the_hold(client, headers, fake_upstream, settings, monkeypatch,
                                               family, stage, stream, caplog):
    fake_upstream.responder = ScriptedModel([("mcp__tools__echo", {"text": "ping"})])
    inject(monkeypatch, stage, family)
    answer = post(client, family, headers, stream)
    if answer.status_code == 500:
        error = answer.json["error"]
        assert (error["type"], error["code"]) == ("api_error", "internal_error")
        assert "injected" not in error["message"]
    else:
        assert answer.status_code == 200 and stream, answer.get_data(as_text=True)
        assert failed_in_stream(answer, family)
        assert "injected" not in answer.get_data(as_text=True)
    row = settled_row(settings)
    reported_turns = {"admission": 0, "first turn": 0, "tool call": 1, "later turn": 1, "rendering": 1,
                      "store": 2}[stage]
    assert row.prompt_tokens >= 20 * reported_turns and row.completion_tokens >= 5 * reported_turns
    if stage == "admission":
        assert (row.prompt_tokens, row.completion_tokens, row.cost) == (0, 0, 0)


def test_client_leaving_in_turn_three_pays_two_turns_plus_the_estimate(client, headers, fake_upstream, settings):
    bodies: list[dict[str, Any]] = []

    def three_turns(path: str, body: dict[str, Any]) -> StreamReply:
        bodies.append(body)
        done = sum(1 for message in body["messages"] if message.get("role") == "tool")
        if done < 2:
            return StreamReply([*tool_call_chunks([("mcp__tools__echo", {"text": f"t{done}"})]), (0, usage(20, 5))])
        return StreamReply([(0, chat_chunk("partial answer words")), (10, chat_chunk(" never sent")),
                            (0, chat_chunk(finish="stop"))])

    fake_upstream.responder = three_turns
    answer = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers, buffered=False)
    seen = ""
    for piece in answer.response:
        seen += bytes(piece).decode()
        if "partial answer words" in seen:
            break
    answer.close()
    row = settled_row(settings)
    third = estimate_prompt_tokens(bodies[2])
    assert (row.prompt_tokens, row.completion_tokens) == (20 + 20 + third, 5 + 5 + estimate_text_tokens(
        "partial answer words"))
    assert row.estimated and row.status == 499


def strict_upstream(offered_names: list[set[str]]):
    """A model that rejects a tool_choice naming a function it was not offered, else calls get.time."""
    model = ScriptedModel([])

    def respond(path: str, body: dict[str, Any]) -> StreamReply | JsonReply:
        offered = {tool["function"]["name"] for tool in body.get("tools") or []}
        offered_names.append(offered)
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            name = choice["function"]["name"]
            if name not in offered:
                return JsonReply({"error": {"message": f"unknown tool {name}", "type": "invalid_request_error"}},
                                 status=400)
            return StreamReply(tool_call_chunks([(name, {})]))
        return model(path, body)

    return respond


def test_a_forced_dotted_mcp_tool_is_offered_under_its_safe_name(client, headers, fake_upstream):
    offered: list[set[str]] = []
    fake_upstream.responder = strict_upstream(offered)
    chat = client.post("/v1/chat/completions", headers=headers, json={
        **CHAT, "tool_choice": {"type": "function", "function": {"name": "mcp__tools__get.time"}}})
    assert chat.status_code == 200, chat.json
    assert chat.json["choices"][0]["message"]["content"] == "Tools said: 12:00"
    safe = next(name for name in offered[0] if name.startswith("mcp__tools__get_time"))
    assert chat.json["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == safe

    response = client.post("/v1/responses", headers=headers, json={
        **RESPONSE, "tool_choice": {"type": "mcp", "server_label": "tools", "name": "get.time"}})
    assert response.status_code == 200, response.json
    call = next(item for item in response.json["output"] if item["type"] == "mcp_call")
    assert (call["name"], call["output"]) == ("get.time", "12:00")
    assert response.json["status"] == "completed"
