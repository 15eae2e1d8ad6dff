"""Chat, completions and embeddings relayed through the gateway (JSON and SSE)."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from gateway import db
from gateway.tables import UsageEntry
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, chat_completion, usage_chunk


def usage_rows() -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def test_chat_forwards_every_parameter_and_maps_the_model(client, auth_headers, fake_upstream):
    body = {
        "model": "test-model",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "n": 2,
        "seed": 7,
        "stop": ["x"],
        "temperature": 0.3,
        "custom_vendor_field": {"kept": True},
    }
    answer = client.post("/v1/chat/completions", json=body, headers=auth_headers)
    assert answer.status_code == 200
    assert answer.json["model"] == "test-model"
    sent = fake_upstream.bodies()[-1]
    # everything forwarded, plus the output cap the hold assumed (the model's 4096 per choice)
    assert sent == {**body, "model": "upstream-model", "max_tokens": 4096}


def test_x_api_key_header_and_openrouter_prefix(client, api_key, fake_upstream):
    answer = client.post(
        "/api/v1/chat/completions",
        json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-API-Key": api_key},
    )
    assert answer.status_code == 200
    assert answer.json["choices"][0]["message"]["content"] == "Hello from upstream"


def test_usage_row_records_reported_tokens(client, auth_headers):
    client.post("/v1/chat/completions", json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}, headers=auth_headers)
    [row] = usage_rows()
    assert (row.prompt_tokens, row.completion_tokens, row.estimated, row.status) == (11, 7, False, 200)
    assert row.model == "test-model" and row.endpoint == "chat/completions"


def test_usage_is_estimated_when_upstream_reports_none(client, auth_headers, fake_upstream):
    body = chat_completion("abcdefgh")  # 8 characters -> 2 tokens
    del body["usage"]
    fake_upstream.responder = lambda path, request_body: JsonReply(body)
    messages = [{"role": "user", "content": "abcd"}]  # 3 + 1 tokens
    client.post("/v1/chat/completions", json={"model": "test-model", "messages": messages}, headers=auth_headers)
    [row] = usage_rows()
    assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (4, 2, True)


def test_request_id_is_kept_or_created(client, auth_headers):
    kept = client.get("/v1/models", headers={**auth_headers, "x-request-id": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    created = client.get("/v1/models", headers=auth_headers)
    assert len(created.headers["x-request-id"]) == 32


def test_models_list_shape(client, auth_headers):
    answer = client.get("/v1/models", headers=auth_headers)
    assert answer.json["object"] == "list"
    assert [model["id"] for model in answer.json["data"]] == ["test-model", "backup-model"]
    assert all(model["object"] == "model" for model in answer.json["data"])


def test_completions_and_embeddings(client, auth_headers, fake_upstream):
    legacy = client.post("/v1/completions", json={"model": "test-model", "prompt": "x"}, headers=auth_headers)
    assert legacy.json["choices"][0]["text"] == "legacy text"
    vectors = client.post("/v1/embeddings", json={"model": "test-model", "input": "x"}, headers=auth_headers)
    assert vectors.json["data"][0]["embedding"] == [0.1, 0.2, 0.3]
    assert vectors.json["model"] == "test-model"
    assert [path for path, _, _ in fake_upstream.requests] == ["/v1/completions", "/v1/embeddings"]


def test_fallback_models_on_upstream_failure(client, auth_headers, fake_upstream):
    def responder(path, body):
        if body["model"] == "upstream-model":
            return JsonReply({"error": {"message": "overloaded"}}, status=503)
        return JsonReply(chat_completion("from backup", model=body["model"]))

    fake_upstream.responder = responder
    answer = client.post(
        "/v1/chat/completions",
        json={"models": ["test-model", "backup-model"], "messages": [{"role": "user", "content": "hi"}]},
        headers=auth_headers,
    )
    assert answer.status_code == 200
    assert answer.json["model"] == "backup-model"
    # the model's own retries (2 by default, on its one deployment) come before the client's fallback
    assert [body["model"] for body in fake_upstream.bodies()] == ["upstream-model"] * 3 + ["backup-upstream"]
    assert "models" not in fake_upstream.bodies()[-1]
    with db.database.connection_context():
        row = UsageEntry.get(UsageEntry.generation_id == answer.json["id"])
    assert (row.model, row.deployment, row.attempts) == ("backup-model", "fake/backup-upstream", 4)


def test_a_fallback_list_skips_models_this_gateway_does_not_serve(client, auth_headers, fake_upstream):
    answer = client.post("/v1/chat/completions", headers=auth_headers,
                         json={"models": ["gpt-4o-mini", "test-model"], "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200 and answer.json["model"] == "test-model"
    assert [body["model"] for body in fake_upstream.bodies()] == ["upstream-model"]


def test_no_fallback_on_client_error(client, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: JsonReply({"error": {"message": "bad"}}, status=400)
    answer = client.post(
        "/v1/chat/completions", json={"models": ["test-model", "backup-model"],
                                      "messages": [{"role": "user", "content": "hi"}]}, headers=auth_headers
    )
    assert answer.status_code == 400
    assert len(fake_upstream.requests) == 1


def test_null_tool_call_content_is_normalised_for_flagged_providers(make_settings, fake_upstream, make_key,
                                                                    make_app):
    app = make_app(make_settings(providers={"fake": {"empty_tool_call_content": True}}))
    secret = make_key()
    messages = [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                                "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "ok"},
    ]
    app.test_client().post(
        "/v1/chat/completions",
        json={"model": "test-model", "messages": messages},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert fake_upstream.bodies()[-1]["messages"][0]["content"] == ""


def stream_lines(response: requests.Response) -> list[str]:
    return [line for line in response.iter_lines(decode_unicode=True) if line]


def test_stream_relays_chunks_and_drops_unrequested_usage(live_server, auth_headers, fake_upstream):
    response = requests.post(
        f"{live_server}/v1/chat/completions",
        json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers=auth_headers,
        stream=True,
        timeout=10,
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    lines = stream_lines(response)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello world"
    assert all("usage" not in chunk and chunk["model"] == "test-model" for chunk in chunks)
    assert fake_upstream.bodies()[-1]["stream_options"] == {"include_usage": True}
    [row] = usage_rows()
    assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (11, 7, False)


def test_stream_keeps_usage_chunk_when_asked(live_server, auth_headers):
    response = requests.post(
        f"{live_server}/v1/chat/completions",
        json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": True, "stream_options": {"include_usage": True}},
        headers=auth_headers,
        stream=True,
        timeout=10,
    )
    chunks = [json.loads(line[6:]) for line in stream_lines(response)[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 18


def test_first_chunk_arrives_before_upstream_finishes(live_server, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("first")), (1.5, chat_chunk("second")), (0, chat_chunk(finish="stop")), (0, usage_chunk())]
    )
    response = requests.post(
        f"{live_server}/v1/chat/completions",
        json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers=auth_headers,
        stream=True,
        timeout=10,
    )
    lines = (line for line in response.iter_lines(decode_unicode=True) if line)
    first = next(lines)
    assert json.loads(first[6:])["choices"][0]["delta"]["content"] == "first"
    assert not fake_upstream.stream_finished.is_set()
    assert list(lines)[-1] == "data: [DONE]"


def test_keep_alive_comments_during_silence(make_settings, fake_upstream, make_key, make_app):
    app = make_app(make_settings(server={"keepalive_interval_s": 0.1}))
    fake_upstream.responder = lambda path, body: StreamReply([(0.6, chat_chunk("late")), (0, chat_chunk(finish="stop"))])
    secret = make_key()
    response = app.test_client().post(
        "/v1/chat/completions",
        json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {secret}"},
    )
    text = response.get_data(as_text=True)
    assert text.startswith(": keep-alive\n\n")
    assert '"late"' in text and text.endswith("data: [DONE]\n\n")


def test_client_disconnect_closes_upstream(live_server, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("x"))] + [(0.05, chat_chunk("y"))] * 400
    )
    host, port = live_server.removeprefix("http://").split(":")
    payload = json.dumps({"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             f"Authorization: {auth_headers['Authorization']}\r\nContent-Length: {len(payload)}\r\n\r\n"
             f"{payload}").encode()
        )
        received = b""
        while b"data:" not in received:
            received += sock.recv(4096)
    assert fake_upstream.stream_aborted.wait(10)
    assert not fake_upstream.stream_finished.is_set()
    deadline = time.monotonic() + 10
    while not usage_rows() and time.monotonic() < deadline:
        time.sleep(0.05)
    [row] = usage_rows()
    assert row.status == 499 and row.estimated and row.completion_tokens >= 1
    assert row.cancelled and row.streamed and row.finish_reason is None


def test_upstream_failure_mid_stream_ends_with_error_event(live_server, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("partial")), (0, {"error": {"message": "model crashed"}})], done=False
    )
    response = requests.post(
        f"{live_server}/v1/chat/completions",
        json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers=auth_headers,
        stream=True,
        timeout=10,
    )
    lines = stream_lines(response)
    last = json.loads(lines[-1][6:])
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert "model crashed" in last["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_stream_truncated_by_upstream_is_an_error_not_silence(live_server, auth_headers, fake_upstream, path):
    fake_upstream.responder = lambda p, body: StreamReply([(0, chat_chunk("partial"))], done=False)
    response = requests.post(
        f"{live_server}{path}",
        json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "prompt": "x", "stream": True},
        headers=auth_headers,
        stream=True,
        timeout=10,
    )
    last = json.loads(stream_lines(response)[-1][6:])
    assert last["error"]["code"] == "upstream_error"


def test_done_without_finish_reason_is_an_error(live_server, auth_headers, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply([(0, chat_chunk("cut"))], done=True)
    response = requests.post(f"{live_server}/v1/chat/completions",
                             json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": True},
                             headers=auth_headers, stream=True, timeout=10)
    last = json.loads(stream_lines(response)[-1][6:])
    assert last["error"]["code"] == "upstream_error"
