"""Pure SSE framing and incremental parsing."""

from __future__ import annotations

import pytest

from gateway.upstream.sse import DONE, SseDecoder, SseEvent, comment, encode


@pytest.mark.parametrize(
    "data,event,framed",
    [
        ({"a": 1}, None, b'data: {"a":1}\n\n'),
        ({"type": "x"}, "x", b'event: x\ndata: {"type":"x"}\n\n'),
        ("two\nlines", None, b"data: two\ndata: lines\n\n"),
    ],
)
def test_encode(data, event, framed):
    assert encode(data, event) == framed


def test_comment_and_done():
    assert comment() == b": keep-alive\n\n"
    assert DONE == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    "pieces,expected",
    [
        ([b"data: 1\n\n"], [SseEvent("1")]),
        ([b"da", b"ta: 1\n", b"\n"], [SseEvent("1")]),
        ([b"data: 1\r\n\r\n"], [SseEvent("1")]),
        ([b": ping\n\ndata: 2\n\n"], [SseEvent("2")]),
        ([b"event: e\ndata: a\ndata: b\n\n"], [SseEvent("a\nb", "e")]),
        ([b"data:nospace\n\n"], [SseEvent("nospace")]),
        ([b"id: 5\nretry: 1\n\n"], []),
        ([b"data: {\"x\": \"\xc3\xa9\"}\n\n"], [SseEvent('{"x": "é"}')]),
        ([b"data: 1\n\ndata: 2\n\ndata: 3"], [SseEvent("1"), SseEvent("2")]),
    ],
)
def test_decoder(pieces, expected):
    decoder = SseDecoder()
    assert [event for piece in pieces for event in decoder.feed(piece)] == expected


def test_roundtrip():
    decoder = SseDecoder()
    assert list(decoder.feed(encode({"k": "v\nw"}, "name"))) == [SseEvent('{"k":"v\\nw"}', "name")]
