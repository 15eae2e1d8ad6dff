"""The OpenAI-compatible wire: the prepared body as it is, to `{base_url}/chat/completions`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import UpstreamStreamBroken
from gateway.upstream.chunks import parse_chunk
from gateway.upstream.providers.base import ProviderWire, WireError, WireRequest, header, join_url, raw_body
from gateway.upstream.sse import SseEvent


class OpenAIStream:
    """Chunks as the upstream sent them; `[DONE]` or a finished choice ends the stream."""

    def __init__(self) -> None:
        self.finished = False

    def feed(self, event: SseEvent) -> list[dict[str, Any]]:
        """The event's chunk (none for `[DONE]`)."""
        if event.data.strip() == "[DONE]":
            return []
        chunk = parse_chunk(event.data)
        self.finished = self.finished or any(choice.get("finish_reason") for choice in chunk.get("choices") or [])
        return [chunk]

    def finish(self) -> list[dict[str, Any]]:
        """Nothing; raises when no choice finished."""
        if not self.finished:
            raise UpstreamStreamBroken("Upstream closed the stream before it finished.")
        return []


class OpenAIAdapter:
    """Identity translation: today's wire, unchanged."""

    name = "openai"
    path = "chat/completions"

    def headers(self, provider: ProviderWire) -> dict[str, str]:
        """Bearer auth and the provider's extra headers."""
        auth = {"Authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}
        return {**auth, **provider.extra_headers}

    def url(self, upstream_model: str, provider: ProviderWire) -> str:
        """Where chat completions go."""
        return join_url(provider.base_url, self.path)

    def build_request(self, body: dict[str, Any], upstream_model: str, provider: ProviderWire) -> WireRequest:
        """The prepared body, unchanged, with the upstream model id."""
        return WireRequest("POST", self.url(upstream_model, provider), self.headers(provider),
                           {**body, "model": upstream_model}, bool(body.get("stream")))

    def parse_response(self, status: int, body: dict[str, Any]) -> dict[str, Any]:
        """Already canonical."""
        return body

    def stream_translator(self, model: str) -> OpenAIStream:
        """A fresh reader of OpenAI chunks."""
        return OpenAIStream()

    def parse_error(self, status: int, headers: Mapping[str, str], body: Any) -> WireError:
        """OpenAI's `{"error": {"message", "type", "param", "code"}}` (or whatever came instead)."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            error = {"message": error if isinstance(error, str) else str(body)[:500]}
        code = error.get("code")
        kind = error.get("type") if isinstance(error.get("type"), str) else "invalid_request_error"
        param = error.get("param") if isinstance(error.get("param"), str) else None
        return WireError(status, kind, str(code) if code is not None else None, str(error.get("message")),
                         header(headers, "retry-after"), param, raw=raw_body(body))


OPENAI = OpenAIAdapter()
