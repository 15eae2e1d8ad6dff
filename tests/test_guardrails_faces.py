"""Guardrails on the faces (gateway.api.guarded): input before the cache and admission, JSON output, errors, records.

On the fake upstream, with the official SDKs where a dialect is involved: an email redacted before the
upstream (what the fake received), a card number blocked with the error in each dialect (/v1, /api/v1,
/v1/messages, Responses), a blocked request that holds and charges nothing (its refusal row names the
guardrail), JSON output redacted or blocked (charged: it was generated), the usage row's `guardrails`
column, the metric, and the matched text never in rows or logs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anthropic
import openai
import pytest
import requests
from websockets.sync.client import connect

from gateway import create_app, db, lifecycle
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.tables import ApiKey, LedgerEntry, Reservation, UsageEntry
from tests.fake_upstream import (
    JsonReply,
    StreamReply,
    chat_chunk,
    chat_completion,
    default_responder,
    usage_chunk,
)
from tests.polling import wait_until
from tests.test_metrics import samples, value

EMAIL, CARD = "alice@example.com", "4111 1111 1111 1111"  # the card passes Luhn
GUARDRAILS = {
    "emails": {"type": "pii", "stages": ["input", "output"], "action": "redact", "default": True,
               "detectors": ["email"]},
    "cards": {"type": "pii", "stages": ["input", "output"], "action": "block", "default": True,
              "detectors": ["card"]},
}
PRICED = {"input_price_per_mtok": 1000, "output_price_per_mtok": 2000, "retries": 0}
BLOCKED = "Blocked by guardrail 'cards' (input)."


@pytest.fixture
def settings(make_settings):
    return make_settings(guardrails=GUARDRAILS, models={"test-model": PRICED})


@pytest.fixture
def key(make_key) -> str:
    secret = make_key("guarded")
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == "guarded").account_id, 10_000_000)
    return secret


@pytest.fixture
def sdk(live_server, key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=key, max_retries=0, timeout=20)


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "test-model", "messages": [{"role": "user", "content": text}], "max_tokens": 20, **extra}


def rows() -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def charged() -> int:
    with db.database.connection_context():
        return sum(abs(entry.amount) for entry in LedgerEntry.select().where(LedgerEntry.kind == "charge"))


def holds() -> int:
    with db.database.connection_context():
        return Reservation.select().count()


def fired(row: UsageEntry) -> list[dict[str, str]]:
    return json.loads(row.guardrails) if row.guardrails else []


def answering(text: str):
    """A responder whose chat answers are `text` (everything else as the default fake)."""
    def respond(path: str, body: dict[str, Any]):
        if path.endswith("/chat/completions") and body.get("stream"):
            return StreamReply([(0, chat_chunk(role="assistant", content="")), (0, chat_chunk(text)),
                                (0, chat_chunk(finish="stop")), (0, usage_chunk())])
        if path.endswith("/chat/completions"):
            return JsonReply(chat_completion(text, model=body.get("model", "upstream-model")))
        return default_responder(path, body)
    return respond


# -- input ---------------------------------------------------------------------------------------


def test_an_email_is_redacted_before_the_upstream(sdk, fake_upstream):
    answer = sdk.chat.completions.create(**chat(f"Write to {EMAIL} today"))
    assert answer.choices[0].message.content == "Hello from upstream"
    assert fake_upstream.bodies()[-1]["messages"] == [{"role": "user", "content": "Write to [EMAIL] today"}]
    [row] = rows()
    assert row.status == 200 and fired(row) == [{"name": "emails", "action": "redact", "stage": "input"}]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("completions", {"model": "test-model", "prompt": f"Mail {EMAIL}", "max_tokens": 5}, "prompt"),
    ("embeddings", {"model": "test-model", "input": [f"Mail {EMAIL}"]}, "input"),
])
def test_legacy_completions_and_embeddings_are_redacted(live_server, key, fake_upstream, path, body, field):
    answer = requests.post(f"{live_server}/v1/{path}", json=body, timeout=20, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    assert EMAIL not in json.dumps(fake_upstream.bodies()[-1][field])
    assert "[EMAIL]" in json.dumps(fake_upstream.bodies()[-1][field])


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_card_is_blocked_on_v1_and_holds_and_charges_nothing(sdk, fake_upstream):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(**chat(f"My card is {CARD}"))
    assert refused.value.status_code == 400
    assert refused.value.code == "content_policy_violation"
    assert refused.value.body["message"] == BLOCKED and refused.value.body["type"] == "invalid_request_error"
    assert fake_upstream.bodies() == []
    assert charged() == 0 and holds() == 0
    wait_until(lambda: len(rows()) == 1, "the refusal's row (queued to the writer, not waited for)")
    [row] = rows()
    assert (row.status, row.cost, row.endpoint, row.model) == (400, 0, "chat/completions", "test-model")
    assert fired(row) == [{"name": "cards", "action": "block", "stage": "input"}]


def test_a_card_is_blocked_in_openrouters_dialect(live_server, key, fake_upstream):
    answer = requests.post(f"{live_server}/api/v1/chat/completions", json=chat(f"card {CARD}"), timeout=20,
                           headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 400 and answer.json()["error"]["message"] == BLOCKED
    assert fake_upstream.bodies() == []


def test_a_card_is_blocked_on_messages_in_anthropics_dialect(live_server, key, fake_upstream):
    client = anthropic.Anthropic(base_url=live_server, api_key=key, max_retries=0, timeout=20)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="test-model", max_tokens=20, messages=[{"role": "user", "content": f"c {CARD}"}])
    assert refused.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": BLOCKED}}
    assert fake_upstream.bodies() == []
    answer = client.messages.create(model="test-model", max_tokens=20, system=f"Owner: {EMAIL}",
                                    messages=[{"role": "user", "content": [{"type": "text", "text": EMAIL}]}])
    assert answer.content[0].text == "Hello from upstream"
    assert EMAIL not in json.dumps(fake_upstream.bodies()[-1]) and "[EMAIL]" in json.dumps(fake_upstream.bodies()[-1])


def test_responses_answer_a_failed_response_with_the_code(sdk, live_server, key, fake_upstream):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="test-model", input=f"card {CARD}")
    assert refused.value.code == "content_policy_violation"
    raw = requests.post(f"{live_server}/v1/responses", json={"model": "test-model", "input": f"card {CARD}"},
                        timeout=20, headers={"Authorization": f"Bearer {key}"})
    assert raw.status_code == 400
    assert raw.json()["object"] == "response" and raw.json()["status"] == "failed"
    assert raw.json()["error"] == {"message": BLOCKED, "type": "invalid_request_error", "param": None,
                                   "code": "content_policy_violation"}
    streamed = requests.post(f"{live_server}/v1/responses", timeout=20, headers={"Authorization": f"Bearer {key}"},
                             json={"model": "test-model", "input": f"card {CARD}", "stream": True})
    assert streamed.status_code == 400 and streamed.json()["error"]["code"] == "content_policy_violation"
    compacted = requests.post(f"{live_server}/v1/responses/compact", timeout=20,
                              headers={"Authorization": f"Bearer {key}"},
                              json={"model": "test-model", "input": f"card {CARD}"})
    assert compacted.status_code == 400 and compacted.json()["error"]["code"] == "content_policy_violation"
    assert fake_upstream.bodies() == [] and charged() == 0 and holds() == 0
    answer = sdk.responses.create(model="test-model", input=f"mail {EMAIL}", instructions=f"cc {EMAIL}")
    assert answer.status == "completed"
    assert EMAIL not in json.dumps(fake_upstream.bodies()[-1]["messages"])


def test_a_profile_route_applies_its_profiles_guardrails(make_settings, make_key, fake_upstream):
    settings = make_settings(
        guardrails={"phones": {"type": "pii", "action": "redact", "detectors": ["phone"]}},
        profiles={"acme/default": {"mcp_servers": [], "guardrails": ["phones"]}})
    app = create_app(settings)
    db.upgrade()
    try:
        with db.database.connection_context(), db.database.atomic():
            _, secret = create_key("profiled", scope="acme")
        client, headers = app.test_client(), {"Authorization": f"Bearer {secret}"}
        phone = "call +1 415 555 0100 now"
        assert client.post("/v1/chat/completions", json=chat(phone), headers=headers).status_code == 200
        assert fake_upstream.bodies()[-1]["messages"][0]["content"] == phone  # no guardrail outside the profile
        answer = client.post("/api/v1/openai/acme/default/chat/completions", json=chat(phone), headers=headers)
        assert answer.status_code == 200
        assert "[PHONE]" in fake_upstream.bodies()[-1]["messages"][0]["content"]
    finally:
        lifecycle.close(app)


def test_a_websocket_turn_is_blocked_with_an_error_frame(live_server, key, fake_upstream):
    with connect(live_server.replace("http://", "ws://") + "/v1/responses",
                 additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=5, close_timeout=2) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "test-model", "input": f"card {CARD}"}))
        frame = json.loads(ws.recv(timeout=10))
    assert frame["type"] == "error" and frame["status"] == 400
    assert frame["error"]["code"] == "content_policy_violation" and frame["error"]["message"] == BLOCKED
    assert fake_upstream.bodies() == []


# -- output (JSON) ---------------------------------------------------------------------------------


def test_a_json_answer_is_redacted(sdk, fake_upstream):
    fake_upstream.responder = answering(f"Write to {EMAIL}.")
    answer = sdk.chat.completions.create(**chat("hi"))
    assert answer.choices[0].message.content == "Write to [EMAIL]."
    [row] = rows()
    assert fired(row) == [{"name": "emails", "action": "redact", "stage": "output"}]


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_blocked_json_answer_is_charged_then_refused(sdk, live_server, key, fake_upstream):
    fake_upstream.responder = answering(f"Your card: {CARD}")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(**chat("hi"))
    assert refused.value.code == "content_policy_violation"
    assert refused.value.body["message"] == "Blocked by guardrail 'cards' (output)."
    [row] = rows()
    assert row.status == 400 and row.cost > 0 and row.completion_tokens == 7
    assert charged() == row.cost
    assert fired(row) == [{"name": "cards", "action": "block", "stage": "output"}]
    with db.database.connection_context():
        assert Reservation.select().where(Reservation.status == "open").count() == 0
    messages = requests.post(f"{live_server}/v1/messages", timeout=20, headers={"x-api-key": key},
                             json={"model": "test-model", "max_tokens": 20, "messages": [{"role": "user",
                                                                                          "content": "hi"}]})
    assert messages.status_code == 400 and messages.json()["error"]["type"] == "invalid_request_error"


def test_a_responses_answer_is_redacted(sdk, fake_upstream):
    fake_upstream.responder = answering(f"Write to {EMAIL}.")
    answer = sdk.responses.create(model="test-model", input="hi")
    assert answer.status == "completed" and answer.output_text == "Write to [EMAIL]."
    assert EMAIL not in json.dumps(sdk.responses.retrieve(answer.id).model_dump())
    [row] = rows()
    assert fired(row) == [{"name": "emails", "action": "redact", "stage": "output"}]


def test_the_cache_key_sees_the_redacted_body(make_settings, make_key, fake_upstream):
    app = create_app(make_settings(guardrails=GUARDRAILS, cache={"enabled": True}))
    db.upgrade()
    try:
        with db.database.connection_context(), db.database.atomic():
            _, secret = create_key("cached")
        client, headers = app.test_client(), {"Authorization": f"Bearer {secret}"}
        first = client.post("/v1/chat/completions", json=chat(f"to {EMAIL}"), headers=headers)
        second = client.post("/v1/chat/completions", json=chat("to bob@example.org"), headers=headers)
        assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
        assert len(fake_upstream.bodies()) == 1
    finally:
        lifecycle.close(app)


def test_a_blocked_responses_answer_is_a_failed_response(live_server, key, fake_upstream):
    fake_upstream.responder = answering(f"Your card: {CARD}")
    raw = requests.post(f"{live_server}/v1/responses", json={"model": "test-model", "input": "hi"},
                        timeout=20, headers={"Authorization": f"Bearer {key}"})
    assert raw.status_code == 400
    assert raw.json()["status"] == "failed" and raw.json()["error"]["code"] == "content_policy_violation"
    assert CARD not in raw.text
    assert raw.json()["usage"]["output_tokens"] > 0  # what was generated, and charged
    [row] = rows()
    assert row.status == 400 and row.cost > 0


# -- records ---------------------------------------------------------------------------------------


def test_the_metric_counts_guardrails_by_name_action_and_stage(app, sdk, fake_upstream):
    client = app.test_client()
    before = samples(client.get("/metrics").get_data(as_text=True))
    sdk.chat.completions.create(**chat(f"to {EMAIL}"))
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(**chat(f"card {CARD}"))
    after = samples(client.get("/metrics").get_data(as_text=True))
    name = "gateway_guardrail_actions_total"
    redacted = dict(guardrail="emails", action="redact", stage="input")
    blocked = dict(guardrail="cards", action="block", stage="input")
    assert value(after, name, **redacted) - value(before, name, **redacted) == 1
    assert value(after, name, **blocked) - value(before, name, **blocked) == 1


def test_the_matched_text_is_never_in_rows_or_logs(sdk, fake_upstream, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    sdk.chat.completions.create(**chat(f"to {EMAIL}"))
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(**chat(f"card {CARD}"))
    fake_upstream.responder = answering(f"Your card: {CARD}")
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(**chat("hi"))
    stored = json.dumps([row.__data__ for row in rows()], default=str)
    logged = caplog.text + "".join(path.read_text() for path in tmp_path.glob("*.log"))
    for secret in (EMAIL, CARD, CARD.replace(" ", "")):
        assert secret not in stored and secret not in logged
    assert "cards" in stored and "emails" in stored


def test_without_guardrails_nothing_changes(make_settings, make_key, fake_upstream):
    app = create_app(make_settings())
    db.upgrade()
    try:
        with db.database.connection_context(), db.database.atomic():
            _, secret = create_key("plain")
        answer = app.test_client().post("/v1/chat/completions", json=chat(f"{EMAIL} {CARD}"),
                                        headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 200
        assert fake_upstream.bodies()[-1]["messages"][0]["content"] == f"{EMAIL} {CARD}"
        assert [row.guardrails for row in rows()] == [None]
    finally:
        lifecycle.close(app)


def test_a_keys_own_guardrails_apply_to_its_requests_only(make_settings, fake_upstream):
    app = create_app(make_settings(guardrails={"phones": {"type": "pii", "action": "redact", "detectors": ["phone"]}}))
    db.upgrade()
    try:
        with db.database.connection_context(), db.database.atomic():
            guarded_key, guarded_secret = create_key("with-phones")
            _, plain_secret = create_key("without")
            ApiKey.update(guardrails=json.dumps(["phones"])).where(ApiKey.id == guarded_key.id).execute()
        client, phone = app.test_client(), "call +1 415 555 0100 now"
        for secret, expected in ((plain_secret, phone), (guarded_secret, "call [PHONE] now")):
            answer = client.post("/v1/chat/completions", json=chat(phone), headers={"Authorization": f"Bearer {secret}"})
            assert answer.status_code == 200
            assert fake_upstream.bodies()[-1]["messages"][0]["content"] == expected
    finally:
        lifecycle.close(app)
