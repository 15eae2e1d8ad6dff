"""Output guardrails on streamed answers: a secret split across 3 chunks, redacted or blocked, in every dialect.

The fake upstream streams `Your key is sk-proj-...` in three pieces (the key cut twice). With `redact`
the client's accumulated text (read by the official SDKs) has `[SECRET]` and never the key; with
`block` the stream ends with the dialect's error event (chat `error`, Responses `response.failed`,
Messages `error`) and the request is charged for what was generated. Ids, usage and finish chunks
pass as they are; the chunk plumbing itself is tested with a stand-in window.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import requests

from gateway import create_app, db, lifecycle
from gateway.accounting import credits
from gateway.accounting.keys import create_key, set_guardrails
from gateway.tables import ApiKey, LedgerEntry, UsageEntry
from gateway.upstream.checked_text import CheckedChunks
from tests import fake_anthropic
from tests.fake_upstream import StreamReply, chat_chunk, usage_chunk
from tests.native_providers import Backend, running_backend
from tests.provider_fake import Events

SECRET = "sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"
PIECES = ["Your key is sk-pr", "oj-A1b2C3d4E5f6G7h8", "I9j0K1l2M3n4O5p6, keep it safe."]
REDACTED = "Your key is [SECRET], keep it safe."
FRAGMENTS = ("sk-pr", "A1b2", "G7h8", "O5p6")  # no piece of the key may reach the client
PRICE = {"input_price_per_mtok": 1000, "output_price_per_mtok": 1000}
USER = [{"role": "user", "content": "What is my key?"}]
GRANT = 10_000_000


@pytest.fixture
def action() -> str:
    return "redact"


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    with running_backend("anthropic", monkeypatch) as backend:
        yield backend


@pytest.fixture
def settings(make_settings, action: str, native: Backend):
    return make_settings(
        guardrails={"secrets": {"type": "pii", "stages": ["output"], "action": action, "default": True,
                                "detectors": ["secret"]}},
        providers={"native": native.settings},
        models={"test-model": PRICE, "native-model": {"provider": "native", "upstream_model": "native-upstream",
                                                      "retries": 0, **PRICE}},
    )


@pytest.fixture
def key(make_key) -> str:
    secret = make_key("streams")
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == "streams").account_id, GRANT)
    return secret


@pytest.fixture
def openai_sdk(live_server: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=key, max_retries=0, timeout=20)


@pytest.fixture
def anthropic_sdk(live_server: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live_server, api_key=key, max_retries=0, timeout=20)


def chat_events(usage: bool = True) -> list[tuple[float, Any]]:
    """The key in three chat chunks, then the finish chunk and (maybe) the usage chunk."""
    events = [(0, chat_chunk(role="assistant", content="")), *((0, chat_chunk(piece)) for piece in PIECES),
              (0, chat_chunk(finish="stop"))]
    return [*events, (0, usage_chunk(11, 9))] if usage else events


def legacy_events() -> list[tuple[float, Any]]:
    """The key in three legacy completion chunks; the last one also finishes."""
    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {"id": "cmpl-fake", "object": "text_completion", "created": 1700000000, "model": "upstream-model",
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}
    return [(0, chunk(PIECES[0])), (0, chunk(PIECES[1])), (0, chunk(PIECES[2], "stop")), (0, usage_chunk(4, 9))]


def native_events() -> Events:
    """An Anthropic Messages stream whose one text block carries the key in three deltas."""
    answer = fake_anthropic.message([{"type": "text", "text": "".join(PIECES)}])
    head = fake_anthropic.stream_events(answer).events[:3]  # message_start, ping, content_block_start
    deltas = [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": piece}}) for piece in PIECES]
    tail = fake_anthropic.stream_events(answer).events[-3:]  # content_block_stop, message_delta, message_stop
    return Events([*head, *deltas, *tail])


def rows() -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def charged(key_name: str = "streams") -> tuple[list[int], int]:
    """The charges written and the account's balance."""
    with db.database.connection_context():
        account = ApiKey.get(ApiKey.name == key_name).account_id
        amounts = [abs(entry.amount) for entry in LedgerEntry.select().where(LedgerEntry.kind == "charge")]
        return amounts, credits.balance_of(account)


def assert_charged_for_what_was_generated(endpoint: str) -> UsageEntry:
    """One 400 row whose output is what was generated before the block, charged at the model's price."""
    [row] = rows()
    assert (row.endpoint, row.status) == (endpoint, 400)
    assert row.completion_tokens > 0 and row.cost == (row.prompt_tokens + row.completion_tokens) * 1000
    amounts, balance = charged()
    assert amounts == [row.cost] and balance == GRANT - row.cost
    assert json.loads(row.guardrails) == [{"name": "secrets", "action": "block", "stage": "output"}]
    return row


def assert_no_fragment(text: str) -> None:
    assert not [fragment for fragment in FRAGMENTS if fragment in text], text


# chat completions


def test_chat_stream_redacts_a_key_split_across_three_chunks(openai_sdk, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(chat_events())
    chunks = list(openai_sdk.chat.completions.create(model="test-model", messages=USER, stream=True,
                                                     stream_options={"include_usage": True}))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == REDACTED
    assert len({chunk.id for chunk in chunks}) == 1
    finishing = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert [chunk.choices[0].finish_reason for chunk in finishing] == ["stop"]
    assert not finishing[0].choices[0].delta.content  # the finish chunk passes as it came
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 9  # the usage chunk last, as sent
    [row] = rows()
    assert row.status == 200 and row.completion_tokens == 9
    assert json.loads(row.guardrails) == [{"name": "secrets", "action": "redact", "stage": "output"}]


def test_the_raw_chat_stream_holds_back_only_a_tail(live_server, key, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(chat_events(usage=False))
    answer = requests.post(f"{live_server}/v1/chat/completions", timeout=20, headers={"Authorization": f"Bearer {key}"},
                           json={"model": "test-model", "messages": USER, "stream": True}, stream=True)
    data = [line.removeprefix("data: ") for line in answer.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert all("usage" not in chunk for chunk in chunks)  # the client did not ask for it
    texts = [chunk["choices"][0]["delta"].get("content") for chunk in chunks]
    assert "".join(text or "" for text in texts) == REDACTED
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["choices"][0]["delta"] == {}
    assert_no_fragment(json.dumps(chunks))


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("action", ["block"])
def test_chat_stream_block_ends_with_the_error_chunk_and_charges_what_was_generated(openai_sdk, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(chat_events())
    stream = openai_sdk.chat.completions.create(model="test-model", messages=USER, stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received += [chunk.choices[0].delta.content or ""] if chunk.choices else []
    assert caught.value.code == "content_policy_violation"
    assert caught.value.message == "Blocked by guardrail 'secrets' (output)."
    assert_no_fragment("".join(received))
    row = assert_charged_for_what_was_generated("chat/completions")
    assert row.estimated  # the upstream's usage chunk never came: the generated text's estimate


@pytest.mark.parametrize("action", ["block"])
def test_openrouter_clients_get_the_block_as_an_error_chunk(live_server, key, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(chat_events())
    sdk = openai.OpenAI(base_url=f"{live_server}/api/v1", api_key=key, max_retries=0, timeout=20)
    with pytest.raises(openai.APIError) as caught:
        list(sdk.chat.completions.create(model="test-model", messages=USER, stream=True))
    assert caught.value.body["code"] == 400 and caught.value.body["type"] == "invalid_request_error"
    assert "'secrets'" in caught.value.message


def test_legacy_completions_stream_is_redacted(openai_sdk, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(legacy_events())
    chunks = list(openai_sdk.completions.create(model="test-model", prompt="key?", stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == REDACTED
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"


@pytest.mark.parametrize("action", ["block"])
def test_legacy_completions_stream_block(openai_sdk, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(legacy_events())
    with pytest.raises(openai.APIError) as caught:
        list(openai_sdk.completions.create(model="test-model", prompt="key?", stream=True))
    assert caught.value.code == "content_policy_violation"
    assert_charged_for_what_was_generated("completions")


# Anthropic Messages: translated (an OpenAI-compatible model) and native (an Anthropic-type one)


@pytest.mark.parametrize("model", ["test-model", "native-model"])
def test_messages_stream_is_redacted(anthropic_sdk, fake_upstream, native, model):
    fake_upstream.responder = lambda path, body: StreamReply(chat_events())
    native.fake.script.append(native_events())
    with anthropic_sdk.messages.stream(model=model, max_tokens=100, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REDACTED and final.content[0].text == REDACTED
    assert final.stop_reason == "end_turn"
    [row] = rows()
    assert row.status == 200


@pytest.mark.parametrize("action", ["block"])
@pytest.mark.parametrize("model", ["test-model", "native-model"])
def test_messages_stream_block_ends_with_the_error_event(anthropic_sdk, fake_upstream, native, model):
    fake_upstream.responder = lambda path, body: StreamReply(chat_events())
    native.fake.script.append(native_events())
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught, \
            anthropic_sdk.messages.stream(model=model, max_tokens=100, messages=USER) as stream:
        received += stream.text_stream
    error = caught.value.body["error"]
    assert error == {"type": "invalid_request_error", "message": "Blocked by guardrail 'secrets' (output)."}
    assert_no_fragment("".join(received))
    assert_charged_for_what_was_generated("messages")


# Responses


def test_responses_stream_is_redacted(openai_sdk, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(chat_events())
    events = list(openai_sdk.responses.create(model="test-model", input="What is my key?", stream=True))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == REDACTED
    done = [event for event in events if event.type == "response.output_text.done"]
    assert done[0].text == REDACTED
    assert events[-1].type == "response.completed" and events[-1].response.output_text == REDACTED
    assert_no_fragment(json.dumps([event.model_dump() for event in events]))


@pytest.mark.parametrize("action", ["block"])
def test_responses_stream_block_is_the_sdks_error(openai_sdk, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(chat_events())
    received: list[Any] = []
    with pytest.raises(openai.APIError) as caught:  # the SDK raises on the `error` event before `response.failed`
        received += openai_sdk.responses.create(model="test-model", input="What is my key?", stream=True)
    assert caught.value.code == "content_policy_violation"
    assert caught.value.message == "Blocked by guardrail 'secrets' (output)."


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("action", ["block"])
def test_responses_stream_block_ends_with_response_failed_and_charges_what_was_generated(live_server, key,
                                                                                       fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(chat_events())
    answer = requests.post(f"{live_server}/v1/responses", timeout=20, headers={"Authorization": f"Bearer {key}"},
                           json={"model": "test-model", "input": "What is my key?", "stream": True}, stream=True)
    assert answer.status_code == 200
    data = [line.removeprefix("data: ") for line in answer.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    events = [json.loads(item) for item in data if item != "[DONE]"]
    assert [event["type"] for event in events][-2:] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "content_policy_violation"
    assert failed["error"]["message"] == "Blocked by guardrail 'secrets' (output)."
    assert_no_fragment(json.dumps(events))
    assert_charged_for_what_was_generated("responses")


# the response cache


def test_a_cached_answer_is_never_replayed_to_a_request_under_other_guardrails(make_settings, fake_upstream):
    app = create_app(make_settings(cache={"enabled": True}, guardrails={"secrets": {
        "type": "pii", "stages": ["output"], "action": "redact", "detectors": ["secret"]}}))
    db.upgrade()
    try:
        with db.database.connection_context(), db.database.atomic():
            plain, plain_secret = create_key("plain")
            _, guarded_secret = create_key("guarded", plain.account)  # the same account: the same cache scope
            set_guardrails(ApiKey.get(ApiKey.name == "guarded"), '["secrets"]')
        fake_upstream.responder = lambda path, body: StreamReply(chat_events())
        client, ask = app.test_client(), {"model": "test-model", "messages": USER, "stream": True}
        first = client.post("/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {plain_secret}"})
        assert SECRET in streamed_text(first.get_data(as_text=True))  # read whole: the miss is stored at its end
        again = client.post("/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {plain_secret}"})
        assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("MISS", "HIT")
        assert SECRET in streamed_text(again.get_data(as_text=True))  # no guardrail on this key
        guarded = client.post("/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {guarded_secret}"})
        assert streamed_text(guarded.get_data(as_text=True)) == REDACTED and guarded.headers["X-Cache"] == "MISS"
        guarded_again = client.post("/v1/chat/completions", json=ask,
                                    headers={"Authorization": f"Bearer {guarded_secret}"})
        assert guarded_again.headers["X-Cache"] == "HIT"  # its own answer, stored redacted
        assert streamed_text(guarded_again.get_data(as_text=True)) == REDACTED
    finally:
        lifecycle.close(app)


def streamed_text(body: str) -> str:
    lines = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")]
    chunks = [json.loads(line) for line in lines if line != "[DONE]"]
    return "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk.get("choices") or [])


# the chunk plumbing, with a stand-in window


class HoldLastThree:
    """A stand-in window: upper-cases the text, holds back its last three characters until finish."""

    def __init__(self) -> None:
        self.held = ""

    def feed(self, delta: str) -> str:
        text = self.held + delta.upper()
        self.held = text[-3:]
        return text[:-3]

    def finish(self) -> str:
        rest, self.held = self.held, ""
        return rest


def chat(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def test_a_finish_chunk_without_text_gets_the_tail_in_a_chunk_of_its_own_before_it():
    checked = CheckedChunks(HoldLastThree)
    assert checked.rewrite(chat(content="hello")) == [chat(content="HE")]
    assert checked.rewrite(chat(finish="stop")) == [
        {"id": "c1", "object": "chat.completion.chunk", "model": "m",
         "choices": [{"index": 0, "delta": {"content": "LLO"}, "finish_reason": None}]},
        chat(finish="stop")]


def test_a_finish_chunk_with_text_carries_its_tail():
    checked = CheckedChunks(HoldLastThree)
    checked.rewrite(chat(content="ab"))
    assert checked.rewrite(chat(content="cd", finish="length")) == [chat(content="ABCD", finish="length")]


def test_tool_calls_and_roles_pass_and_each_choice_has_its_own_window():
    checked = CheckedChunks(HoldLastThree)
    call = [{"index": 0, "id": "x", "function": {"name": "f", "arguments": "{}"}}]
    assert checked.rewrite(chat(role="assistant", tool_calls=call)) == [chat(role="assistant", tool_calls=call)]
    assert checked.rewrite(chat(0, content="abcd")) == [chat(0, content="A")]
    assert checked.rewrite(chat(1, content="wxyz")) == [chat(1, content="W")]
    usage = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [],
             "usage": {"prompt_tokens": 1}}
    tails = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [
        {"index": 0, "delta": {"content": "BCD"}, "finish_reason": None},
        {"index": 1, "delta": {"content": "XYZ"}, "finish_reason": None}]}
    assert checked.rewrite(usage) == [tails, usage]  # tails never finished: flushed before the usage chunk
    assert checked.rest(usage) == []


def test_legacy_choices_keep_their_form():
    checked = CheckedChunks(HoldLastThree)
    first = {"id": "c", "choices": [{"index": 0, "text": "abcdef", "finish_reason": None, "logprobs": None}]}
    assert checked.rewrite(first)[0]["choices"][0]["text"] == "ABC"
    assert checked.rest({"id": "c"}) == [{"id": "c", "choices": [
        {"index": 0, "text": "DEF", "finish_reason": None, "logprobs": None}]}]
