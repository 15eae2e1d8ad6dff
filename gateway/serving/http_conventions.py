"""What every face's HTTP answers share: the request's id (kept from `x-request-id`) and an event stream's headers."""

from __future__ import annotations

import re

from flask import g, request

from gateway.ids import new_id

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # stored in 64-character columns
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffers a stream


def assign_request_id() -> str:
    """Give the current request its id: the client's `x-request-id` when well formed, else a new one."""
    incoming = request.headers.get("x-request-id", "")
    g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else new_id()
    return g.request_id


def request_id() -> str:
    """This request's id (the client's `x-request-id`, or a new one)."""
    return g.request_id
