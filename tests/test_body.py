"""The request-body gate and the core OpenAI fields: clear 400s, never a 5xx, extras forwarded."""

from __future__ import annotations

import pytest

from gateway.api.body import MAX_DEPTH, depth, parse_body
from gateway.errors import InvalidRequest

POST_ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
               "/api/v1/chat/completions"]
BAD_BODIES = [
    ("deep", b'{"a": ' + b"[" * 1500 + b"]" * 1500 + b"}"),
    ("just over the depth limit", b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"),
    ("NaN", b'{"model": "test-model", "temperature": NaN}'),
    ("Infinity", b'{"model": "test-model", "temperature": -Infinity}'),
    ("huge integer", b'{"model": "test-model", "max_tokens": 18446744073709551616}'),
    ("huge float", b'{"model": "test-model", "temperature": 1e999}'),
    ("invalid UTF-8", b'{"model": "\xff\xfe"}'),
    ("empty", b""),
    ("not an object", b"[1, 2]"),
]


@pytest.mark.parametrize("route", POST_ROUTES)
@pytest.mark.parametrize("name,raw", BAD_BODIES, ids=[name for name, _ in BAD_BODIES])
def test_bad_bodies_are_400_on_every_post_route(client, auth_headers, route, name, raw, caplog):
    answer = client.post(route, data=raw, headers={**auth_headers, "Content-Type": "text/plain"})
    assert answer.status_code == 400, (name, answer.get_data(as_text=True))
    assert answer.json["error"]["type"] == "invalid_request_error"
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


def test_a_json_body_is_read_whatever_its_content_type(client, auth_headers):
    raw = b'{"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
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


def test_integers_at_the_64_bit_edges():
    assert parse_body(b'{"a": 9223372036854775807, "b": -9223372036854775808}')["a"] == 2**63 - 1
    with pytest.raises(InvalidRequest):
        parse_body(b'{"a": 9223372036854775808}')


def test_an_empty_path_segment_is_an_openai_404_not_a_redirect(client, auth_headers):
    answer = client.get("/v1/responses//input_items", headers=auth_headers)
    assert answer.status_code == 404 and answer.json["error"]["type"] == "invalid_request_error"
