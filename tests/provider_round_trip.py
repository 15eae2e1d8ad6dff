"""Send an adapter's WireRequest to a fake with `requests` and read the answer back through the adapter."""

from __future__ import annotations

from typing import Any

import requests
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.upstream.providers import ProviderAdapter, ProviderWire
from gateway.upstream.sse import SseDecoder

TIMEOUT_S = 30


def send(adapter: ProviderAdapter, body: dict[str, Any], wire: ProviderWire, model: str = "upstream-x") -> Any:
    """A ChatCompletion, or the list of ChatCompletionChunks of a stream (error answers raise the mapped error)."""
    request = adapter.build_request(body, model, wire)
    response = requests.request(request.method, request.url, headers=request.headers, json=request.json,
                                stream=request.stream, timeout=TIMEOUT_S)
    with response:
        if response.status_code >= 400:
            raise adapter.parse_error(response.status_code, response.headers, response.json()).exception("fake")
        if not request.stream:
            return ChatCompletion.model_validate(adapter.parse_response(response.status_code, response.json()))
        translator, decoder, chunks = adapter.stream_translator(model), SseDecoder(), []
        for data in response.iter_content(chunk_size=None):
            for event in decoder.feed(data):
                chunks.extend(translator.feed(event))
        chunks.extend(translator.finish())
    return [ChatCompletionChunk.model_validate(chunk) for chunk in chunks]


def streamed_text(chunks: list[ChatCompletionChunk]) -> str:
    """The content of a chunk list, joined."""
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def streamed_arguments(chunks: list[ChatCompletionChunk]) -> dict[int, str]:
    """Each streamed tool call's arguments, joined by index."""
    joined: dict[int, str] = {}
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            joined[call.index] = joined.get(call.index, "") + ((call.function and call.function.arguments) or "")
    return joined
