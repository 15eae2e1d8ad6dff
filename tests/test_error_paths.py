"""One failure, every path: each error has the same status, `type` and `code` on every route and transport.

Paths: the plain relay (chat JSON and SSE), chat `tools: "auto"` (JSON and SSE), Responses JSON,
SSE, WebSocket and background, each under `/v1` (OpenAI's error body) and `/api/v1` (OpenRouter's, where
`code` is the HTTP status). A failure after a stream started arrives as an event or a frame; then
its `type` and `code` are compared (Responses events keep the spec's string `code` on both paths).
Anthropic's Messages routes show each failure with the same status and Anthropic's type for it.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from gateway import db
from gateway.accounting import credits
from gateway.tables import ApiKey, CreditGrant
from tests.fake_upstream import HangReply, JsonReply, StreamReply
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.polling import wait_until
from tests.scripted_model import ScriptedModel, tool_call_chunks

PAID = {"provider": "fake", "input_price_per_mtok": 1000, "output_price_per_mtok": 1000, "max_output_tokens": 50}
PATHS = ["relay json", "relay sse", "tools json", "tools sse", "responses json", "responses sse", "responses ws",
         "responses background"]
BASES = ["/v1", "/api/v1"]
UPSTREAM_429 = {"error": {"message": "Slow down.", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}


@dataclass(frozen=True)
class Seen:
    """What a client saw of an error: the HTTP status (None mid-stream), the `type` and the `code`."""

    status: int | None
    type: str
    code: str | int | None


@dataclass(frozen=True)
class Expected:
    status: int
    type: str
    code: str

    def check(self, seen: Seen, where: str) -> None:
        """The same error: the status when one was sent, the type, and the code (OpenRouter's is the status)."""
        assert seen.type == self.type, (where, seen)
        assert seen.code == (self.status if isinstance(seen.code, int) else self.code), (where, seen)
        assert seen.status in (None, self.status), (where, seen)


@pytest.fixture
def settings(make_settings):
    return make_settings(
        providers={"fake": {"timeout_s": 1}},
        models={"paid-model": PAID},
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]}},
        profiles={"acme/default": {"mcp_servers": ["tools"]}},
        mcp={"default_profile": "acme/default", "tool_timeout_s": 3},
    )


def body_of(path: str, model: str) -> dict[str, Any]:
    """The request a path sends (chat or Responses, streaming or not, with the profile's tools or not)."""
    if path.startswith("responses"):
        body: dict[str, Any] = {"model": model, "input": "use tools",
                                "tools": [{"type": "mcp", "server_label": "tools", "require_approval": "never"}]}
    else:
        body = {"model": model, "messages": [{"role": "user", "content": "use tools"}]}
        if path.startswith("tools"):
            body["tools"] = "auto"
    if path.endswith("sse"):
        body["stream"] = True
    if path.endswith("background"):
        body["background"] = True
    return body


def route_of(path: str, base: str) -> str:
    return base + ("/responses" if path.startswith("responses") else "/chat/completions")


def seen_in_body(status: int, payload: dict[str, Any]) -> Seen:
    """An error body; or a `failed` response object (its output had begun: MCP tools listed), as in a stream."""
    error = payload["error"]
    if payload.get("object") == "response":
        assert (status, payload["status"]) == (200, "failed"), payload
        return Seen(None, error["type"], error["code"])
    return Seen(status, error["type"], error["code"])


def seen_in_stream(text: str) -> Seen:
    """The error a stream ended with: chat's error event or chunk, or Responses' `error` event."""
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    return seen_in_events(events)


def seen_in_events(events: list[dict[str, Any]]) -> Seen:
    errors = [event for event in events if "error" in event and event.get("type") != "response.failed"]
    assert len(errors) == 1, events
    error = errors[0]["error"]
    failed = [event for event in events if event.get("type") == "response.failed"]
    if failed:  # a Responses stream: the failed response names the same error
        assert {key: failed[0]["response"]["error"][key] for key in ("type", "code")} == {
            "type": error["type"], "code": error["code"]}
    return Seen(errors[0].get("status"), error["type"], error["code"])


def observe(client, live_server: str, path: str, base: str, key: str, body: dict[str, Any]) -> Seen:
    """Send one request on a path; the error the client saw."""
    if path == "responses ws":
        return observe_socket(live_server, base, key, body)
    answer = client.post(route_of(path, base), json=body, headers={"Authorization": f"Bearer {key}"})
    text = answer.get_data(as_text=True)
    if answer.mimetype == "application/json" and answer.json.get("status") == "queued":
        return seen_in_background(client, base, key, answer.json["id"])
    if answer.mimetype == "application/json":
        return seen_in_body(answer.status_code, answer.json)
    assert answer.status_code == 200 and answer.mimetype == "text/event-stream", text[:300]
    return seen_in_stream(text)


def seen_in_background(client, base: str, key: str, response_id: str) -> Seen:
    """A background response's stored failure, once its run has finished."""
    headers = {"Authorization": f"Bearer {key}"}
    stored: dict[str, Any] = {}

    def finished() -> bool:
        stored.update(client.get(f"{base}/responses/{response_id}", headers=headers).json)
        return stored["status"] not in ("queued", "in_progress")

    wait_until(finished, "the background response's run")
    return seen_in_body(200, stored)


def observe_socket(live_server: str, base: str, key: str, body: dict[str, Any]) -> Seen:
    """One `response.create` turn: the error frame before it, or the `error` event inside it."""
    url = live_server.replace("http://", "ws://") + base + "/responses"
    try:
        ws = connect(url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=5, close_timeout=2)
    except InvalidStatus as refused:
        return seen_in_body(refused.response.status_code, json.loads(refused.response.body))
    with ws:
        ws.send(json.dumps({"type": "response.create", **body}))
        events = [json.loads(ws.recv(timeout=20))]
        while events[-1]["type"] not in ("error", "response.completed", "response.failed", "response.incomplete"):
            events.append(json.loads(ws.recv(timeout=20)))
        if events[-1]["type"] == "error" and "sequence_number" not in events[-1]:
            return Seen(events[-1]["status"], events[-1]["error"]["type"], events[-1]["error"]["code"])
        while events[-1]["type"] == "error":
            events.append(json.loads(ws.recv(timeout=20)))
    return seen_in_events(events)


def funded(make_key, name: str, micro_credits: int = 10**9, **options: Any) -> str:
    """A key of a new account holding these credits."""
    secret = make_key(name, scope="acme", **options)
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == name).account_id, micro_credits)
    return secret


@dataclass(frozen=True)
class Case:
    """One error: how to cause it (the key to use, the model, the upstream), and what every path must show."""

    expected: Expected
    key: Callable[[Any, str], str]
    model: str = "test-model"
    responder: Callable[[str, dict[str, Any]], Any] | None = None


CASES = {
    "401": Case(Expected(401, "authentication_error", "invalid_api_key"), lambda make_key, name: "sk-gw-not-a-key"),
    "402": Case(Expected(402, "insufficient_balance", "insufficient_balance"),
                lambda make_key, name: make_key(name, scope="acme"), model="paid-model"),
    "404": Case(Expected(404, "invalid_request_error", "model_not_found"), funded, model="no-such-model"),
    "429": Case(Expected(429, "rate_limit_error", "rate_limit_exceeded"),
                lambda make_key, name: funded(make_key, name, rpm=0)),
    "upstream 429": Case(Expected(429, "rate_limit_error", "rate_limit_exceeded"), funded,
                         responder=lambda path, body: JsonReply(UPSTREAM_429, status=429)),
    "upstream 5xx": Case(Expected(502, "api_error", "upstream_error"), funded,
                         responder=lambda path, body: JsonReply({"error": {"message": "boom"}}, status=500)),
    "upstream timeout": Case(Expected(504, "api_error", "upstream_timeout"), funded,
                             responder=lambda path, body: HangReply(3)),
}


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("kind", list(CASES))
def test_every_path_shows_the_same_error(client, live_server, make_key, fake_upstream, kind, base):
    case = CASES[kind]
    if case.responder is not None:
        fake_upstream.responder = case.responder
    for number, path in enumerate(PATHS):
        key = case.key(make_key, f"{kind}-{number}")
        seen = observe(client, live_server, path, base, key, body_of(path, case.model))
        case.expected.check(seen, path)


class FailsOnTurnTwo(ScriptedModel):
    """Turn 1 calls the echo tool (after `during_turn_one`); turn 2 gets `second`, or the scripted answer."""

    def __init__(self, during_turn_one: Callable[[], None] = lambda: None, second: Any = None) -> None:
        super().__init__([("mcp__tools__echo", {"text": "hi"})])
        self.during_turn_one, self.second = during_turn_one, second

    def __call__(self, path: str, body: dict[str, Any]) -> Any:
        if not any(message.get("role") == "tool" for message in body.get("messages", [])):
            self.bodies.append(body)
            self.during_turn_one()
            return StreamReply(tool_call_chunks(self.calls))
        return self.second or super().__call__(path, body)


def expire_credits(name: str) -> Callable[[], None]:
    """While turn 1 runs, the account's credits expire: the loop's next turn cannot be held (402)."""

    def expire() -> None:
        with db.database.connection_context():
            account_id = ApiKey.get(ApiKey.name == name).account_id
            past = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(days=1)
            CreditGrant.update(expires_at=past).where(CreditGrant.account == account_id).execute()

    return expire


LOOPS = ["tools json", "tools sse", "responses json", "responses sse", "responses ws", "responses background"]


@pytest.mark.parametrize("base", BASES)
def test_a_402_inside_a_tool_loop_is_the_relays_402(client, live_server, make_key, fake_upstream, base):
    """The balance runs out on a later turn of the loop: the same type and code as the relay's refusal."""
    relay = observe(client, live_server, "relay json", base, make_key("empty", scope="acme"),
                    body_of("relay json", "paid-model"))
    CASES["402"].expected.check(relay, "relay json")
    for number, path in enumerate(LOOPS):
        name = f"payer-{number}"
        key = funded(make_key, name, 10**8)
        model = fake_upstream.responder = FailsOnTurnTwo(during_turn_one=expire_credits(name))
        seen = observe(client, live_server, path, base, key, body_of(path, "paid-model"))
        assert len(model.bodies) == 1, (path, seen)  # turn 1 ran; turn 2 was refused before it was sent
        CASES["402"].expected.check(seen, path)
        assert seen.type == relay.type, path


@pytest.mark.parametrize("base", BASES)
def test_an_upstream_429_inside_a_tool_loop_is_the_relays_429(client, live_server, make_key, fake_upstream, base):
    """The upstream refuses a later turn with 429: the same type and code as on the relay."""
    fake_upstream.responder = lambda path, body: JsonReply(UPSTREAM_429, status=429)
    relay = observe(client, live_server, "relay json", base, funded(make_key, "relay"), body_of("relay json", "test-model"))
    for number, path in enumerate(LOOPS):
        fake_upstream.responder = FailsOnTurnTwo(second=JsonReply(UPSTREAM_429, status=429))
        seen = observe(client, live_server, path, base, funded(make_key, f"looper-{number}"),
                       body_of(path, "test-model"))
        CASES["upstream 429"].expected.check(seen, path)
        assert seen.type == relay.type, path


ANTHROPIC_TYPES = {401: "authentication_error", 402: "billing_error", 404: "not_found_error", 429: "rate_limit_error",
                   502: "api_error", 504: "api_error"}  # Anthropic's type for each status of CASES


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("kind", list(CASES))
def test_messages_show_the_same_error_in_anthropics_dialect(client, make_key, fake_upstream, kind, base):
    """The same failures on `/messages`, JSON and streamed: the status, and Anthropic's type for it."""
    case = CASES[kind]
    if case.responder is not None:
        fake_upstream.responder = case.responder
    for number, stream in enumerate((False, True)):
        key = case.key(make_key, f"{kind}-messages-{number}")
        body = {"model": case.model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
                "stream": stream}
        answer = client.post(base + "/messages", json=body, headers={"x-api-key": key})
        assert (answer.status_code, answer.mimetype) == (case.expected.status, "application/json"), (stream, answer)
        assert answer.json == {"type": "error", "error": {"type": ANTHROPIC_TYPES[case.expected.status],
                                                          "message": answer.json["error"]["message"]}}
