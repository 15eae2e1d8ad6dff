"""Responses WebSocket mode: the official SDK's `responses.connect()` and raw sockets against a live gateway."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import openai
import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from gateway import db
from gateway.tables import ApiKey, StoredResponse, UsageEntry
from tests.fake_upstream import StreamReply, chat_chunk, usage_chunk
from tests.live_gateway import live_gateway
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.polling import wait_until
from tests.scripted_model import ScriptedModel
from tests.test_deploy import NGINX, start_nginx  # noqa: F401 (a fixture, used by name)
from tests.test_response_builder import check_stream
from tests.test_responses_api import PAID_MODEL

TERMINAL = {"response.completed", "response.failed", "response.incomplete"}


@pytest.fixture
def settings(make_settings):
    return make_settings(
        models=PAID_MODEL,
        server={"keepalive_interval_s": 0.05},
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]}},
    )


@pytest.fixture
def sdk(live_server, api_key):
    with openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0, timeout=20) as client:
        yield client


@pytest.fixture
def socket(live_server, api_key):
    with open_socket(live_server, api_key) as ws:
        yield ws


def open_socket(base_url: str, key: str, path: str = "/v1/responses", header: str = "Authorization") -> ClientConnection:
    value = f"Bearer {key}" if header == "Authorization" else key
    return connect(base_url.replace("http://", "ws://") + path, additional_headers={header: value},
                   open_timeout=5, close_timeout=2)


def turn(ws: ClientConnection, **body: Any) -> list[dict[str, Any]]:
    """Send one `response.create`; every frame until the turn's terminal event (or error frame)."""
    ws.send(json.dumps({"type": "response.create", "model": "test-model", **body}))
    events = [json.loads(ws.recv(timeout=10))]
    while events[-1]["type"] not in TERMINAL and not is_envelope(events[-1]):
        events.append(json.loads(ws.recv(timeout=10)))
    return events


def is_envelope(event: dict[str, Any]) -> bool:
    """A turn's error frame (no response started), unlike a stream's `error` event (which has a number)."""
    return event["type"] == "error" and "sequence_number" not in event


def rows(table) -> list:
    with db.database.connection_context():
        return list(table.select().order_by(table.created_at))


def upstream_texts(fake_upstream) -> list[str]:
    """The message contents of the last upstream request."""
    return [message.get("content") for message in fake_upstream.requests[-1][1]["messages"]]


def test_sdk_connect_streams_the_sse_events(sdk):
    with sdk.responses.connect() as connection:
        connection.response.create(model="test-model", input="Hello", instructions="Be brief.")
        wire, events = [], []
        while not events or events[-1].type != "response.completed":
            raw = connection.recv_bytes()
            wire.append(json.loads(raw))
            events.append(connection.parse_event(raw))
    check_stream(wire)
    with sdk.responses.with_streaming_response.create(model="test-model", input="Hello", stream=True) as raw:
        sse_types = [line[7:] for line in raw.iter_lines() if line.startswith("event: ")]
    assert [event["type"] for event in wire] == sse_types
    final = events[-1].response
    assert final.output_text == "Hello world" and final.instructions == "Be brief."
    assert sdk.responses.retrieve(final.id).status == "completed"


def test_sdk_sequential_turns_continue_a_store_false_chain(sdk, fake_upstream):
    with sdk.responses.connect() as connection:
        finals = []
        for text in ("My name is Ada.", "What is my name?"):
            previous = {"previous_response_id": finals[-1].id} if finals else {}
            connection.response.create(model="test-model", input=text, store=False, **previous)
            for event in connection:
                if event.type == "response.completed":
                    finals.append(event.response)
                    break
    assert upstream_texts(fake_upstream) == ["My name is Ada.", "Hello world", "What is my name?"]
    assert finals[1].previous_response_id == finals[0].id and rows(StoredResponse) == []


def test_one_socket_many_turns_each_billed_with_its_own_request_id(socket, fake_upstream):
    first = turn(socket, input="one")
    second = turn(socket, input="two", previous_response_id=first[-1]["response"]["id"])
    for events in (first, second):
        check_stream(events)
        assert events[-1]["type"] == "response.completed"
    assert upstream_texts(fake_upstream) == ["one", "Hello world", "two"]
    usage = rows(UsageEntry)
    assert [row.status for row in usage] == [200, 200] and [row.endpoint for row in usage] == ["responses"] * 2
    assert [row.request_id.rsplit(".", 1)[1] for row in usage] == ["1", "2"]
    assert usage[0].request_id.rsplit(".", 1)[0] == usage[1].request_id.rsplit(".", 1)[0]


def test_unknown_previous_response_is_an_error_frame_and_the_socket_stays_open(socket):
    [error] = turn(socket, input="x", store=False, previous_response_id="resp_missing")
    assert error == {
        "type": "error",
        "status": 404,
        "error": {
            "message": "Previous response with id 'resp_missing' not found.",
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found",
        },
    }
    assert turn(socket, input="again")[-1]["type"] == "response.completed"


def test_a_failed_continuation_evicts_the_response_it_continued(socket):
    first = turn(socket, input="remember ember", store=False)[-1]["response"]["id"]
    [failed] = turn(socket, store=False, previous_response_id=first,
                    input=[{"type": "function_call_output", "call_id": "call_missing", "output": "x"}])
    assert (failed["status"], failed["error"]["param"]) == (400, "input[0].call_id")
    [retry] = turn(socket, input="stale?", store=False, previous_response_id=first)
    assert retry["error"]["code"] == "previous_response_not_found"


def test_store_false_responses_do_not_outlive_their_socket(live_server, api_key):
    with open_socket(live_server, api_key) as ws:
        first = turn(ws, input="copper", store=False)[-1]["response"]["id"]
    with open_socket(live_server, api_key) as ws:
        [error] = turn(ws, input="continue", store=False, previous_response_id=first)
        assert error["error"]["code"] == "previous_response_not_found"
        assert turn(ws, input=[{"role": "user", "content": "start over"}], store=False)[-1]["type"] == (
            "response.completed"
        )


def test_stored_responses_continue_on_another_socket(live_server, api_key, fake_upstream):
    with open_socket(live_server, api_key) as ws:
        first = turn(ws, input="stored turn")[-1]["response"]["id"]
    with open_socket(live_server, api_key, header="X-API-Key") as ws:
        assert turn(ws, input="next", previous_response_id=first)[-1]["type"] == "response.completed"
    assert upstream_texts(fake_upstream) == ["stored turn", "Hello world", "next"]


def test_compacted_window_starts_a_new_chain(client, auth_headers, socket, fake_upstream):
    compacted = client.post("/v1/responses/compact", headers=auth_headers, json={
        "model": "test-model", "input": [{"role": "user", "content": "The code word is slate."}]}).json
    events = turn(socket, store=False, tools=[],
                  input=[*compacted["output"], {"role": "user", "content": "Reply with exactly: compacted"}])
    check_stream(events)
    assert events[-1]["type"] == "response.completed"
    assert upstream_texts(fake_upstream)[-1] == "Reply with exactly: compacted"


@pytest.mark.parametrize(
    "message,code,param",
    [
        ("not json", "invalid_json", None),
        ("[1]", "invalid_request", None),
        (json.dumps({"type": "response.steer", "input": "x"}), "unsupported_event_type", "type"),
        (json.dumps({"type": "response.create", "model": "test-model", "input": "x", "background": True}),
         "invalid_request", "background"),
        (json.dumps({"type": "response.create", "model": "test-model"}), "invalid_request", "input"),
        (json.dumps({"type": "response.create", "model": "test-model", "input": "x", "previous_response_id": [1]}),
         "invalid_request", "previous_response_id"),
        (json.dumps({"type": "response.create", "model": "nope", "input": "x"}), "model_not_found", "model"),
    ],
)
def test_bad_messages_get_error_frames(socket, message, code, param):
    socket.send(message)
    error = json.loads(socket.recv(timeout=10))
    assert error["type"] == "error" and error["status"] in (400, 404)
    assert (error["error"]["code"], error["error"]["param"]) == (code, param)
    assert turn(socket, input="fine", stream=True)[-1]["type"] == "response.completed"  # `stream` is implied


def test_empty_balance_is_a_402_frame(socket, fake_upstream):
    [error] = turn(socket, model="paid-model", input="x")
    assert (error["status"], error["error"]["code"]) == (402, "insufficient_balance")
    assert fake_upstream.requests == []
    assert turn(socket, input="x")[-1]["type"] == "response.completed"  # settled after the refusal's row
    assert sorted((row.status, row.model, row.cost) for row in rows(UsageEntry)) == [(200, "test-model", 0),
                                                                                     (402, "paid-model", 0)]


def test_mcp_tools_run_over_the_socket(socket, fake_upstream):
    fake_upstream.responder = ScriptedModel([("mcp__tools__echo", {"text": "hi"})])
    events = turn(socket, input="go", tools=[{"type": "mcp", "server_label": "tools", "require_approval": "never"}])
    check_stream(events)
    calls = [item for item in events[-1]["response"]["output"] if item["type"] == "mcp_call"]
    assert [(call["name"], call["output"]) for call in calls] == [("echo", "hi")]


def test_upgrade_needs_a_key_and_the_upgrade(live_server, client):
    with pytest.raises(InvalidStatus) as refused:
        open_socket(live_server, "sk-gw-wrong")
    assert refused.value.response.status_code == 401
    answer = client.get("/v1/responses", headers={"Authorization": "Bearer x"})
    assert answer.status_code == 401


def test_plain_get_is_426(client, auth_headers):
    answer = client.get("/v1/responses", headers=auth_headers)
    assert answer.status_code == 426 and answer.json["error"]["code"] == "websocket_upgrade_required"


def test_openrouter_path_serves_sockets_too(live_server, api_key):
    with open_socket(live_server, api_key, path="/api/v1/responses") as ws:
        assert turn(ws, input="hi")[-1]["type"] == "response.completed"


def test_client_leaving_mid_turn_is_settled_as_a_disconnect(live_server, api_key, fake_upstream):
    pieces = [(0.0, chat_chunk(role="assistant", content=""))] + [(0.05, chat_chunk(f"w{i} ")) for i in range(100)]
    fake_upstream.responder = lambda path, body: StreamReply([*pieces, (0, chat_chunk(finish="stop")), (0, usage_chunk())])
    with open_socket(live_server, api_key) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "test-model", "input": "long"}))
        while json.loads(ws.recv(timeout=10))["type"] != "response.output_text.delta":
            pass
    deadline = time.monotonic() + 10
    while not rows(UsageEntry) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [row.status for row in rows(UsageEntry)] == [499]
    [stored] = rows(StoredResponse)
    assert stored.status == "failed" and json.loads(stored.body)["error"]["code"] == "client_disconnected"


@pytest.mark.parametrize(
    "responses,code,status",
    [({"websocket_max_age_s": 0.3}, "websocket_connection_limit_reached", 400),
     ({"websocket_idle_timeout_s": 0.3}, "websocket_idle_timeout", 408)],
)
def test_age_and_idle_limits_close_the_socket(make_settings, app, live_server, api_key, responses, code, status):
    app.extensions["gateway.settings"] = make_settings(responses=responses)
    with open_socket(live_server, api_key) as ws:
        error = json.loads(ws.recv(timeout=5))  # sent once the limit passes, without waiting for a message
        assert (error["status"], error["error"]["code"]) == (status, code)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)


def test_a_turn_past_its_timeout_fails(make_settings, app, live_server, api_key, fake_upstream):
    app.extensions["gateway.settings"] = make_settings(
        server={"keepalive_interval_s": 0.05}, responses={"websocket_turn_timeout_s": 0.3})
    fake_upstream.responder = lambda path, body: StreamReply([(0, chat_chunk("slow")), (2, chat_chunk(finish="stop"))])
    with open_socket(live_server, api_key) as ws:
        events = turn(ws, input="slow")
        types = [event["type"] for event in events]
        assert types[-1] == "response.failed" and types.count("error") == 1
        assert events[-1]["response"]["error"]["code"] == "response_timeout"
        check_stream(events)


def test_sockets_per_worker_are_capped(app, live_server, api_key):
    app.extensions["gateway.responses.websockets"].limit = 1
    with open_socket(live_server, api_key):
        with pytest.raises(InvalidStatus) as refused:
            open_socket(live_server, api_key)
        assert refused.value.response.status_code == 503
    wait_until(lambda: app.extensions["gateway.responses.websockets"].open == 0, "the closed socket's slot")
    with open_socket(live_server, api_key) as ws:
        assert turn(ws, input="hi")[-1]["type"] == "response.completed"


@pytest.fixture
def served(tmp_path, fake_upstream):
    """`gateway serve` (gunicorn, the gateway's gthread worker) with one worker of 4 threads, and a key."""
    config = (f'[database]\nurl = "sqlite:///{tmp_path / "served.db"}"\n'
              f'[providers.fake]\nbase_url = "{fake_upstream.base_url}"\n'
              '[models."test-model"]\nprovider = "fake"\n'
              '[responses]\nwebsocket_max_connections = 2\n')
    with live_gateway(tmp_path, config, workers=1, threads=4) as server:
        created = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "keys", "create", "--config", str(server.config),
             "--name", "ws", "--json"], capture_output=True, text=True, check=True, timeout=60)
        yield server.base_url, json.loads(created.stdout)["key"]


def test_sockets_under_gateway_serve(served, fake_upstream):
    base_url, key = served
    with open_socket(base_url, key) as ws:
        first = turn(ws, input="one", store=False)
        second = turn(ws, input="two", store=False, previous_response_id=first[-1]["response"]["id"])
        check_stream(second)
        assert second[-1]["type"] == "response.completed"
        with open_socket(base_url, key), pytest.raises(InvalidStatus) as refused:
            open_socket(base_url, key)  # websocket_max_connections = 2
        assert refused.value.response.status_code == 503
    assert upstream_texts(fake_upstream) == ["one", "Hello world", "two"]
    answers = [requests.post(f"{base_url}/v1/responses", headers={"Authorization": f"Bearer {key}"},
                             json={"model": "test-model", "input": "http"}, timeout=10) for _ in range(6)]
    assert [answer.status_code for answer in answers] == [200] * 6  # the sockets gave their threads back


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_sockets_through_the_shipped_nginx(start_nginx, live_server, api_key):  # noqa: F811 (the fixture)
    base = start_nginx(int(live_server.rsplit(":", 1)[1]))
    with open_socket(base, api_key) as ws:
        events = turn(ws, input="through nginx")
    check_stream(events)
    assert events[-1]["type"] == "response.completed"


def test_an_open_socket_counts_as_a_stream_of_its_key(app, live_server, api_key):
    with db.database.connection_context():
        ApiKey.update(max_streams=1).execute()  # before the key's first request (and cache entry)
    with open_socket(live_server, api_key):
        with pytest.raises(InvalidStatus) as refused:
            open_socket(live_server, api_key)
        assert refused.value.response.status_code == 429
    with db.database.connection_context():
        key_id = ApiKey.get().id
    wait_until(lambda: app.extensions["gateway.streams"].open_streams(key_id) == 0, "the closed socket's stream")
    with open_socket(live_server, api_key) as ws:
        assert turn(ws, input="hi")[-1]["type"] == "response.completed"
