"""`POST /v1/messages` and `/api/v1/messages` on an OpenAI-compatible upstream, through the `anthropic` SDK.

Create, stream, a tool round trip, count_tokens, the typed errors, usage rows (`endpoint = "messages"`).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import anthropic
import pytest
import requests

from gateway import db
from gateway.tables import UsageEntry
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, chat_completion, usage_chunk
from tests.polling import wait_until

USER = [{"role": "user", "content": "Hi"}]
PAID = {"provider": "fake", "upstream_model": "upstream-model", "input_price_per_mtok": 1000,
        "output_price_per_mtok": 1000, "max_output_tokens": 50}


@pytest.fixture(name="settings")
def messages_settings(make_settings):
    return make_settings(models={"paid-model": PAID})


def sdk(live_server: str, key: str, prefix: str = "") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live_server + prefix, api_key=key, max_retries=0)


def usage_rows() -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def sent_bodies(fake_upstream) -> list[dict[str, Any]]:
    return [body for path, body, _ in fake_upstream.requests if path.endswith("/chat/completions")]


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_create_translates_both_ways_and_records_usage(live_server, api_key, fake_upstream, prefix):
    message = sdk(live_server, api_key, prefix).messages.create(
        model="test-model", max_tokens=100, system="Be brief.", messages=USER, stop_sequences=["END"],
        metadata={"user_id": "u-1"}, extra_body={"temperature": 0.2, "top_k": 5})  # older API versions' fields
    assert message.type == "message" and message.id.startswith("msg_") and message.model == "test-model"
    assert [block.model_dump(exclude_none=True) for block in message.content] == [
        {"type": "text", "text": "Hello from upstream"}]
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("end_turn", 11, 7)
    sent = sent_bodies(fake_upstream)[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert (sent["max_tokens"], sent["stop"], sent["temperature"], sent["user"]) == (100, ["END"], 0.2, "u-1")
    assert "top_k" not in sent
    rows = usage_rows()
    assert [(row.endpoint, row.status, row.prompt_tokens, row.completion_tokens) for row in rows] == [
        ("messages", 200, 11, 7)]


def test_a_bearer_key_works_and_dropped_fields_are_named(live_server, api_key):
    answer = requests.post(f"{live_server}/v1/messages", timeout=10, headers={"Authorization": f"Bearer {api_key}"},
                           json={"model": "test-model", "max_tokens": 10, "messages": USER, "top_k": 3})
    assert answer.status_code == 200 and answer.json()["type"] == "message"
    assert answer.headers["X-Gateway-Dropped"] == "top_k"


def test_stream_is_accumulated_by_the_sdk(live_server, api_key):
    with sdk(live_server, api_key).messages.stream(model="test-model", max_tokens=100, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello world"
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 11, 7)
    assert [(row.endpoint, row.status, row.completion_tokens) for row in usage_rows()] == [("messages", 200, 7)]


def tool_call(index: int, id_: str | None, name: str | None, arguments: str) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id_:
        call.update(id=id_, type="function")
        call["function"]["name"] = name
    return call


def weather_responder(path: str, body: dict[str, Any]) -> JsonReply | StreamReply:
    """A tool call first; text once the tool's result came back."""
    if any(message.get("role") == "tool" for message in body.get("messages") or []):
        return JsonReply(chat_completion("It is sunny in Oslo."))
    if body.get("stream"):
        return StreamReply([(0, chat_chunk(role="assistant", content="")),
                            (0, chat_chunk(tool_calls=[tool_call(0, "call_1", "weather", "")])),
                            (0, chat_chunk(tool_calls=[tool_call(0, None, None, '{"city": ')])),
                            (0, chat_chunk(tool_calls=[tool_call(0, None, None, '"Oslo"}')])),
                            (0, chat_chunk(finish="tool_calls")), (0, usage_chunk())])
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    answer = chat_completion(None)
    answer["choices"][0].update(message={"role": "assistant", "content": None, "tool_calls": [call]},
                                finish_reason="tool_calls")
    return JsonReply(answer)


WEATHER = {"name": "weather", "description": "Weather of a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_a_tool_round_trip(live_server, api_key, fake_upstream):
    fake_upstream.responder = weather_responder
    client = sdk(live_server, api_key)
    first = client.messages.create(model="test-model", max_tokens=100, messages=USER, tools=[WEATHER],
                                   tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert (use.type, use.id, use.name, use.input) == ("tool_use", "call_1", "weather", {"city": "Oslo"})
    second = client.messages.create(model="test-model", max_tokens=100, tools=[WEATHER], messages=[
        *USER, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}]}])
    assert second.content[0].text == "It is sunny in Oslo." and second.stop_reason == "end_turn"
    sent = sent_bodies(fake_upstream)
    assert (sent[0]["tool_choice"], sent[0]["parallel_tool_calls"]) == ("required", False)
    assert sent[1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_a_streamed_tool_call_is_accumulated(live_server, api_key, fake_upstream):
    fake_upstream.responder = weather_responder
    with sdk(live_server, api_key).messages.stream(model="test-model", max_tokens=100, messages=USER,
                                                   tools=[WEATHER]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(block.type, block.name, block.input) for block in final.content] == [
        ("tool_use", "weather", {"city": "Oslo"})]


def test_count_tokens(live_server, api_key):
    counted = sdk(live_server, api_key).messages.count_tokens(model="test-model", messages=USER, system="x" * 400)
    assert counted.input_tokens >= 100


def test_a_stream_broken_upstream_ends_with_an_error_event(live_server, api_key, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply([(0, chat_chunk("Hel"))], done=False)
    with pytest.raises(anthropic.APIStatusError) as raised, \
            sdk(live_server, api_key).messages.stream(model="test-model", max_tokens=100, messages=USER) as stream:
        stream.get_final_message()
    assert raised.value.body["type"] == "error" and raised.value.body["error"]["type"] == "api_error"
    assert [(row.endpoint, row.status) for row in usage_rows()] == [("messages", 502)]


def test_typed_errors(live_server, api_key, make_key):
    with pytest.raises(anthropic.AuthenticationError):
        sdk(live_server, "sk-wrong").messages.create(model="test-model", max_tokens=10, messages=USER)
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk(live_server, api_key).messages.create(model="no-such-model", max_tokens=10, messages=USER)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.PaymentRequiredError) as unpaid:
        sdk(live_server, api_key).messages.create(model="paid-model", max_tokens=10, messages=USER)
    assert unpaid.value.body["error"]["type"] == "billing_error"
    limited = sdk(live_server, make_key("slow", rpm=1))
    limited.messages.create(model="test-model", max_tokens=10, messages=USER)
    with pytest.raises(anthropic.RateLimitError) as slowed:
        limited.messages.create(model="test-model", max_tokens=10, messages=USER)
    assert slowed.value.response.headers.get("retry-after")
    answer = requests.post(f"{live_server}/v1/messages", timeout=10, headers={"x-api-key": api_key},
                           json={"model": "test-model", "messages": USER})
    assert answer.status_code == 400
    assert answer.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                        "message": "max_tokens: Field required."}}


def test_silences_are_pings(make_settings, make_key, fake_upstream, make_app):
    app = make_app(make_settings(server={"keepalive_interval_s": 0.1}))
    fake_upstream.responder = lambda path, body: StreamReply([(0.6, chat_chunk("late")), (0, chat_chunk(finish="stop"))])
    answer = app.test_client().post("/v1/messages", headers={"x-api-key": make_key()}, json={
        "model": "test-model", "max_tokens": 10, "messages": USER, "stream": True})
    names = [line.removeprefix("event: ") for line in answer.get_data(as_text=True).split("\n")
             if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]


def test_a_dropped_stream_is_charged_for_what_was_generated(live_server, api_key, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply([(0, chat_chunk("x"))] + [(0.05, chat_chunk("y"))] * 400)
    host, port = live_server.removeprefix("http://").split(":")
    payload = json.dumps({"model": "test-model", "max_tokens": 100, "messages": USER, "stream": True})
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"x-api-key: {api_key}\r\nContent-Length: {len(payload)}\r\n\r\n{payload}").encode())
        received = b""
        while b"text_delta" not in received:
            received += sock.recv(4096)
    assert fake_upstream.stream_aborted.wait(10)
    wait_until(usage_rows, "the dropped stream's usage row")
    [row] = usage_rows()
    assert (row.endpoint, row.status, row.streamed, row.cancelled) == ("messages", 499, True, True)
    assert row.estimated and row.completion_tokens >= 1
