"""Where an HTTP/1.1 request ends, judged from the bytes received so far (pure: no sockets).

The worker buffers a request until `RequestFraming.feed` says it is complete, so a thread only
ever parses bytes that are already received (in memory, or in a spool file: the worker may take the
body bytes the framing no longer needs out of memory with `release_body`). The body limit depends
on the route: the framing asks `body_limit` with the request line's target once the head is in. Framing errors that gunicorn's own parser rejects
without reading further (a bad Content-Length, a Transfer-Encoding other than chunked) count as
complete: gunicorn then answers them with its usual 400. Only what would make the parser wait
for bytes that can never fix the request is rejected here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable

CRLF = b"\r\n"
HEAD_END = b"\r\n\r\n"
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
MAX_CHUNK_LINE = 4096  # a chunk-size line (with extensions) longer than this is not one
EXPECT_CONTINUE = re.compile(rb"(?im)^expect:[ \t]*100-continue[ \t]*\r\n")


class Verdict(enum.Enum):
    """What to do with the bytes received so far."""

    INCOMPLETE = "incomplete"
    COMPLETE = "complete"
    MALFORMED = 400
    BODY_TOO_LARGE = 413
    HEAD_TOO_LARGE = 431


class RequestFraming:
    """One request's bytes as they arrive, and whether they make a whole request yet."""

    def __init__(self, max_head_bytes: int, body_limit: int | Callable[[str], int]) -> None:
        self.data = bytearray()  # the head, then the body bytes not yet released
        self.max_head_bytes = max_head_bytes
        self._body_limit = body_limit
        self.max_body_bytes = body_limit if isinstance(body_limit, int) else 0  # the route's, once the head is in
        self.target = ""  # the request line's target, once the head is in
        self.expects_continue = False  # HTTP/1.1 `Expect: 100-continue` with a body still to come
        self._scanned = 0  # bytes of the head already checked for its end and for bare LFs
        self._head_end: int | None = None
        self._length = 0
        self._chunked = False
        self._chunk_at = 0  # where the bytes not yet checked start (a chunk-size line, or within a chunk)
        self._chunk_left = 0  # bytes of the current chunk's data still to come
        self._chunk_ends = False  # a chunk's data is in; its CRLF is next
        self._body_bytes = 0
        self._released = 0  # body bytes handed out by release_body

    def feed(self, chunk: bytes) -> Verdict:
        """Add received bytes; say whether the request is complete, incomplete or rejected."""
        self.data += chunk
        if self._head_end is None:
            verdict = self._read_head()
            if verdict is not None:
                return verdict
        return self._read_chunks() if self._chunked else self._read_length()

    def request_bytes(self) -> bytes:
        """The bytes to parse: as received, minus an `Expect: 100-continue` the body already answered."""
        return self.head_bytes() + self.body_bytes()

    def head_bytes(self) -> bytes:
        """The head to parse (all bytes received, while it is incomplete), without an answered `Expect`."""
        if self._head_end is None:
            return bytes(self.data)
        head = bytes(self.data[: self._head_end])
        return EXPECT_CONTINUE.sub(b"", head) if self.expects_continue else head

    def body_bytes(self) -> bytes:
        """The bytes received after the head and not released (what follows the request included)."""
        return b"" if self._head_end is None else bytes(self.data[self._head_end :])

    def body_bytes_held(self) -> int:
        """How many received bytes after the head are still in `data`."""
        return 0 if self._head_end is None else len(self.data) - self._head_end

    def release_body(self) -> bytes:
        """Remove from `data` and return the body bytes already checked, which the framing needs no more.

        The caller keeps them elsewhere (a spool file), in order, ahead of what `body_bytes` returns later.
        """
        if self._head_end is None:
            return b""
        end = self._chunk_at if self._chunked else len(self.data)
        released = bytes(self.data[self._head_end : end])
        del self.data[self._head_end : end]
        self._released += len(released)
        if self._chunked:
            self._chunk_at = self._head_end
        return released

    def _read_head(self) -> Verdict | None:
        end = self.data.find(HEAD_END, max(self._scanned - 3, 0))
        checked_to = len(self.data) if end < 0 else end + len(HEAD_END)
        if has_bare_lf(self.data, self._scanned, checked_to):
            return Verdict.MALFORMED  # gunicorn would wait for a CRLF that never comes
        self._scanned = checked_to
        if end < 0:
            return Verdict.HEAD_TOO_LARGE if len(self.data) > self.max_head_bytes else Verdict.INCOMPLETE
        if checked_to > self.max_head_bytes:
            return Verdict.HEAD_TOO_LARGE
        self._head_end = checked_to
        return self._read_framing(bytes(self.data[:end]))

    def _read_framing(self, head: bytes) -> Verdict | None:
        """Content-Length or chunked from the head; None to go on reading the body."""
        request_line, *fields = head.removeprefix(CRLF).split(CRLF)
        self.target = request_line.split(b" ")[1].decode("latin-1") if request_line.count(b" ") == 2 else ""
        if not isinstance(self._body_limit, int):
            self.max_body_bytes = self._body_limit(self.target)
        lengths: list[bytes] = []
        codings: list[bytes] | None = None
        for field in fields:
            name, _, value = field.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings = (codings or []) + [coding.strip().lower() for coding in value.split(b",")]
            elif name == b"expect" and value.lower() == b"100-continue":
                self.expects_continue = request_line.endswith(b"HTTP/1.1")
        if codings is not None:
            if codings[-1] != b"chunked" or lengths:
                return Verdict.COMPLETE  # gunicorn's parser answers 400 without reading on
            self._chunked, self._chunk_at = True, self._head_end or 0
            return None
        if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
            return Verdict.COMPLETE  # likewise
        self._length = int(lengths[0]) if lengths else 0
        return Verdict.BODY_TOO_LARGE if self._length > self.max_body_bytes else None

    def _read_length(self) -> Verdict:
        received = len(self.data) - (self._head_end or 0) + self._released
        return Verdict.COMPLETE if received >= self._length else Verdict.INCOMPLETE

    def _read_chunks(self) -> Verdict:
        while True:
            if self._chunk_left:  # inside a chunk's data: everything received of it is checked
                taken = min(len(self.data) - self._chunk_at, self._chunk_left)
                self._chunk_at, self._chunk_left = self._chunk_at + taken, self._chunk_left - taken
                if self._chunk_left:
                    return Verdict.INCOMPLETE
                self._chunk_ends = True
            if self._chunk_ends:  # the CRLF after a chunk's data
                if len(self.data) < self._chunk_at + len(CRLF):
                    return Verdict.INCOMPLETE
                if self.data[self._chunk_at : self._chunk_at + len(CRLF)] != CRLF:
                    return Verdict.MALFORMED
                self._chunk_at, self._chunk_ends = self._chunk_at + len(CRLF), False
            line_end = self.data.find(CRLF, self._chunk_at)
            if line_end < 0:
                too_long = len(self.data) - self._chunk_at > MAX_CHUNK_LINE
                return Verdict.MALFORMED if too_long else Verdict.INCOMPLETE
            size_text = bytes(self.data[self._chunk_at : line_end]).split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16 or not HEX_DIGITS.issuperset(size_text):
                return Verdict.MALFORMED
            size = int(size_text, 16)
            if size == 0:
                return self._read_trailers(line_end)
            if self._body_bytes + size > self.max_body_bytes:
                return Verdict.BODY_TOO_LARGE
            self._chunk_at, self._chunk_left = line_end + len(CRLF), size
            self._body_bytes += size

    def _read_trailers(self, last_chunk_line_end: int) -> Verdict:
        """After the zero-size chunk: optional trailer fields, then an empty line."""
        if self.data.find(HEAD_END, last_chunk_line_end) >= 0:
            return Verdict.COMPLETE
        too_long = len(self.data) - last_chunk_line_end > self.max_head_bytes
        return Verdict.MALFORMED if too_long else Verdict.INCOMPLETE


def has_bare_lf(data: bytearray, start: int, end: int) -> bool:
    """Whether data[start:end] holds a LF not preceded by CR (HTTP/1.1 lines end in CRLF)."""
    position = data.find(b"\n", start, end)
    while position >= 0:
        if position == 0 or data[position - 1] != ord("\r"):
            return True
        position = data.find(b"\n", position + 1, end)
    return False
