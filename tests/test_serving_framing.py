"""RequestFraming: where a request ends, fed whole or a byte at a time."""

from __future__ import annotations

import pytest

from gateway.serving.framing import RequestFraming, Verdict

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"


def verdict_of(data: bytes, pieces: int = 1, max_head: int = 4096, max_body: int = 1000) -> Verdict:
    """The verdict after feeding `data` in `pieces` parts (1: whole; 0: a byte at a time)."""
    framing = RequestFraming(max_head, max_body)
    size = 1 if pieces == 0 else -(-len(data) // pieces)
    verdict = Verdict.INCOMPLETE
    for start in range(0, len(data), size):
        verdict = framing.feed(data[start : start + size])
        if verdict is not Verdict.INCOMPLETE:
            break
    return verdict


CASES = [
    ("no body", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", Verdict.COMPLETE),
    ("one leading CRLF", b"\r\nGET / HTTP/1.1\r\n\r\n", Verdict.COMPLETE),
    ("head cut short", HEAD + b"X-Pad: abc", Verdict.INCOMPLETE),
    ("length complete", HEAD + b"Content-Length: 5\r\n\r\nhello", Verdict.COMPLETE),
    ("length short", HEAD + b"content-length: 5\r\n\r\nhell", Verdict.INCOMPLETE),
    ("length, next request behind", HEAD + b"Content-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\n", Verdict.COMPLETE),
    ("length too large", HEAD + b"Content-Length: 1001\r\n\r\n", Verdict.BODY_TOO_LARGE),
    ("length not a number: gunicorn's 400", HEAD + b"Content-Length: 5x\r\n\r\n", Verdict.COMPLETE),
    ("two lengths: gunicorn's 400", HEAD + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx", Verdict.COMPLETE),
    ("chunked complete", HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Verdict.COMPLETE),
    ("chunked with trailer", HEAD + b"Transfer-Encoding: chunked\r\n\r\n1;x=y\r\na\r\n0\r\nT: 1\r\n\r\n",
     Verdict.COMPLETE),
    ("chunked short", HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", Verdict.INCOMPLETE),
    ("chunked too large", HEAD + b"Transfer-Encoding: chunked\r\n\r\n3e9\r\n", Verdict.BODY_TOO_LARGE),
    ("chunk size not hex", HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", Verdict.MALFORMED),
    ("chunk without CRLF after data", HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", Verdict.MALFORMED),
    ("gzip only: gunicorn's 400", HEAD + b"Transfer-Encoding: gzip\r\n\r\n", Verdict.COMPLETE),
    ("bare LF", b"GET / HTTP/1.1\nHost: x\n\n", Verdict.MALFORMED),
    ("head too large", HEAD + b"X-Pad: " + b"a" * 5000, Verdict.HEAD_TOO_LARGE),
]


@pytest.mark.parametrize("data,expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
@pytest.mark.parametrize("pieces", [1, 3, 0], ids=["whole", "thirds", "bytewise"])
def test_verdicts(data: bytes, expected: Verdict, pieces: int) -> None:
    assert verdict_of(data, pieces) is expected


def test_expect_continue_is_noticed_and_removed_once_the_body_is_here() -> None:
    framing = RequestFraming(4096, 1000)
    assert framing.feed(HEAD + b"Expect: 100-Continue\r\nContent-Length: 2\r\n\r\n") is Verdict.INCOMPLETE
    assert framing.expects_continue
    assert framing.feed(b"hi") is Verdict.COMPLETE
    assert framing.request_bytes() == HEAD + b"Content-Length: 2\r\n\r\nhi"


def test_expect_continue_on_http_1_0_is_ignored() -> None:
    framing = RequestFraming(4096, 1000)
    framing.feed(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert not framing.expects_continue


def chunked(body: bytes, size: int) -> bytes:
    """`body` chunked in pieces of `size`, with a trailer."""
    pieces = [body[start : start + size] for start in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\nX-Sum: 1\r\n\r\n"


@pytest.mark.parametrize("framing_of", [
    lambda body: (b"Content-Length: %d\r\n\r\n" % len(body), body),
    lambda body: (b"Transfer-Encoding: chunked\r\n\r\n", chunked(body, 777)),
    lambda body: (b"Transfer-Encoding: chunked\r\n\r\n", chunked(body, 5000)),
], ids=["length", "chunked", "large-chunks"])
@pytest.mark.parametrize("piece", [1, 13, 4096])
def test_released_body_bytes_and_the_rest_make_the_request(framing_of, piece: int) -> None:
    """What release_body hands out (to a spool file), then body_bytes, is the body as sent, in order."""
    fields, wire_body = framing_of(bytes(range(256)) * 20)
    behind = b"GET /healthz HTTP/1.1\r\n\r\n"  # a pipelined request stays after the body
    data = HEAD + fields + wire_body + behind
    framing = RequestFraming(4096, 100_000)
    released, fed, verdict = b"", b"", Verdict.INCOMPLETE
    for start in range(0, len(data), piece):
        fed += data[start : start + piece]
        verdict = framing.feed(data[start : start + piece])
        released += framing.release_body()
        assert framing.body_bytes_held() <= piece + 16  # at most one piece and a chunk-size line, even mid-chunk
        if verdict is not Verdict.INCOMPLETE:
            break
    assert verdict is Verdict.COMPLETE
    assert framing.head_bytes() == HEAD + fields
    assert released + framing.body_bytes() == fed[len(HEAD + fields) :]
    assert fed.startswith(HEAD + fields + wire_body)


@pytest.mark.parametrize(("target", "verdict"), [
    ("/v1/audio/transcriptions", Verdict.BODY_TOO_LARGE),
    ("/v1/chat/completions", Verdict.INCOMPLETE),
])
def test_the_body_limit_is_the_targets(target: str, verdict: Verdict) -> None:
    framing = RequestFraming(4096, lambda seen: 100 if seen.startswith("/v1/audio/") else 1000)
    assert framing.feed(b"POST %s HTTP/1.1\r\nContent-Length: 500\r\n\r\n" % target.encode()) is verdict
    assert framing.target == target


def test_a_chunked_body_past_the_targets_limit_is_rejected_after_release() -> None:
    framing = RequestFraming(4096, lambda seen: 1000)
    framing.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        assert framing.feed(b"100\r\n" + b"x" * 256 + b"\r\n") is Verdict.INCOMPLETE
        framing.release_body()
    assert framing.feed(b"100\r\n") is Verdict.BODY_TOO_LARGE
