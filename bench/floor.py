"""The floor: the least a Flask + requests relay under gunicorn gthread can do per request.

No auth, no accounting, no database: parse the JSON body, POST it upstream on a pooled
`requests.Session` (one per thread), relay the answer (SSE chunk by chunk as it arrives).
Whatever the gateway costs above this is its own work. Run by the bench as
`gunicorn -k gthread -w 2 --threads 32 bench.floor:app` with BENCH_FLOOR_JSON_URL and
BENCH_FLOOR_STREAM_URL naming the upstream's chat completions URL for JSON and for streams.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import requests
from flask import Flask, Response, request

TIMEOUT_S = (5.0, 60.0)
app = Flask(__name__)
_local = threading.local()


def session() -> requests.Session:
    """This thread's keep-alive session."""
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def relay(upstream: requests.Response) -> Iterator[bytes]:
    """The upstream's body as it arrives; closes the upstream response at the end or on disconnect."""
    try:
        yield from upstream.iter_content(chunk_size=None)
    finally:
        upstream.close()


@app.post("/v1/chat/completions")
def chat_completions() -> Response:
    """Relay one chat completion, JSON or SSE."""
    body = request.get_json()
    stream = bool(body.get("stream"))
    url = os.environ["BENCH_FLOOR_STREAM_URL" if stream else "BENCH_FLOOR_JSON_URL"]
    upstream = session().post(url, json=body, stream=stream, timeout=TIMEOUT_S)
    if not stream:
        return Response(upstream.content, status=upstream.status_code, mimetype="application/json")
    return Response(relay(upstream), status=upstream.status_code, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@app.get("/healthz")
def healthz() -> Response:
    """Liveness for the bench's readiness wait."""
    return Response("ok", mimetype="text/plain")
