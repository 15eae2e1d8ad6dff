"""The provider adapter interface, its value objects, and the canonical OpenAI chat shapes they produce.

An adapter is pure: `build_request` turns the prepared chat body into a `WireRequest` (method, URL,
headers, JSON); `parse_response` turns the provider's JSON answer into a canonical `chat.completion`;
`stream_translator` returns an object fed the provider's SSE events one at a time, giving canonical
`chat.completion.chunk`s (reasoning in `delta.reasoning`); `parse_error` reads an error answer into a `WireError`,
whose `exception()` is the gateway error the shared client raises (429s keep Retry-After; an
overloaded provider is a retryable 503 with Retry-After).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRejected,
)
from gateway.upstream.sse import SseEvent

RAW_ERROR_CHARS = 1000  # of an upstream's error body, shown as OpenRouter's `metadata.raw`
OVERLOADED_RETRY_AFTER_S = "1"  # Retry-After of a 503 from an overloaded provider that named none


@dataclass(frozen=True)
class ProviderWire:
    """What an adapter needs from a provider's settings (the secret is resolved by the caller)."""

    base_url: str
    api_key: str | None = None
    api_version: str | None = None  # Azure's `api-version` query parameter; Gemini's path version
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    anthropic_version: str = "2023-06-01"  # the `anthropic-version` header
    anthropic_beta: tuple[str, ...] = ()  # `anthropic-beta` flags, sent comma-separated


@dataclass(frozen=True)
class WireRequest:
    """One HTTP request in a provider's wire format."""

    method: str
    url: str
    headers: dict[str, str]
    json: dict[str, Any]
    stream: bool = False


@dataclass(frozen=True)
class WireError:
    """A provider's error answer: its status and what it said, and whether the provider is overloaded."""

    status: int  # the provider's HTTP status
    type: str
    code: str | None
    message: str
    retry_after: str | None = None
    param: str | None = None
    overloaded: bool = False  # a busy provider (Anthropic's 529, Google's 503): the client may retry
    raw: str = ""  # the error body as sent, for OpenRouter's `metadata.raw`

    def exception(self, provider: str) -> GatewayError:
        """The gateway error to raise (gateway.upstream.client.rejected_error's rules, plus overloaded -> 503)."""
        headers = {"Retry-After": self.retry_after} if self.retry_after else None
        metadata = {"provider_name": provider, "raw": self.raw[:RAW_ERROR_CHARS]}
        if self.overloaded:
            return UpstreamOverloaded(f"Upstream {provider!r} is overloaded: {self.message}", headers=headers,
                                      metadata=metadata)
        if self.status in (401, 403):
            return UpstreamError(f"Upstream {provider!r} rejected the gateway's credentials: {self.message}",
                                 metadata={"provider_name": provider})
        if 400 <= self.status < 500:
            error = UpstreamRejected(self.message, status=self.status, param=self.param, code=self.code,
                                     headers=headers, metadata=metadata)
            error.type = self.type
            return error
        return UpstreamError(f"Upstream {provider!r} failed with {self.status}: {self.message}", metadata=metadata)


class StreamTranslator(Protocol):
    """Fed a provider's SSE events in order; gives canonical chat chunks."""

    def feed(self, event: SseEvent) -> list[dict[str, Any]]:
        """The chunks this event completes (raises UpstreamStreamBroken on an error event)."""
        ...

    def finish(self) -> list[dict[str, Any]]:
        """Chunks left at the stream's end; raises UpstreamStreamBroken when it ended early."""
        ...


class ProviderAdapter(Protocol):
    """One provider's wire format, both ways."""

    name: str

    def build_request(self, body: dict[str, Any], upstream_model: str, provider: ProviderWire) -> WireRequest:
        """The provider's HTTP request for a prepared chat body (InvalidRequest names an untranslatable field)."""
        ...

    def parse_response(self, status: int, body: dict[str, Any]) -> dict[str, Any]:
        """The canonical chat.completion of a successful JSON answer."""
        ...

    def stream_translator(self, model: str) -> StreamTranslator:
        """A fresh translator for one streamed answer."""
        ...

    def parse_error(self, status: int, headers: Mapping[str, str], body: Any) -> WireError:
        """The gateway error of an error answer."""
        ...


def refuse(param: str, why: str) -> InvalidRequest:
    """The 400 for a field the provider cannot take."""
    return InvalidRequest(f"{param}: {why}", param=param, code="unsupported_parameter")


def raw_body(body: Any) -> str:
    """An error body as text, for `WireError.raw`."""
    return body if isinstance(body, str) else json.dumps(body)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever its case."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def usage(prompt: int, completion: int, cached: int = 0, cache_write: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """Canonical usage: cache reads and writes are part of `prompt_tokens`, reasoning part of `completion_tokens`."""
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": cache_write},
            "completion_tokens_details": {"reasoning_tokens": reasoning}}


def completion(id_: str, model: str, message: dict[str, Any], finish_reason: str | None,
               usage_: dict[str, Any] | None) -> dict[str, Any]:
    """A canonical `chat.completion` with one choice."""
    body: dict[str, Any] = {"id": id_, "object": "chat.completion", "created": int(time.time()), "model": model,
                            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason,
                                         "logprobs": None}]}
    if usage_ is not None:
        body["usage"] = usage_
    return body


def chunk(id_: str, model: str, delta: dict[str, Any] | None, finish_reason: str | None = None,
          usage_: dict[str, Any] | None = None) -> dict[str, Any]:
    """A canonical `chat.completion.chunk`: one choice, or none (`delta` None) for the usage chunk."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    body: dict[str, Any] = {"id": id_, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model, "choices": choices}
    if usage_ is not None:
        body["usage"] = usage_
    return body


def join_url(base_url: str, path: str) -> str:
    """`base_url` and a path, with one slash between."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")
