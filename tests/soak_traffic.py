"""The soak's traffic (tests/test_soak.py): the fake upstream's script and one client action per kind.

Each action is a `Send` of tests/faults/load.py (a `Load` repeats it in its own thread) and says
whether the answer was complete; a message asks the upstream to fail or stream slowly.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Callable

import requests

from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, default_responder, usage_chunk
from tests.faults.books import Payer
from tests.faults.load import BOUND_S, Seen, Send
from tests.scripted_model import ScriptedModel

MODEL = "soak-model"
PRICED = {"provider": "fake", "input_price_per_mtok": 1000, "output_price_per_mtok": 2000, "max_output_tokens": 64}
PROFILE_ROUTE = "/api/v1/openai/soak/default/chat/completions"
BUILTIN_MCP = {"type": "mcp", "server_label": "tools", "require_approval": "never"}
FAIL_500, FAIL_429, SLOW = "soak:fail-500", "soak:fail-429", "soak:slow"  # what a message asks the upstream for
SLOW_CHUNKS = 40  # a dropped stream's length: 40 x 50 ms, left after two chunks
BAD_REQUEST_PAUSE_S = 0.05  # bad requests are cheap: paced, so they leave the workers to the rest of the mix
CHAIN_TURNS = 4  # a Responses chain starts over after this many turns (its history stays small)
OPENAI_ERROR = {"message", "type", "param", "code"}
Check = Callable[[requests.Response], bool]


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


def json_send(url: str, payer: Payer, body: dict, expected: Check) -> Send:
    """POST a body and read the whole answer; complete when it is the `expected` one."""

    def send(session: requests.Session, request_id: str) -> Seen:
        answer = post(session, url, payer, request_id, body)
        ok = expected(answer)
        return Seen(request_id, answer.status_code, ok, "" if ok else answer.text[:300])

    return send


def said(text: str) -> Check:
    """A chat completion whose message is `text`."""
    return lambda answer: answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == text


def mcp_call_completed(answer: requests.Response) -> bool:
    """A response whose output has a completed MCP call."""
    output = answer.json()["output"] if answer.status_code == 200 else []
    return any(item["type"] == "mcp_call" and item["status"] == "completed" for item in output)


def refused(status: int) -> Check:
    """An error answer with this status, in OpenAI's shape."""

    def check(answer: requests.Response) -> bool:
        error = answer.json().get("error") if answer.headers.get("Content-Type") == "application/json" else None
        return answer.status_code == status and isinstance(error, dict) and set(error) >= OPENAI_ERROR

    return check


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
    """One of several bad requests in turn (a key of its own account): each a clear 4xx."""
    deep = chat_body(extra=json.loads("[" * 100 + "]" * 100))
    cases = [
        (chat_body() | {"messages": None}, 400), ({"model": MODEL}, 400), (deep, 400),
        (chat_body(max_tokens=-1), 400), (chat_body(temperature="hot"), 400),
        ('{"model": ', 400), ('{"model": "soak-model", "messages": [], "temperature": NaN}', 400),
        (chat_body(model="no-such-model"), 404),
    ]
    in_turn = itertools.cycle(cases)

    def send(session: requests.Session, request_id: str) -> Seen:
        body, expected = next(in_turn)
        data = body if isinstance(body, str) else json.dumps(body)
        answer = session.post(f"{base}/v1/chat/completions", data=data, timeout=BOUND_S, headers={
            **prober.headers, "x-request-id": request_id, "Content-Type": "application/json"})
        ok = refused(expected)(answer)
        time.sleep(BAD_REQUEST_PAUSE_S)
        return Seen(request_id, answer.status_code, ok, "" if ok else f"{data[:60]} -> {answer.text[:200]}")

    return send


def kinds(base: str, port: int, payer: Payer, prober: Payer) -> dict[str, Send]:
    """Each kind of request's client action; every answer must be the complete, expected one."""
    chat, responses = f"{base}/v1/chat/completions", f"{base}/v1/responses"
    passed_on = refused(429)
    return {
        "chat": json_send(chat, payer, chat_body(), said("Hello from upstream")),
        "chat stream": stream_send(chat, payer, chat_body(), "[DONE]"),
        "responses chain": chain_send(base, payer),
        "responses stream": stream_send(responses, payer, {"model": MODEL, "input": "hi"}, "[DONE]"),
        "tools auto": json_send(f"{base}{PROFILE_ROUTE}", payer, chat_body(tools="auto"), said("Tools said: soak")),
        "responses mcp": json_send(responses, payer, {"model": MODEL, "input": "go", "tools": [BUILTIN_MCP]},
                                   mcp_call_completed),
        "upstream 500": json_send(chat, payer, chat_body(FAIL_500), refused(502)),
        "upstream 500 stream": json_send(chat, payer, chat_body(FAIL_500, stream=True), refused(502)),
        "upstream 429": json_send(chat, payer, chat_body(FAIL_429),
                                  lambda answer: passed_on(answer) and answer.headers.get("Retry-After") == "1"),
        "dropped stream": dropped_stream_send(port, payer),
        "bad request": bad_requests_send(base, prober),
    }


INJECTED = {"upstream 500", "upstream 500 stream", "upstream 429"}
