"""Generation ids and stats: one id per answer (body, chunks, X-Generation-Id, usage row), GET /api/v1/generation,
and the usage rows of refused requests."""

from __future__ import annotations

import json

import pytest

from gateway import db
from gateway.accounting.operations import Settlement
from gateway.accounting.writer import writer
from gateway.tables import ApiKey, UsageEntry
from tests.fake_upstream import StreamReply, chat_chunk, usage_chunk

PAID = {"provider": "fake", "input_price_per_mtok": 2.5, "output_price_per_mtok": 10, "max_output_tokens": 100}
HI = [{"role": "user", "content": "hi"}]
PATHS = ["/v1", "/api/v1"]


both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def settings(make_settings):
    return make_settings(models={"paid-model": PAID}, limits={"rpm": 2})


def committed_rows(app) -> list[UsageEntry]:
    """The usage rows once the writer has committed everything queued so far.

    Refusal rows are queued without a wait; an operation queued after them is answered only after
    the batch holding them commits, so one settlement that writes nothing is the barrier.
    """
    writer(app).call(Settlement(1, None, None, 0, "barrier"))
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def stream_events(response) -> list[dict]:
    """The JSON events of an SSE body (comments and [DONE] left out)."""
    lines = response.get_data(as_text=True).splitlines()
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def generation(client, headers, generation_id):
    return client.get("/api/v1/generation", query_string={"id": generation_id}, headers=headers)


@both_databases
@pytest.mark.parametrize("base", PATHS)
def test_json_answer_id_is_the_generation_id_with_its_stats(client, auth_headers, base):
    answer = client.post(f"{base}/chat/completions", json={"model": "test-model", "messages": HI}, headers=auth_headers)
    generation_id = answer.headers["X-Generation-Id"]
    assert answer.json["id"] == generation_id and generation_id.startswith("gen_")
    [row] = committed_rows(client.application)
    assert (row.generation_id, row.provider, row.finish_reason, row.streamed, row.cancelled, row.ttft_ms) == (
        generation_id, "fake", "stop", False, False, None)
    data = generation(client, auth_headers, generation_id).json["data"]
    assert {key: data[key] for key in ("id", "model", "provider_name", "tokens_prompt", "tokens_completion",
                                       "finish_reason", "streamed", "cancelled", "generation_time", "api_type")} == {
        "id": generation_id, "model": "test-model", "provider_name": "fake", "tokens_prompt": 11,
        "tokens_completion": 7, "finish_reason": "stop", "streamed": False, "cancelled": False,
        "generation_time": None, "api_type": "completions"}
    assert data["latency"] == row.latency_ms and data["created_at"].endswith("Z")


@both_databases
@pytest.mark.parametrize("base", PATHS)
def test_every_chunk_carries_the_generation_id(client, auth_headers, fake_upstream, base):
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("Hel")), (0, chat_chunk("lo")), (0, chat_chunk(finish="length")), (0, usage_chunk(3, 2))])
    body = {"model": "test-model", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    answer = client.post(f"{base}/chat/completions", json=body, headers=auth_headers)
    generation_id = answer.headers["X-Generation-Id"]
    events = stream_events(answer)
    assert len(events) == 4 and {event["id"] for event in events} == {generation_id}
    [row] = committed_rows(client.application)
    assert (row.generation_id, row.streamed, row.finish_reason, row.prompt_tokens) == (generation_id, True, "length", 3)
    assert 0 <= row.ttft_ms <= row.latency_ms
    data = generation(client, auth_headers, generation_id).json["data"]
    assert data["streamed"] is True and data["generation_time"] == row.latency_ms - row.ttft_ms


def test_openrouter_error_chunk_carries_the_generation_id(client, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("partial")), (0, {"error": {"message": "model crashed"}})], done=False)
    answer = client.post("/api/v1/chat/completions", json={"model": "test-model", "messages": HI, "stream": True},
                         headers=auth_headers)
    events = stream_events(answer)
    assert events[-1]["error"]["code"] == 502 and events[-1]["choices"][0]["finish_reason"] == "error"
    assert {event["id"] for event in events} == {answer.headers["X-Generation-Id"]}
    [row] = committed_rows(client.application)
    assert (row.status, row.finish_reason, row.streamed) == (502, "error", True)


def test_responses_use_the_response_id(client, auth_headers):
    answer = client.post("/v1/responses", json={"model": "test-model", "input": "hi"}, headers=auth_headers)
    assert answer.headers["X-Generation-Id"] == answer.json["id"]
    data = generation(client, auth_headers, answer.json["id"]).json["data"]
    assert data["model"] == "test-model" and data["tokens_completion"] == 7


def test_generation_is_scoped_to_the_callers_account(client, auth_headers, make_key, api_key):
    answer = client.post("/api/v1/chat/completions", json={"model": "test-model", "messages": HI}, headers=auth_headers)
    generation_id = answer.headers["X-Generation-Id"]
    with db.database.connection_context():
        account = ApiKey.get(ApiKey.name == "tester").account
    colleague = {"Authorization": f"Bearer {make_key('colleague', account=account)}"}
    stranger = {"Authorization": f"Bearer {make_key('stranger')}"}
    assert generation(client, colleague, generation_id).json["data"]["id"] == generation_id
    hidden = generation(client, stranger, generation_id)
    assert hidden.status_code == 404 and hidden.json["error"]["code"] == 404
    unknown = generation(client, auth_headers, "gen_unknown")
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == 404
    missing = client.get("/api/v1/generation", headers=auth_headers)
    assert missing.status_code == 400 and missing.json["error"]["code"] == 400
    assert missing.json["error"]["param"] == "id"


@both_databases
@pytest.mark.parametrize("base", PATHS)
def test_refusals_write_usage_rows_with_cost_zero(client, auth_headers, make_key, base):
    def chat(model: str, headers: dict[str, str]) -> int:
        return client.post(f"{base}/chat/completions", json={"model": model, "messages": HI},
                           headers=headers).status_code

    broke = {"Authorization": f"Bearer {make_key('broke')}"}
    assert chat("paid-model", broke) == 402
    assert chat("no-such-model", auth_headers) == 404
    assert [chat("test-model", auth_headers) for _ in range(3)] == [200, 200, 429]
    assert chat("test-model", {"Authorization": "Bearer sk-gw-wrong"}) == 401
    rows = committed_rows(client.application)
    assert [(row.status, row.model, row.cost, row.generation_id is None) for row in rows] == [
        (402, "paid-model", 0, True), (404, "no-such-model", 0, True),
        (200, "test-model", 0, False), (200, "test-model", 0, False), (429, "test-model", 0, True)]
    assert {row.endpoint for row in rows} == {"chat/completions"}
    assert rows[0].api_key_id != rows[1].api_key_id and rows[1].api_key_id == rows[-1].api_key_id
