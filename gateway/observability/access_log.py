"""The JSON access log: one line per request, on stderr or in a file, never a secret.

A line holds who called (account and key ids, never the key), what was asked (method, route,
path without its query), what it cost (model, provider, tokens, credits) and how long it took.
Each line is one `write` on a descriptor opened with O_APPEND, so the lines of several worker
processes never interleave. A file moved away by logrotate is reopened (checked once a second).
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from flask import Flask

if TYPE_CHECKING:
    from gateway.observability.request_record import RequestRecord

EXTENSION = "gateway.access_log"
STDERR = "-"
REOPEN_CHECK_S = 1.0


def entry(record: RequestRecord) -> dict[str, Any]:
    """The fields of one access-log line."""
    return {
        "time": datetime.datetime.fromtimestamp(record.wall_time, datetime.UTC).isoformat(timespec="milliseconds"),
        "request_id": record.request_id,
        "method": record.method,
        "route": record.route,
        "path": record.path,
        "status": record.status,
        "account_id": record.account_id,
        "key_id": record.key_id,
        "model": record.model,
        "provider": record.provider,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cost": round(record.cost, 6),
        "duration_ms": milliseconds(record.duration_s),
        "ttfb_ms": milliseconds(record.first_byte_s),
        "ttft_ms": milliseconds(record.first_token_s),
        "stream": record.streamed,
        "fallbacks": record.fallbacks,
        "remote_addr": record.remote_addr,
        "user_agent": record.user_agent,
        "pid": os.getpid(),  # the worker that answered
    }


def milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class AccessLog:
    """Writes access-log lines to stderr, a file, or nowhere (`""`)."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._checked = 0.0
        self._closed = False

    def write(self, record: RequestRecord) -> None:
        """Append one line (best effort: a full disk never fails a request)."""
        if not self.destination or self._closed:
            return
        line = (json.dumps(entry(record), separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            try:
                fd = self._descriptor()
                while line:
                    line = line[os.write(fd, line):]
            except OSError:
                pass

    def _descriptor(self) -> int:
        if self.destination == STDERR:
            return 2
        now = time.monotonic()
        if self._fd is not None and now - self._checked >= REOPEN_CHECK_S:
            self._checked = now
            if self._on_disk() != self._identity:  # rotated away: write to the new file
                os.close(self._fd)
                self._fd = None
        if self._fd is None:
            self._fd = os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            stat = os.fstat(self._fd)
            self._identity, self._checked = (stat.st_dev, stat.st_ino), now
        return self._fd

    def _on_disk(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.destination)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def close(self) -> None:
        """Close the file (idempotent); later lines are dropped."""
        with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def init_app(app: Flask, destination: str) -> None:
    app.extensions[EXTENSION] = AccessLog(destination)


def of(app: Flask) -> AccessLog:
    """The app's access log."""
    return app.extensions[EXTENSION]
