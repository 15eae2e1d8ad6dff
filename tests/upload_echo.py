"""A test-only upload route: what werkzeug's form parser made of a multipart body's `file` part.

Mounted at a static profile path (ECHO_PREFIX) that no product route claims, so it keeps working
once the real upload routes exist; the body limit there is the audio routes' (body_limits covers
/api/v1/openai/{scope}/{profile}/audio/transcriptions). `python -m tests.upload_echo serve ...` is
`gateway serve` with the route added (tests/test_uploads_serving.py runs it under gunicorn).
"""

from __future__ import annotations

import io
import os
import sys
import tracemalloc
from typing import Any

from flask import Blueprint, Flask, jsonify, request

ECHO_PREFIX = "/api/v1/openai/test/echo"
ECHO_PATH = f"{ECHO_PREFIX}/audio/transcriptions"


def echo_uploads() -> Blueprint:
    """The route at /audio/transcriptions: the file part's size, whether it is on disk, the form's peak memory."""
    bp = Blueprint("upload_echo", __name__)

    @bp.post("/audio/transcriptions")
    def transcriptions() -> Any:
        tracemalloc.start()
        try:
            upload = request.files["file"]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        upload.stream.seek(0, os.SEEK_END)
        return jsonify(size=upload.stream.tell(), on_disk=on_disk(upload.stream), parse_peak=peak,
                       model=request.form["model"])

    return bp


def on_disk(stream: Any) -> bool:
    """Whether a stream is a file with its bytes on disk (not an in-memory buffer)."""
    try:
        return os.fstat(stream.fileno()).st_size > 0
    except (OSError, AttributeError, io.UnsupportedOperation):
        return False


def with_echo(app: Flask, prefix: str = ECHO_PREFIX) -> Flask:
    """The app with the echo route under `prefix`."""
    app.register_blueprint(echo_uploads(), url_prefix=prefix, name=f"upload_echo{prefix.replace('/', '_')}")
    return app


def multipart(size: int, boundary: str = "b0undary") -> bytes:
    """A transcription form: `model` and a `file` part of `size` bytes."""
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + b"\x01" * size + f"\r\n--{boundary}--\r\n".encode()


if __name__ == "__main__":
    from gateway import cli, create_app, server

    server.GatewayServer.load = lambda self: with_echo(create_app())
    sys.exit(cli.main())
