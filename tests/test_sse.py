"""Pure SSE framing and incremental parsing, and the chunk reader on top of it."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.upstream.chunks import read_chunks
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


EVENT_DATA = st.text(st.characters(exclude_characters="\r", exclude_categories=("Cs",)), max_size=40)
EVENT_NAMES = st.none() | st.text(string.ascii_letters + "._", min_size=1, max_size=12)


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    """The stream cut at these offsets, as a network might deliver it."""
    bounds = sorted(cuts)
    return [stream[start:end] for start, end in zip([0, *bounds], [*bounds, len(stream)], strict=True)]


@settings(deadline=None)
@given(st.lists(st.tuples(EVENT_DATA, EVENT_NAMES, st.booleans()), max_size=8), st.booleans(), st.data())
def test_any_split_of_a_stream_decodes_to_the_same_events(events, crlf, data):
    stream = b"".join(encode(text, name) + (comment() if ping else b"") for text, name, ping in events)
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    decoder = SseDecoder()
    decoded = [event for piece in split(stream, cuts) for event in decoder.feed(piece)]
    assert decoded == [SseEvent(text, name) for text, name, _ in events]


def chat_chunk(content: str, finish: str | None = None) -> dict:
    return {"id": "c", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": content}, "finish_reason": finish}]}


@settings(deadline=None)
@given(st.lists(st.text(max_size=12), max_size=6), st.data())
def test_any_split_of_an_upstream_stream_reads_the_same_chunks(texts, data):
    chunks = [chat_chunk(text) for text in texts] + [chat_chunk("", "stop")]
    stream = b"".join(encode(chunk) for chunk in chunks) + DONE
    decoder = SseDecoder()
    pieces = split(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    assert list(read_chunks(event for piece in pieces for event in decoder.feed(piece))) == chunks
