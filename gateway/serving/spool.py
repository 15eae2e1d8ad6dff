"""Request bodies kept on disk while they arrive: the spool file, and the reader a thread parses it through.

Past `[uploads] spool_threshold_bytes` the worker's main loop writes a request's body to a named
temporary file (`gateway-body-*` in `[uploads] spool_dir`) instead of holding it in memory. The
thread that serves the request reads the head from memory and the body from the file
(`SpooledUnreader`), then whatever follows from the socket; the file is closed, which deletes it,
when the request ends, however it ends.
"""

from __future__ import annotations

import tempfile
from typing import IO

from gunicorn.http.unreader import SocketUnreader

PREFIX = "gateway-body-"
READ_BYTES = 1024 * 1024  # as gunicorn's SocketUnreader.max_body_chunk


def open_spool(folder: str) -> IO[bytes]:
    """A new empty spool file in `folder` ("" for the system's temporary folder), deleted when closed."""
    return tempfile.NamedTemporaryFile(prefix=PREFIX, dir=folder or None)


class SpooledUnreader(SocketUnreader):
    """gunicorn's socket reader, except that the bytes of the spool file come first (then the socket's)."""

    def __init__(self, sock: object, spool: IO[bytes]) -> None:
        super().__init__(sock)
        self.spool: IO[bytes] | None = spool

    def chunk(self, size_hint: int | None = None) -> bytes:
        """The spool's next bytes; once it is exhausted, the socket's."""
        if self.spool is not None:
            data = self.spool.read(min(max(size_hint or 0, self.mxchunk), READ_BYTES))
            if data:
                return data
        return super().chunk(size_hint)

    def close_spool(self, keep_rest: bool) -> bytes:
        """Close (and so delete) the spool file; return the bytes read ahead: the buffer's, then the spool's rest.

        On a kept-alive connection the rest is what the client pipelined behind the request (the thread
        drained the body); on a closing one nothing is kept.
        """
        rest = b""
        if self.spool is not None:
            try:
                rest = self.spool.read() if keep_rest else b""
            finally:
                self.spool.close()
                self.spool = None
        return self.take_buffered() + rest
