"""A client that disconnects mid-stream: the upstream is closed within a second, and it pays only what was generated.

Observed on a real server (werkzeug's threaded one, as the SDK tests use) from both ends: the
client's socket (what it received before leaving) and the fake upstream (when its write failed).
Each upstream chunk is "yyyy", one estimated token, so the charge counts the chunks the gateway read.
"""

from __future__ import annotations

import json
import socket

from tests.fake_upstream import StreamReply, chat_chunk
from tests.faults.books import newest_row

CHUNK = "yyyy"  # one estimated token
INTERVAL_S = 0.1  # between upstream chunks: the gateway notices a gone client at its next write
CLOSE_BOUND_S = 1.0  # the bound from the client leaving to the upstream connection closing
RECEIVE_FIRST = 3  # chunks the client reads before it leaves
# The charge is what the gateway read: what the client got, plus what was on its way when it left
# (sent but unread, the chunk whose write failed); far below the 300 chunks the upstream had to send.
SLACK = 3


def endless_stream(path, body) -> StreamReply:
    return StreamReply([(0, chat_chunk(role="assistant", content=""))] + [(INTERVAL_S, chat_chunk(CHUNK))] * 300)


def read_then_leave(base_url: str, path: str, body: dict, headers: dict[str, str]) -> str:
    """POST over a raw socket, read until RECEIVE_FIRST chunks arrived, then close; what it received."""
    host, port = base_url.removeprefix("http://").split(":")
    payload = json.dumps(body)
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json", f"Content-Length: {len(payload)}",
             *(f"{name}: {value}" for name, value in headers.items())]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n" + payload).encode())
        received = ""
        while received.count(CHUNK) < RECEIVE_FIRST:
            received += sock.recv(65536).decode()
    return received


def test_a_chat_client_leaving_closes_the_upstream_and_pays_what_was_generated(
        live_server, payer, settings, fake_upstream):
    fake_upstream.responder = endless_stream
    received = read_then_leave(live_server, "/v1/chat/completions",
                               {"model": "paid-model", "messages": [{"role": "user", "content": "hi"}], "stream": True},
                               payer.headers)
    assert fake_upstream.stream_aborted.wait(CLOSE_BOUND_S) and not fake_upstream.stream_finished.is_set()
    row = newest_row(payer, settings.models)
    assert row.status == 499 and row.estimated
    assert received.count(CHUNK) <= row.completion_tokens <= received.count(CHUNK) + SLACK


def test_a_responses_client_leaving_closes_the_upstream_and_pays_what_was_generated(
        live_server, client, payer, settings, fake_upstream):
    fake_upstream.responder = endless_stream
    received = read_then_leave(live_server, "/v1/responses", {"model": "paid-model", "input": "hi", "stream": True},
                               payer.headers)
    assert fake_upstream.stream_aborted.wait(CLOSE_BOUND_S) and not fake_upstream.stream_finished.is_set()
    row = newest_row(payer, settings.models)
    assert row.status == 499 and row.estimated
    assert received.count(CHUNK) <= row.completion_tokens <= received.count(CHUNK) + SLACK
    response_id = json.loads(received.split("data: ", 1)[1].split("\n", 1)[0])["response"]["id"]
    stored = client.get(f"/v1/responses/{response_id}", headers=payer.headers).json
    assert (stored["status"], stored["error"]["code"]) == ("failed", "client_disconnected")
    assert stored["usage"]["cost"] == row.cost / 1_000_000 > 0
