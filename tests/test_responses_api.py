"""POST /v1/responses over HTTP: JSON, the SSE lifecycle, failures, billing, compaction, background."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import openresponses_types as spec
import pytest

from gateway import db, lifecycle
from gateway.tables import StoredResponse, UsageEntry
from gateway.upstream.sse import SseDecoder
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, chat_completion, usage_chunk
from tests.test_response_builder import check_stream, spec_json, validate_response

PAID_MODEL = {"paid-model": {"provider": "fake", "output_price_per_mtok": 1000, "max_output_tokens": 50}}


@pytest.fixture
def settings(make_settings):
    return make_settings(models=PAID_MODEL, server={"keepalive_interval_s": 0.05})


def ask(client, headers: dict[str, str], **body: Any):
    """POST /v1/responses with `model: test-model` unless given."""
    return client.post("/v1/responses", json={"model": "test-model", "input": "hi", **body}, headers=headers)


def stream_frames(answer) -> list[bytes]:
    """The chunks the server yielded, one per write."""
    assert answer.status_code == 200, answer.get_data()
    assert answer.mimetype == "text/event-stream"
    return [bytes(chunk) for chunk in answer.response]


def stream_events(frames: list[bytes]) -> list[dict[str, Any]]:
    """Every frame is one whole event (or a keep-alive comment); `event:` equals `type`; ends with [DONE]."""
    events: list[dict[str, Any]] = []
    for chunk in frames:
        assert chunk.endswith(b"\n\n")
        if chunk.startswith(b":"):
            assert chunk == b": keep-alive\n\n"
            continue
        [parsed] = list(SseDecoder().feed(chunk))
        if parsed.data == "[DONE]":
            events.append({"type": "[DONE]"})
            continue
        event = json.loads(parsed.data)
        assert parsed.event == event["type"]
        events.append(event)
    assert events[-1] == {"type": "[DONE]"}
    check_stream(events[:-1])
    return events[:-1]


def text_stream(*pieces: str, finish: str = "stop", delay: float = 0) -> StreamReply:
    events = [(delay, chat_chunk(piece)) for piece in pieces]
    return StreamReply([*events, (0, chat_chunk(finish=finish)), (0, usage_chunk(9, len(pieces)))])


def rows() -> list[StoredResponse]:
    with db.database.connection_context():
        return list(StoredResponse.select().order_by(StoredResponse.created_at))


def usage_rows() -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def test_json_response_echoes_the_request_and_is_stored(client, auth_headers, fake_upstream):
    answer = ask(
        client,
        auth_headers,
        instructions="Be brief.",
        temperature=0.5,
        metadata={"k": "v"},
        max_output_tokens=64,
    )
    assert answer.status_code == 200
    response = answer.json
    validate_response(response)
    assert response["status"] == "completed" and response["completed_at"] is not None
    assert response["output"][0]["content"][0]["text"] == "Hello world"
    assert (response["instructions"], response["temperature"], response["metadata"]) == (
        "Be brief.",
        0.5,
        {"k": "v"},
    )
    assert response["usage"] == {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 18,
        "cost": 0.0,
    }
    sent = fake_upstream.bodies()[-1]
    assert sent["model"] == "upstream-model" and sent["stream"] is True and sent["max_tokens"] == 64
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert client.get(f"/v1/responses/{response['id']}", headers=auth_headers).json == response
    [row] = usage_rows()
    assert (row.endpoint, row.status, row.prompt_tokens, row.completion_tokens) == ("responses", 200, 11, 7)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"bogus": 1}, 400, "bogus"),
        ({"input": [{"type": "nope"}]}, 400, "input[0].type"),
        ({"tool_choice": {"type": "function", "name": "missing"}}, 422, "tool_choice.name"),
        ({"background": True, "store": False}, 400, "store"),
        ({"model": "no-such-model"}, 404, "model"),
    ],
)
def test_invalid_requests_fail_before_any_event(client, auth_headers, fake_upstream, body, status, param):
    answer = ask(client, auth_headers, stream=True, **body)
    assert answer.status_code == status
    assert answer.mimetype == "application/json"
    assert answer.json["error"]["param"] == param
    assert fake_upstream.requests == []


def test_stream_follows_the_lifecycle_one_event_per_write(client, auth_headers):
    events = stream_events(stream_frames(ask(client, auth_headers, stream=True)))
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello world"
    stored = client.get(f"/v1/responses/{final['id']}", headers=auth_headers).json
    assert stored == final


def test_keep_alive_comments_during_silence(client, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: text_stream("slow", delay=0.5)
    frames = stream_frames(ask(client, auth_headers, stream=True))
    assert b": keep-alive\n\n" in frames
    assert stream_events(frames)[-1]["response"]["status"] == "completed"


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_truncated_answers_are_incomplete_in_json_and_stream(
    client, auth_headers, fake_upstream, finish, reason
):
    fake_upstream.responder = lambda path, body: text_stream("cut", finish=finish)
    response = ask(client, auth_headers, max_output_tokens=3).json
    validate_response(response)
    assert (response["status"], response["incomplete_details"]) == ("incomplete", {"reason": reason})
    assert fake_upstream.bodies()[-1]["max_tokens"] == 3
    events = stream_events(stream_frames(ask(client, auth_headers, max_output_tokens=3, stream=True)))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": reason}
    assert [row.status for row in rows()] == ["incomplete", "incomplete"]


def test_upstream_failure_mid_stream_is_an_error_event_then_failed(client, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("partial")), (0, {"error": {"message": "model crashed"}})], done=False
    )
    events = stream_events(stream_frames(ask(client, auth_headers, stream=True)))
    types = [event["type"] for event in events]
    # the error, then the open item is closed (as incomplete), then response.failed
    assert types[types.index("error") :] == [
        "error",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.failed",
    ]
    assert "model crashed" in events[types.index("error")]["message"]
    assert events[-2]["item"]["status"] == "incomplete"
    failed = events[-1]["response"]
    assert (
        failed["error"]["code"] == "upstream_error" and failed["output"][0]["content"][0]["text"] == "partial"
    )
    assert client.get(f"/v1/responses/{failed['id']}", headers=auth_headers).json["status"] == "failed"


def test_upstream_5xx_before_output_is_an_http_error_and_a_stored_failure(client, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: JsonReply({"error": {"message": "down"}}, status=500)
    answer = ask(client, auth_headers)
    assert answer.status_code == 502 and answer.mimetype == "application/json"
    error = answer.json["error"]
    assert (error["type"], error["code"]) == ("api_error", "upstream_error") and "down" in error["message"]
    [row] = rows()
    stored = client.get(f"/v1/responses/{row.id}", headers=auth_headers).json
    validate_response(stored)
    assert stored["status"] == "failed" and stored["error"] == {k: error[k] for k in ("type", "code", "message")}
    assert [row.status for row in usage_rows()] == [502]


def test_failure_after_output_is_a_failed_response_with_an_error_type(client, auth_headers, fake_upstream):
    replies = iter([
        StreamReply([(0, chat_chunk("partial")), (0, {"error": {"message": "model crashed"}})], done=False),
    ])
    fake_upstream.responder = lambda path, body: next(replies)
    answer = ask(client, auth_headers)
    assert answer.status_code == 200
    validate_response(answer.json)
    assert answer.json["status"] == "failed" and answer.json["output"][0]["content"][0]["text"] == "partial"
    error = answer.json["error"]
    assert error["type"] == "api_error" and error["code"] == "upstream_error" and "model crashed" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_4xx_before_output_is_an_http_error(client, auth_headers, fake_upstream, stream):
    fake_upstream.responder = lambda path, body: JsonReply(
        {"error": {"message": "context too long", "code": "context_length_exceeded"}}, status=400
    )
    answer = ask(client, auth_headers, stream=stream)
    assert answer.status_code == 400 and answer.mimetype == "application/json"
    assert answer.json["error"]["code"] == "context_length_exceeded"
    assert rows() == [] and [row.status for row in usage_rows()] == [400]


@pytest.mark.parametrize("stream", [False, True])
def test_empty_balance_is_402_before_any_event(client, auth_headers, fake_upstream, stream):
    answer = ask(client, auth_headers, model="paid-model", stream=stream)
    assert answer.status_code == 402 and answer.mimetype == "application/json"
    assert answer.json["error"]["code"] == "insufficient_balance"
    assert fake_upstream.requests == [] and rows() == []


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_input_items_pages_in_openai_list_shape(client, auth_headers):
    items = [{"role": "user", "content": f"m{index}"} for index in range(5)]
    response_id = ask(client, auth_headers, input=items).json["id"]
    url = f"/v1/responses/{response_id}/input_items"
    newest = client.get(url, query_string={"limit": 2}, headers=auth_headers).json
    assert newest["object"] == "list" and newest["has_more"] is True
    assert [item["content"][0]["text"] for item in newest["data"]] == ["m4", "m3"]
    assert (newest["first_id"], newest["last_id"]) == (newest["data"][0]["id"], newest["data"][1]["id"])
    rest = client.get(url, query_string={"after": newest["last_id"]}, headers=auth_headers).json
    assert [item["content"][0]["text"] for item in rest["data"]] == ["m2", "m1", "m0"] and not rest[
        "has_more"
    ]
    oldest = client.get(url, query_string={"order": "asc", "limit": 1}, headers=auth_headers).json
    assert oldest["data"][0]["content"][0]["text"] == "m0"
    for item in rest["data"]:
        spec_json(spec.Message, item)
    for bad in ({"limit": 0}, {"limit": 101}, {"order": "sideways"}, {"after": "msg_unknown"}):
        assert client.get(url, query_string=bad, headers=auth_headers).status_code == 400


def test_delete_has_openai_shape_then_404(client, auth_headers):
    response_id = ask(client, auth_headers).json["id"]
    answer = client.delete(f"/v1/responses/{response_id}", headers=auth_headers)
    assert answer.json == {"id": response_id, "object": "response", "deleted": True}
    for method in (client.get, client.delete):
        gone = method(f"/v1/responses/{response_id}", headers=auth_headers)
        assert gone.status_code == 404 and gone.json["error"]["type"] == "invalid_request_error"


def test_another_accounts_response_is_not_found(client, auth_headers, make_key):
    response_id = ask(client, auth_headers).json["id"]
    other = {"Authorization": f"Bearer {make_key('other')}"}
    for method, path in [
        (client.get, ""),
        (client.delete, ""),
        (client.get, "/input_items"),
        (client.post, "/cancel"),
    ]:
        assert method(f"/v1/responses/{response_id}{path}", headers=other).status_code == 404
    chained = ask(client, other, previous_response_id=response_id)
    assert chained.status_code == 404
    assert chained.json["error"]["code"] == "previous_response_not_found"
    assert chained.json["error"]["param"] == "previous_response_id"
    assert client.get(f"/v1/responses/{response_id}", headers=auth_headers).status_code == 200


def summarising_model(path: str, body: dict[str, Any]):
    """Streams 'Hello world'; answers a summary request with a fixed summary."""
    if not body.get("stream"):
        return JsonReply(chat_completion("SUMMARY: launch Tuesday, tell support."))
    return text_stream("Hello", " world")


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_compaction_round_trip(client, auth_headers, fake_upstream):
    fake_upstream.responder = summarising_model
    first = ask(client, auth_headers, input="We launch on Tuesday.").json
    compacted = client.post(
        "/v1/responses/compact",
        headers=auth_headers,
        json={
            "model": "test-model",
            "previous_response_id": first["id"],
            "input": [{"role": "user", "content": "And notify support first."}],
        },
    )
    assert compacted.status_code == 200, compacted.json
    resource = compacted.json
    spec_json(spec.CompactResource, resource)
    assert resource["object"] == "response.compaction"
    summary_request = fake_upstream.bodies()[-1]["messages"]
    assert [message["role"] for message in summary_request] == ["user", "assistant", "user", "user"]
    assert "Summarise" in summary_request[-1]["content"]
    kept, blob = resource["output"][:-1], resource["output"][-1]
    assert [item["content"][0]["text"] for item in kept] == [
        "We launch on Tuesday.",
        "And notify support first.",
    ]
    assert blob["type"] == "compaction" and "Tuesday" not in blob["encrypted_content"]
    follow_up = ask(client, auth_headers, input=[*resource["output"], {"role": "user", "content": "When?"}])
    assert follow_up.status_code == 200
    messages = fake_upstream.bodies()[-1]["messages"]
    assert messages[2]["role"] == "user" and "SUMMARY: launch Tuesday" in messages[2]["content"]
    assert messages[-1] == {"role": "user", "content": "When?"}


def test_tampered_or_foreign_compaction_blob_is_400(client, auth_headers, fake_upstream, make_key):
    fake_upstream.responder = summarising_model
    compacted = client.post(
        "/v1/responses/compact", headers=auth_headers, json={"model": "test-model", "input": "remember 42"}
    ).json
    blob = compacted["output"][-1]["encrypted_content"]
    tampered = blob[:-6] + ("AAAAAA" if not blob.endswith("AAAAAA") else "BBBBBB")
    for headers, content in [(auth_headers, tampered), ({"Authorization": f"Bearer {make_key('x')}"}, blob)]:
        answer = ask(client, headers, input=[{"type": "compaction", "encrypted_content": content}])
        assert answer.status_code == 400
        assert answer.json["error"]["code"] == "invalid_encrypted_content"
        assert answer.json["error"]["param"] == "input[0].encrypted_content"


def test_compaction_secret_comes_from_the_env_when_set(client, auth_headers, fake_upstream, monkeypatch):
    fake_upstream.responder = summarising_model
    sealed = client.post(
        "/v1/responses/compact", headers=auth_headers, json={"model": "test-model", "input": "x"}
    ).json["output"][-1]
    monkeypatch.setenv("GATEWAY_SECRET", "a-configured-secret")
    answer = ask(client, auth_headers, input=[sealed])
    assert answer.status_code == 400  # sealed under the database secret, opened with the env one


@pytest.mark.parametrize("body", [{"input": "compact me"}, {"model": "test-model", "bogus": True}])
def test_compact_rejects_bad_requests(client, auth_headers, body):
    answer = client.post("/v1/responses/compact", headers=auth_headers, json=body)
    assert answer.status_code in (400, 422)


def poll(client, headers, response_id: str, statuses: set[str]) -> dict[str, Any]:
    """GET until the status is one of `statuses` (bounded by 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = client.get(f"/v1/responses/{response_id}", headers=headers).json
        if response["status"] in statuses:
            return response
        time.sleep(0.02)
    raise AssertionError(f"response stayed {response['status']}")


def test_background_create_then_poll_until_completed(client, auth_headers):
    queued = ask(client, auth_headers, background=True)
    assert queued.status_code == 200
    validate_response(queued.json)
    assert queued.json["status"] == "queued" and queued.json["background"] is True
    done = poll(client, auth_headers, queued.json["id"], {"completed"})
    validate_response(done)
    assert done["output"][0]["content"][0]["text"] == "Hello world"
    assert [row.status for row in usage_rows()] == [200]
    cancel = client.post(f"/v1/responses/{done['id']}/cancel", headers=auth_headers)
    assert cancel.status_code == 409


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_cancel_stops_a_background_response(client, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: text_stream(*["tick"] * 200, delay=0.05)
    queued = ask(client, auth_headers, background=True).json
    poll(client, auth_headers, queued["id"], {"in_progress"})
    cancelled = client.post(f"/v1/responses/{queued['id']}/cancel", headers=auth_headers)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert fake_upstream.stream_aborted.wait(5)
    assert (
        client.post(f"/v1/responses/{queued['id']}/cancel", headers=auth_headers).json["status"]
        == "cancelled"
    )
    deadline = time.monotonic() + 5
    while not usage_rows() and time.monotonic() < deadline:
        time.sleep(0.02)
    [row] = usage_rows()
    assert row.status == 499 and row.prompt_tokens > 0  # what was used before the cancel is billed
    assert client.get(f"/v1/responses/{queued['id']}", headers=auth_headers).json["status"] == "cancelled"


def test_cancel_needs_a_background_response(client, auth_headers):
    response_id = ask(client, auth_headers).json["id"]
    answer = client.post(f"/v1/responses/{response_id}/cancel", headers=auth_headers)
    assert answer.status_code == 400


def test_app_close_stops_background_runs(app, client, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: text_stream(*["tick"] * 200, delay=0.05)
    queued = ask(client, auth_headers, background=True).json
    poll(client, auth_headers, queued["id"], {"in_progress"})
    lifecycle.close(app)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("responses-background")]
    [row] = rows()
    assert row.status == "failed" and json.loads(row.body)["error"]["code"] == "server_shutdown"
