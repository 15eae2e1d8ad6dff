"""A fast loopback fake OpenAI upstream (stdlib asyncio): chat completions as JSON or SSE, with usage.

Run it as its own process (`python -m bench.upstream --port P`); it prints `ready <port>` once it
accepts connections and exits when its stdin closes. Every POST gets a chat completion: JSON, or
SSE when the body says `"stream": true` (the usage chunk too with `stream_options.include_usage`).
Model `SLOW_MODEL` waits `--slow-wait-s` (1 s) before its first byte, like a model thinking; one
event loop holds thousands of such streams at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from typing import Any

USAGE = {"prompt_tokens": 11, "completion_tokens": 32, "total_tokens": 43}
STREAM_CHUNKS = 32  # content events per streamed answer
SLOW_MODEL = "bench-slow"
MAX_HEADER_BYTES = 65536
MAX_BODY_BYTES = 10_000_000


def completion_body() -> bytes:
    """The one chat.completion the fake answers, encoded once."""
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench-upstream",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench."},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }, separators=(",", ":")).encode()


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
    chunks += [stream_chunk({"content": f" word{index}"}) for index in range(STREAM_CHUNKS)]
    chunks.append(stream_chunk({}, finish="stop"))
    if include_usage:
        chunks.append(stream_chunk({}, usage=USAGE))
    frames = [f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode() for chunk in chunks]
    return [*frames, b"data: [DONE]\n\n"]


def http_chunk(data: bytes) -> bytes:
    """One chunk of a chunked transfer encoding (empty `data` ends the body)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


COMPLETION = completion_body()
JSON_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                 % len(COMPLETION) + COMPLETION)
MODELS = b'{"object":"list","data":[{"id":"bench-upstream","object":"model","owned_by":"bench"}]}'
MODELS_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                   % len(MODELS) + MODELS)
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
STREAM_BODIES = {usage: [http_chunk(frame) for frame in stream_events(usage)] for usage in (False, True)}


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
    """(method, lower-cased headers, body) of the next request; None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:size]
            if size == 0 or len(body) > MAX_BODY_BYTES:
                break
        return method, headers, body
    length = min(int(headers.get("content-length") or 0), MAX_BODY_BYTES)
    return method, headers, await reader.readexactly(length) if length else b""


class Upstream:
    """The fake's connection handler; `slow_wait_s` applies to SLOW_MODEL."""

    def __init__(self, slow_wait_s: float) -> None:
        self.slow_wait_s = slow_wait_s

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one keep-alive connection until the client closes it."""
        try:
            while (request := await read_request(reader)) is not None:
                method, headers, body = request
                if method != "POST":
                    writer.write(MODELS_RESPONSE)
                    await writer.drain()
                    continue
                await self.answer(writer, json.loads(body or b"{}"))
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def answer(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        """JSON, or the SSE stream (after the slow model's wait)."""
        if not body.get("stream"):
            writer.write(JSON_RESPONSE)
            await writer.drain()
            return
        if body.get("model") == SLOW_MODEL:
            await asyncio.sleep(self.slow_wait_s)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        writer.write(STREAM_HEAD)
        for frame in STREAM_BODIES[include_usage]:
            writer.write(frame)
            await writer.drain()
        writer.write(http_chunk(b""))
        await writer.drain()


async def serve(port: int, slow_wait_s: float) -> None:
    """Listen on 127.0.0.1:port until stdin closes."""
    upstream = Upstream(slow_wait_s)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", port, backlog=4096, limit=MAX_HEADER_BYTES)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = asyncio.Event()
    # the parent holds our stdin; EOF means it is gone, so we never outlive it
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stdin_closed.set)),
                     daemon=True).start()
    async with server:
        await stdin_closed.wait()


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin closes or the process is terminated."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slow-wait-s", type=float, default=1.0, help=f"wait before {SLOW_MODEL}'s stream")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.port, args.slow_wait_s))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
