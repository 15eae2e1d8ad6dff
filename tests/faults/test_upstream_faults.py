"""Upstream faults on chat and Responses, JSON and streams, /v1 and /api/v1: the answer, the rows, the balance.

A fault before any output is the client's HTTP error and costs nothing; a fault after some output
ends the stream with an error event (chat) or `response.failed` (Responses) and costs what was
generated (the estimate rule); a slow upstream within its timeout just works. Each test plays a
table of faults against one gateway and audits the books after every request.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.accounting.tokens import estimate_prompt_tokens, estimate_text_tokens
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, chat_completion, default_responder
from tests.faults.books import newest_row
from tests.faults.conftest import RAW_TIMEOUT_S
from tests.faults.raw_upstream import (
    SSE_END,
    SSE_HEAD,
    RawReply,
    json_head,
    raw_body,
    sse_event,
    sse_then_reset,
)

HI = [{"role": "user", "content": "hi"}]
PARTIAL = ["Hello", " wor"]  # what the upstream generated before each mid-stream fault
BROKEN = {"error": {"message": "model server crashed", "type": "server_error"}}
RESPONSE = {"model": "paid-model", "input": "hi", "max_output_tokens": 50}


def chat(model: str, stream: bool, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": HI, "max_tokens": 50, "stream": stream, **extra}


def data_events(text: str) -> list[str]:
    """The `data:` payloads of an SSE body."""
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def response_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(data) for data in data_events(text) if data != "[DONE]"]


def partial_chunks() -> list[str]:
    return [json.dumps(chat_chunk(role="assistant", content=""))] + [json.dumps(chat_chunk(p)) for p in PARTIAL]


def late(seconds: float, reply: bytes) -> RawReply:
    """A raw answer whose first byte comes after `seconds`."""
    return RawReply([(seconds, reply)])


def stalled_stream() -> RawReply:
    """Some chunks, then silence past the read timeout."""
    pieces = [(0.0, SSE_HEAD)] + [(0.0, sse_event(data)) for data in partial_chunks()]
    return RawReply([*pieces, (RAW_TIMEOUT_S * 3, sse_event("[DONE]") + SSE_END)])


def stream_reply(events: list[Any], done: bool) -> StreamReply:
    return StreamReply([(0, event) for event in events], done=done)


# name -> (model, how to script it, expected status, expected code); the fault comes before any output.
BEFORE_OUTPUT = {
    "500": ("paid-model", JsonReply(BROKEN, status=500), 502, "upstream_error"),
    "429": ("paid-model", JsonReply({"error": {"message": "slow down", "code": "rate_limited"}}, status=429,
                                    headers={"Retry-After": "7"}), 429, "rate_limited"),
    "connection refused": ("refused-model", None, 502, "upstream_unavailable"),
    "read timeout": ("raw-model", late(RAW_TIMEOUT_S * 3, b""), 504, "upstream_timeout"),
}
# name -> (model, how to script it, expected code of the stream's error); after some output.
MID_STREAM = {
    "reset": ("raw-model", sse_then_reset(partial_chunks()), "upstream_error"),
    "garbage line": ("paid-model", stream_reply([*partial_chunks(), "<html>502 Bad Gateway</html>"], True),
                     "upstream_error"),
    "truncated without [DONE]": ("paid-model", stream_reply(partial_chunks(), False), "upstream_error"),
    "stalled past the read timeout": ("raw-model", stalled_stream(), "upstream_timeout"),
}


def script(fake_upstream, raw_upstream, reply: Any) -> None:
    if isinstance(reply, RawReply):
        raw_upstream.reply = reply
    elif reply is not None:
        fake_upstream.responder = lambda path, body: reply


def test_chat_faults_before_output_are_http_errors_that_cost_nothing(
        client, payer, settings, fake_upstream, raw_upstream):
    count = 0
    for fault, (model, reply, status, code) in BEFORE_OUTPUT.items():
        for stream in (False, True):
            script(fake_upstream, raw_upstream, reply)
            answer = client.post("/v1/chat/completions", json=chat(model, stream), headers=payer.headers)
            assert answer.status_code == status, (fault, stream)
            error = answer.json["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, (fault, stream)
            if fault == "429":
                assert answer.headers["Retry-After"] == "7"
            count += 1
            row = newest_row(payer, settings.models, count)
            assert (row.status, row.prompt_tokens, row.completion_tokens, row.cost) == (status, 0, 0, 0)

    raw_upstream.reply = raw_body(b'{"id": "chatcmpl-1", "choices": [{"message": ')  # malformed JSON body
    answer = client.post("/v1/chat/completions", json=chat("raw-model", False), headers=payer.headers)
    assert answer.status_code == 502
    assert answer.json["error"]["code"] == "upstream_error" and "invalid JSON" in answer.json["error"]["message"]
    row = newest_row(payer, settings.models, count + 1)
    assert (row.status, row.cost) == (502, 0)


def test_chat_streams_broken_mid_way_end_with_an_error_event_and_cost_what_was_generated(
        client, payer, settings, fake_upstream, raw_upstream):
    for count, (fault, (model, reply, code)) in enumerate(MID_STREAM.items(), start=1):
        script(fake_upstream, raw_upstream, reply)
        body = chat(model, True)
        answer = client.post("/v1/chat/completions", json=body, headers=payer.headers)
        assert answer.status_code == 200
        events = data_events(answer.get_data(as_text=True))
        relayed = "".join(json.loads(data)["choices"][0]["delta"].get("content") or "" for data in events[:-1])
        assert relayed == "".join(PARTIAL), fault
        error = json.loads(events[-1])["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, fault
        row = newest_row(payer, settings.models, count)
        assert row.status == (504 if code == "upstream_timeout" else 502) and row.estimated, fault
        assert (row.prompt_tokens, row.completion_tokens) == (estimate_prompt_tokens(body),
                                                              estimate_text_tokens(relayed))
        assert row.cost > 0


def test_openrouter_dialect_passes_429_and_ends_a_reset_stream_with_an_error_chunk(
        client, payer, settings, fake_upstream, raw_upstream):
    fake_upstream.responder = lambda path, body: BEFORE_OUTPUT["429"][1]
    limited = client.post("/api/v1/chat/completions", json=chat("paid-model", False), headers=payer.headers)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert limited.json["error"]["code"] == 429 and limited.json["error"]["message"] == "slow down"
    row = newest_row(payer, settings.models, 1)
    assert (row.status, row.cost) == (429, 0)

    raw_upstream.reply = sse_then_reset(partial_chunks())
    broken = client.post("/api/v1/chat/completions", json=chat("raw-model", True), headers=payer.headers)
    last = json.loads(data_events(broken.get_data(as_text=True))[-1])
    assert last["error"]["code"] == 502 and last["choices"][0]["finish_reason"] == "error"
    row = newest_row(payer, settings.models, 2)
    assert row.status == 502 and row.estimated and row.cost > 0


def test_a_slow_upstream_within_its_timeout_just_works(client, payer, settings, raw_upstream):
    pause = RAW_TIMEOUT_S * 0.6
    body = json.dumps(chat_completion("Hello world")).encode()
    raw_upstream.reply = late(pause, json_head(len(body)) + body)
    answer = client.post("/v1/chat/completions", json=chat("raw-model", False), headers=payer.headers)
    assert answer.status_code == 200 and answer.json["choices"][0]["message"]["content"] == "Hello world"
    row = newest_row(payer, settings.models, 1)
    assert (row.status, row.prompt_tokens, row.completion_tokens, row.estimated) == (200, 11, 7, False)

    chunks = [*partial_chunks(), json.dumps(chat_chunk(finish="stop")),
              json.dumps({**chat_chunk(), "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}})]
    pieces = [(pause, SSE_HEAD)] + [(0.0, sse_event(data)) for data in chunks]
    raw_upstream.reply = RawReply([*pieces, (pause, sse_event("[DONE]") + SSE_END)])
    answer = client.post("/v1/chat/completions", json=chat("raw-model", True), headers=payer.headers)
    assert answer.status_code == 200 and data_events(answer.get_data(as_text=True))[-1] == "[DONE]"
    row = newest_row(payer, settings.models, 2)
    assert (row.status, row.prompt_tokens, row.completion_tokens, row.estimated) == (200, 11, 7, False)


def test_a_failing_model_falls_back_and_the_backup_is_what_is_charged(client, payer, settings, fake_upstream):
    fake_upstream.responder = lambda path, body: (
        JsonReply(BROKEN, status=500) if body["model"] == "paid-model" else default_responder(path, body))
    for count, stream in enumerate((False, True), start=1):
        options = {"stream_options": {"include_usage": True}} if stream else {}
        answer = client.post("/v1/chat/completions", json=chat("paid-model", stream, models=["backup-paid"], **options),
                             headers=payer.headers)
        assert answer.status_code == 200
        text = answer.get_data(as_text=True)
        assert [sent["model"] for sent in fake_upstream.bodies()][-2:] == ["paid-model", "backup"]
        row = newest_row(payer, settings.models, count)
        assert (row.model, row.status, row.prompt_tokens, row.completion_tokens) == ("backup-paid", 200, 11, 7)
        usage = (json.loads(data_events(text)[-2]) if stream else answer.json)["usage"]
        assert usage["cost"] == row.cost / 1_000_000


def test_responses_faults_before_output_are_http_errors_that_cost_nothing(
        client, payer, settings, fake_upstream, raw_upstream):
    count = 0
    for fault in ("500", "429", "read timeout"):
        model, reply, status, code = BEFORE_OUTPUT[fault]
        for stream in (False, True):
            script(fake_upstream, raw_upstream, reply)
            answer = client.post("/v1/responses", json={**RESPONSE, "model": model, "stream": stream},
                                 headers=payer.headers)
            if stream and status >= 500:  # past admission a 5xx stream fails in band: `error`, `response.failed`
                assert answer.status_code == 200
                events = response_events(answer.get_data(as_text=True))
                assert [event["type"] for event in events][-2:] == ["error", "response.failed"]
                assert events[-1]["response"]["error"]["code"] == code
            else:
                assert answer.status_code == status, (fault, stream)
                assert set(answer.json["error"]) == {"message", "type", "param", "code"}
                assert answer.json["error"]["code"] == code
            if fault == "429":
                assert answer.headers["Retry-After"] == "7"
            count += 1
            row = newest_row(payer, settings.models, count)
            assert (row.status, row.prompt_tokens, row.completion_tokens, row.cost) == (status, 0, 0, 0)


def test_responses_reset_mid_stream_is_a_failed_response_billed_for_what_was_generated(
        client, payer, settings, raw_upstream):
    for count, stream in enumerate((False, True), start=1):
        raw_upstream.reply = sse_then_reset(partial_chunks())
        answer = client.post("/v1/responses", json={**RESPONSE, "model": "raw-model", "stream": stream},
                             headers=payer.headers)
        assert answer.status_code == 200
        if stream:
            events = response_events(answer.get_data(as_text=True))
            types = [event["type"] for event in events]
            assert "error" in types and types[-1] == "response.failed"
            response = events[-1]["response"]
        else:
            response = answer.json
        assert response["status"] == "failed" and response["error"]["code"] == "upstream_error"
        assert response["output"][0]["content"][0]["text"] == "".join(PARTIAL)
        row = newest_row(payer, settings.models, count)
        assert row.status == 502 and row.estimated
        assert row.completion_tokens == estimate_text_tokens("".join(PARTIAL))
        assert response["usage"]["cost"] == row.cost / 1_000_000 > 0
