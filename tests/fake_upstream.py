"""A scriptable OpenAI-compatible upstream on a real loopback socket."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fake_media import MediaRoutes


@dataclass
class JsonReply:
    """Answer with one JSON body."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamReply:
    """Answer with SSE: each item is (seconds to wait first, data dict or raw str).

    With `release`, the stream sends its first event, then waits until the test sets it.
    """

    events: list[tuple[float, Any]]
    done: bool = True
    release: threading.Event | None = None


@dataclass
class HangReply:
    """Accept the request and say nothing for `seconds`."""

    seconds: float


RELEASE_TIMEOUT_S = 120.0  # a held stream goes on by itself after this, whatever the test did
Responder = Callable[[str, dict[str, Any]], JsonReply | StreamReply | HangReply]


def chat_completion(text: str = "Hello from upstream", model: str = "upstream-model", **extra: Any) -> dict:
    """A chat.completion body with usage."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        **extra,
    }


def chat_chunk(content: str | None = None, finish: str | None = None, **delta: Any) -> dict:
    """One chat.completion.chunk."""
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "upstream-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage_chunk(prompt: int = 11, completion: int = 7) -> dict:
    """The trailing usage-only chunk of `stream_options.include_usage`."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "upstream-model",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def default_responder(path: str, body: dict[str, Any]) -> JsonReply | StreamReply:
    """Plausible answers for every route the gateway relays."""
    if path.endswith("/models"):
        return JsonReply({"object": "list", "data": [{"id": "upstream-model", "object": "model"}]})
    if path.endswith("/embeddings"):
        vector = {"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}
        usage = {"prompt_tokens": 3, "total_tokens": 3}
        return JsonReply({"object": "list", "data": [vector], "model": body.get("model"), "usage": usage})
    if path.endswith("/completions") and "messages" not in body:
        choice = {"index": 0, "text": "legacy text", "finish_reason": "stop", "logprobs": None}
        usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
        return JsonReply({"id": "cmpl-fake", "object": "text_completion", "created": 1700000000,
                          "model": body.get("model"), "choices": [choice], "usage": usage})
    if body.get("stream"):
        events: list[tuple[float, Any]] = [
            (0, chat_chunk(role="assistant", content="")),
            (0, chat_chunk("Hello")),
            (0, chat_chunk(" world")),
            (0, chat_chunk(finish="stop")),
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append((0, usage_chunk()))
        return StreamReply(events)
    return JsonReply(chat_completion(model=body.get("model", "upstream-model")))


class FakeServer(ThreadingHTTPServer):
    """A threading HTTP server whose listen backlog holds a burst of new connections (the default is 5)."""

    request_queue_size = 128
    daemon_threads = True


class FakeUpstream:
    """Runs the fake on 127.0.0.1; records every request; `responder` decides answers."""

    def __init__(self) -> None:
        self.responder: Responder = default_responder
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.stream_aborted = threading.Event()
        self.stream_finished = threading.Event()
        self.media = MediaRoutes()
        self.serves_media = True
        self._server = FakeServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies received so far."""
        return [body for _, body, _ in self.requests]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer({})

            def do_POST(self) -> None:
                if fake.serves_media and fake.media.serves(self.path):  # images, audio, moderations, rerank
                    # (tests.fake_media), unless the test answers them itself (serves_media = False)
                    fake.media.handle(self)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                self._answer(json.loads(self.rfile.read(length) or b"{}"))

            def _answer(self, body: dict[str, Any]) -> None:
                fake.requests.append((self.path, body, dict(self.headers)))
                reply = fake.responder(self.path, body)
                if isinstance(reply, HangReply):
                    time.sleep(reply.seconds)
                    self.close_connection = True
                elif isinstance(reply, StreamReply):
                    self._stream(reply)
                else:
                    self._json(reply)

            def _json(self, reply: JsonReply) -> None:
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, reply: StreamReply) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                # it closes the connection after the stream: say so, or a client may reuse it meanwhile
                self.send_header("Connection", "close")
                self.end_headers()
                frames = [(delay, data if isinstance(data, str) else json.dumps(data))
                          for delay, data in reply.events]
                if reply.done:
                    frames.append((0, "[DONE]"))
                try:
                    for index, (delay, data) in enumerate(frames):
                        if index == 1 and reply.release is not None:
                            reply.release.wait(RELEASE_TIMEOUT_S)
                        time.sleep(delay)
                        self._chunk(f"data: {data}\n\n".encode())
                    self._chunk(b"")
                    fake.stream_finished.set()
                except (BrokenPipeError, ConnectionResetError):
                    fake.stream_aborted.set()
                self.close_connection = True

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return Handler
