"""The request-body gate and the core OpenAI fields: clear 400s, never a 5xx, extras forwarded."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from gateway import db
from gateway.errors import ANTHROPIC, OPENROUTER, InvalidRequest, dialect_of
from gateway.serving.body import MAX_DEPTH, MAX_INT, MIN_INT, depth, parse_body
from gateway.tables import ConversationItem, StoredResponse

# Every route that reads a body (the HTML dashboard is not this gate's; the MCP hub's is, in JSON-RPC: below).
BODY_ROUTES = [
    *[("post", prefix + path) for prefix in ("/v1", "/api/v1") for path in (
        "/chat/completions", "/completions", "/embeddings", "/responses", "/responses/compact",
        "/responses/<response_id>/cancel", "/conversations", "/conversations/<conversation_id>",
        "/conversations/<conversation_id>/items", "/messages", "/messages/count_tokens",
        "/images/generations", "/images/edits", "/images/variations", "/audio/transcriptions",
        "/audio/translations", "/audio/speech", "/moderations", "/rerank", "/files", "/batches",
        "/batches/<batch_id>/cancel")],
    *[("post", "/api/v1/openai/<scope>/<profile>" + path) for path in (
        "/chat/completions", "/responses", "/responses/compact", "/responses/<response_id>/cancel")],
    ("post", "/admin/keys"), ("patch", "/admin/keys/<int:key_id>"), ("patch", "/admin/accounts/<int:account_id>"),
    ("post", "/admin/accounts/<int:account_id>/credits"), ("post", "/admin/budgets"),
    ("patch", "/admin/budgets/<int:budget_id>"),
]
NOT_THE_GATES = ("/dashboard", "/mcp")
PATH_VALUES = {"response_id": "resp_x", "conversation_id": "conv_x", "scope": "acme", "profile": "default",
               "key_id": "1", "account_id": "1", "budget_id": "1", "batch_id": "batch_x"}
BODYLESS = {"/v1/responses/<response_id>/cancel", "/api/v1/responses/<response_id>/cancel",
            "/v1/batches/<batch_id>/cancel", "/api/v1/batches/<batch_id>/cancel",
            "/api/v1/openai/<scope>/<profile>/responses/<response_id>/cancel"}  # 404 unread
ADMIN_TOKEN = "admin-token-for-body-tests"
BAD_BODIES = [
    ("deep", b'{"a": ' + b"[" * 1500 + b"]" * 1500 + b"}"),
    ("just over the depth limit", b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"),
    ("NaN", b'{"model": "test-model", "temperature": NaN}'),
    ("Infinity", b'{"model": "test-model", "temperature": -Infinity}'),
    ("huge integer", b'{"model": "test-model", "max_tokens": 18446744073709551616}'),
    ("huge negative integer", b'{"model": "test-model", "max_tokens": -18446744073709551616}'),
    ("10,000-digit integer", b'{"model": "test-model", "n": ' + b"9" * 10_000 + b"}"),
    ("huge float", b'{"model": "test-model", "temperature": 1e999}'),
    ("huge array in a core field", b'{"model": [' + b"0," * 200_000 + b"0]}"),
    ("huge array as the body", b"[" + b"{}," * 200_000 + b"{}]"),
    ("invalid UTF-8", b'{"model": "\xff\xfe"}'),
    ("a byte order mark before a bad body", b'\xef\xbb\xbf{"model": 5}'),
    ("lone surrogate", b'{"model": "\\ud800", "name": "\\udfff", "input": "\\ud800"}'),
    ("empty", b""),
    ("whitespace", b"  \n "),
    ("null", b"null"),
    ("not an object", b"[1, 2]"),
    ("trailing garbage", b'{"model": "test-model"} {}'),
]
FORM_BODIES = [
    ("a form", b"model=test-model&stream=true"),
    ("a multipart body", b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\ntest-model\r\n--xyz--\r\n'),
]
CONTENT_TYPES = ["text/plain", "application/json", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=xyz", "application/json; charset=latin-1", "application/octet-stream",
                 "image/png", "", "no/such; = type"]


def concrete(rule: str) -> str:
    return re.sub(r"<(?:int:)?(\w+)>", lambda match: PATH_VALUES[match.group(1)], rule)


@pytest.fixture(name="settings")
def profile_settings(make_settings):
    return make_settings(profiles={"acme/default": {"mcp_servers": []}})


@pytest.fixture
def body_headers(make_key, monkeypatch) -> dict[str, dict[str, str]]:
    """A key that may use the acme profile, and the admin token."""
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    return {"key": {"Authorization": f"Bearer {make_key('body', scope='acme')}"},
            "admin": {"Authorization": f"Bearer {ADMIN_TOKEN}"}}


def assert_clear_error(answer, path: str, status: int | None = None) -> None:
    """A 4xx (this one, if given) with the error body of the path's dialect."""
    assert 400 <= answer.status_code < 500, answer.get_data(as_text=True)[:300]
    if status is not None:
        assert answer.status_code == status, answer.get_data(as_text=True)[:300]
    error = answer.json["error"]
    if dialect_of(path) == OPENROUTER:
        assert error["code"] == answer.status_code and error["message"]
    elif dialect_of(path) == ANTHROPIC:
        assert answer.json["type"] == "error" and set(error) == {"type", "message"} and error["message"]
    else:
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


def test_the_table_covers_every_route_that_reads_a_body(app):
    served = {(method.lower(), rule.rule) for rule in app.url_map.iter_rules() for method in rule.methods
              if method in ("POST", "PATCH", "PUT") and not rule.rule.startswith(NOT_THE_GATES)}
    assert served == set(BODY_ROUTES)


@pytest.mark.parametrize("method,rule", BODY_ROUTES, ids=[f"{m} {r}" for m, r in BODY_ROUTES])
def test_bad_bodies_are_a_clear_400_on_every_route(client, body_headers, method, rule, caplog):
    """Each bad body under a different Content-Type: the gate reads JSON whatever the label says."""
    path = concrete(rule)
    headers = body_headers["admin" if rule.startswith("/admin") else "key"]
    for index, (name, raw) in enumerate(BAD_BODIES + FORM_BODIES):
        content_type = CONTENT_TYPES[index % len(CONTENT_TYPES)]
        answer = client.open(path, method=method, data=raw, headers={**headers, "Content-Type": content_type})
        assert_clear_error(answer, path, None if rule in BODYLESS else 400)
        assert answer.json["error"]["type"] == "invalid_request_error", (name, content_type, answer.json)
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


def test_a_body_over_the_size_limit_is_413_in_dialect(client, body_headers):
    for path in ("/v1/chat/completions", "/api/v1/responses"):
        answer = client.post(path, data=b" " * 10_000_001, headers=body_headers["key"])
        assert_clear_error(answer, path, 413)


def test_a_json_body_is_read_whatever_its_content_type(client, auth_headers):
    raw = b'{"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        answer = client.post("/v1/chat/completions", data=raw, headers={**auth_headers, "Content-Type": content_type})
        assert answer.status_code == 200, content_type


@pytest.mark.parametrize("route,body,param", [
    ("/v1/chat/completions", {"model": "test-model"}, "messages"),
    ("/v1/chat/completions", {"model": "test-model", "messages": "hi"}, "messages"),
    ("/v1/chat/completions", {"model": "test-model", "messages": []}, "messages"),
    ("/v1/chat/completions", {"model": "test-model", "messages": [{"content": "x"}]}, "messages[0].role"),
    ("/v1/chat/completions", {"model": "test-model", "messages": [{"role": "wizard", "content": "x"}]},
     "messages[0].role"),
    ("/v1/chat/completions", {"model": "test-model", "messages": [{"role": "user"}], "max_tokens": -5},
     "max_tokens"),
    ("/v1/chat/completions", {"model": "test-model", "messages": [{"role": "user"}], "temperature": "hot"},
     "temperature"),
    ("/v1/chat/completions", {"model": "test-model", "messages": [{"role": "user"}], "top_p": 3}, "top_p"),
    ("/v1/chat/completions", {"model": "test-model", "messages": [{"role": "user"}], "n": True}, "n"),
    ("/v1/chat/completions", {"model": 5, "messages": [{"role": "user"}]}, "model"),
    ("/v1/completions", {"model": "test-model"}, "prompt"),
    ("/v1/embeddings", {"model": "test-model"}, "input"),
    ("/v1/embeddings", {"model": "test-model", "input": {"text": "x"}}, "input"),
])
def test_core_fields_are_checked_as_openai_does(client, auth_headers, fake_upstream, route, body, param):
    answer = client.post(route, json=body, headers=auth_headers)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["param"] == param
    assert fake_upstream.requests == []


@pytest.mark.parametrize("value,expected", [({}, 1), ([], 1), ({"a": [{"b": 1}]}, 3), (5, 0), ([[[]]], 3)])
def test_depth(value, expected):
    assert depth(value) == expected


def test_a_leading_byte_order_mark_is_ignored_and_other_encodings_refused():
    assert parse_body(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    for raw in ('{"a": 1}'.encode("utf-16"), '{"a": 1}'.encode("utf-32"), b'{"a": "\xed\xa0\x80"}'):
        with pytest.raises(InvalidRequest):
            parse_body(raw)


def test_integers_at_the_64_bit_edges():
    assert parse_body(b'{"a": 9223372036854775807, "b": -9223372036854775808}')["a"] == 2**63 - 1
    with pytest.raises(InvalidRequest):
        parse_body(b'{"a": 9223372036854775808}')


def test_an_empty_path_segment_is_an_openai_404_not_a_redirect(client, auth_headers):
    answer = client.get("/v1/responses//input_items", headers=auth_headers)
    assert answer.status_code == 404 and answer.json["error"]["type"] == "invalid_request_error"


JSON_SCALARS = (st.none() | st.booleans() | st.integers(MIN_INT, MAX_INT) | st.text()
                | st.floats(allow_nan=False, allow_infinity=False))
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=40)


def gate_outcome(raw: bytes):
    """The parsed body, or the InvalidRequest it raised (anything else fails the test)."""
    try:
        return parse_body(raw)
    except InvalidRequest as exc:
        assert exc.status == 400 and exc.message
        return exc


@settings(deadline=None)
@given(JSON_VALUES)
def test_any_json_value_roundtrips_or_is_a_clear_400(value):
    outcome = gate_outcome(json.dumps(value).encode())
    if isinstance(value, dict):
        assert outcome == value
    else:
        assert isinstance(outcome, InvalidRequest)


@settings(deadline=None)
@given(st.integers(1, 3 * MAX_DEPTH), st.sampled_from(["list", "object"]))
def test_nesting_is_accepted_exactly_up_to_the_limit(levels, container):
    value: object = 1
    for _ in range(levels - 1):
        value = [value] if container == "list" else {"a": value}
    outcome = gate_outcome(json.dumps({"a": value}).encode())
    assert isinstance(outcome, InvalidRequest) == (levels > MAX_DEPTH)


@settings(deadline=None)
@given(st.integers(min_value=-(2**80), max_value=2**80) | st.integers())
def test_integers_are_accepted_exactly_within_64_bits(number):
    outcome = gate_outcome(b'{"n": %d}' % number)
    assert outcome == {"n": number} if MIN_INT <= number <= MAX_INT else isinstance(outcome, InvalidRequest)


@settings(deadline=None)
@given(st.integers(1, 10**6), st.integers(-2000, 2000))
def test_floats_are_accepted_exactly_when_finite(mantissa, exponent):
    text = f"{mantissa}.5e{exponent}"
    outcome = gate_outcome(b'{"x": %s}' % text.encode())
    assert outcome == {"x": float(text)} if math.isfinite(float(text)) else isinstance(outcome, InvalidRequest)


@settings(deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_are_an_object_or_a_clear_400(raw):
    outcome = gate_outcome(raw)
    assert isinstance(outcome, (dict, InvalidRequest))


@settings(deadline=None)
@given(st.text(st.characters(min_codepoint=0xD700, max_codepoint=0xE100) | st.characters(), max_size=8))
@example("\ud800\udc00")  # a pair written as two escapes is one valid character
@example("\udc00\ud800")  # the wrong order is two lone surrogates
def test_strings_roundtrip_unless_they_hold_a_lone_surrogate(text):
    outcome = gate_outcome(json.dumps({text: text}).encode())
    meant = json.loads(json.dumps(text))  # JSON joins an escaped high+low surrogate pair into one character
    try:
        meant.encode()
    except UnicodeEncodeError:
        assert isinstance(outcome, InvalidRequest)
    else:
        assert outcome == {meant: meant}


def gate_code(raw: bytes) -> str | None:
    """The error code the body gate answers a raw body with (None: it passes the gate, a later check refuses it)."""
    try:
        parse_body(raw)
    except InvalidRequest as refused:
        return refused.code
    return None


def socket_to(live_server: str, key: str):
    """A Responses WebSocket to the live gateway."""
    return connect(live_server.replace("http://", "ws://") + "/v1/responses",
                   additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=5, close_timeout=2)


def frame_of(raw: bytes) -> str | bytes:
    """The raw body as a text frame when it is UTF-8, else as a binary frame."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def test_bad_bodies_are_the_same_400_as_websocket_frames(live_server, api_key, fake_upstream):
    """The HTTP table over the socket: each frame is one error frame with the gate's code; the socket stays open."""
    with socket_to(live_server, api_key) as ws:
        for name, raw in BAD_BODIES:
            ws.send(frame_of(raw))
            error = json.loads(ws.recv(timeout=10))
            assert (error["type"], error["status"], error["error"]["type"]) == ("error", 400, "invalid_request_error")
            assert gate_code(raw) in (None, error["error"]["code"]), (name, error)
        ws.send(json.dumps({"type": "response.create", "model": "test-model", "input": "still open"}))
        while (event := json.loads(ws.recv(timeout=10)))["type"] != "response.completed":
            assert event["type"] != "error", event
    assert len(fake_upstream.requests) == 1


def test_a_lone_surrogate_frame_is_refused_and_nothing_is_stored(live_server, client, api_key, auth_headers,
                                                                 fake_upstream):
    """Regression: a `response.create` frame with "\\ud800" was accepted, stored, and appended to its conversation."""
    conversation = client.post("/v1/conversations", json={}, headers=auth_headers).json["id"]
    raw = json.dumps({"type": "response.create", "model": "test-model", "input": "\ud800",
                      "conversation": conversation})  # ensure_ascii: the escape, as a client would send it
    with socket_to(live_server, api_key) as ws:
        ws.send(raw)
        error = json.loads(ws.recv(timeout=10))
    over_http = client.post("/v1/responses", data=raw.replace('"type": "response.create", ', ""), headers=auth_headers)
    assert (error["status"], error["error"]["code"]) == (over_http.status_code, over_http.json["error"]["code"])
    assert error["error"]["message"] == over_http.json["error"]["message"]
    assert (error["status"], error["error"]["code"]) == (400, "invalid_json")
    assert fake_upstream.requests == []
    with db.database.connection_context():
        assert StoredResponse.select().count() == 0 and ConversationItem.select().count() == 0


def test_bad_bodies_are_refused_by_the_same_gate_on_the_mcp_hub(client, body_headers):
    """The hub's JSON-RPC messages pass the gate too; its refusal is a JSON-RPC error naming the gate's code."""
    for name, raw in BAD_BODIES:
        code = gate_code(raw)
        if code is None:
            continue  # passes the gate; the MCP SDK judges it
        answer = client.post("/mcp", data=raw, headers={**body_headers["key"], "Content-Type": "application/json",
                                                         "Accept": "application/json, text/event-stream"})
        assert answer.status_code == 400, (name, answer.get_data(as_text=True)[:300])
        error = answer.json["error"]
        assert (error["data"]["type"], error["data"]["code"]) == ("invalid_request_error", code), name
