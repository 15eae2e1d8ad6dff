"""A fast loopback fake OpenAI upstream: canned chat completions (JSON or SSE) with usage.

Run it as its own process (`python -m bench.upstream --port P`) so the load generator's GIL
never slows it down; it prints `ready <port>` once it accepts connections.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
STREAM_WORDS = ["Hello", " from", " the", " bench", "."]


def completion_body() -> bytes:
    """The one chat.completion the fake answers, encoded once."""
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench-upstream",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench."},
                     "finish_reason": "stop"}],
        "usage": USAGE,
    }).encode()


def stream_chunk(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None) -> dict:
    """One chat.completion.chunk (`usage` only on the trailing usage chunk, which has no choices)."""
    chunk: dict[str, Any] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                             "model": "bench-upstream"}
    chunk["choices"] = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    if usage:
        chunk["usage"] = usage
    return chunk


def stream_events(include_usage: bool) -> list[bytes]:
    """The SSE frames of one streamed answer, ending with `[DONE]`."""
    chunks = [stream_chunk({"role": "assistant", "content": ""})]
    chunks += [stream_chunk({"content": word}) for word in STREAM_WORDS]
    chunks.append(stream_chunk({}, finish="stop"))
    if include_usage:
        chunks.append(stream_chunk({}, usage=USAGE))
    frames = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks]
    return [*frames, b"data: [DONE]\n\n"]


def http_chunk(data: bytes) -> bytes:
    """One chunk of a chunked transfer encoding (empty `data` ends the body)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


COMPLETION = completion_body()
JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(COMPLETION)
    + COMPLETION
)
STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
STREAM_BODIES = {usage: [http_chunk(frame) for frame in stream_events(usage)] for usage in (False, True)}


class BenchHandler(BaseHTTPRequestHandler):
    """Answers every POST with the canned completion; keeps connections alive."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    event_delay_s = 0.0

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"object": "list", "data": [{"id": "bench-upstream", "object": "model"}]}'
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % len(body) + body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not body.get("stream"):
            self.wfile.write(JSON_RESPONSE)  # head and body in one send
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.wfile.write(STREAM_HEAD)
        for frame in STREAM_BODIES[include_usage]:
            if self.event_delay_s:
                time.sleep(self.event_delay_s)
            self.wfile.write(frame)
        self.wfile.write(http_chunk(b""))


class BenchUpstream:
    """The fake on 127.0.0.1 in a background thread (for in-process use)."""

    def __init__(self, port: int = 0, event_delay_s: float = 0.0) -> None:
        handler = type("Handler", (BenchHandler,), {"event_delay_s": event_delay_s})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 128
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> BenchUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin closes or the process is terminated."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--event-delay-ms", type=float, default=0.0, help="sleep before each SSE event")
    args = parser.parse_args(argv)
    upstream = BenchUpstream(args.port, args.event_delay_ms / 1000).start()
    print(f"ready {upstream.port}", flush=True)
    try:
        sys.stdin.read()  # the parent holds our stdin; EOF means it is gone, so we never outlive it
    except KeyboardInterrupt:
        pass
    upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
