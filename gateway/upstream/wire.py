"""The shared client's seam to the provider adapters: a prepared body as its provider's request, and back.

Chat completions go through the adapter of the provider's `type` (gateway.upstream.providers); the
`openai` adapter sends the prepared body as it is. Other paths (completions, embeddings) exist on
OpenAI-compatible upstreams only. Answers, stream events and errors of a translated provider come
back canonical, so the relay, the tool loop and Responses read one format. An OpenAI-shaped
error answer (the `openai` and `azure` types) is read by `rejected_error`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from gateway.config import ProviderSettings
from gateway.errors import GatewayError, InvalidRequest, UpstreamError, UpstreamRejected
from gateway.upstream.providers import ProviderWire, StreamTranslator, WireRequest, adapter
from gateway.upstream.providers.anthropic import wire_headers
from gateway.upstream.providers.azure import AZURE
from gateway.upstream.providers.base import RAW_ERROR_CHARS, join_url
from gateway.upstream.sse import SseEvent

CHAT_PATH = "chat/completions"
NATIVE_PATHS = {"messages": "v1/messages", "messages/count_tokens": "v1/messages/count_tokens"}  # Anthropic's own
DONE = SseEvent("[DONE]")
# the media routes (gateway.upstream.media) each provider type serves: `openai` all, Azure its images and audio
MEDIA_PATHS = {
    "openai": frozenset({"images/generations", "images/edits", "images/variations", "audio/transcriptions",
                         "audio/translations", "audio/speech", "moderations", "rerank"}),
    "azure": frozenset({"images/generations", "images/edits", "images/variations", "audio/transcriptions",
                        "audio/translations", "audio/speech"}),
}


def serves_media(settings: ProviderSettings, path: str) -> bool:
    """Whether a provider of this type serves this media path."""
    return path in MEDIA_PATHS.get(settings.type, frozenset())


def translated(settings: ProviderSettings) -> bool:
    """Whether the provider's wire differs from OpenAI's chat (answers and events need translating)."""
    return settings.type not in ("openai", "azure")


def provider_wire(settings: ProviderSettings, base_url: str) -> ProviderWire:
    """What the adapter needs: the base URL of the copy called, the secret, the provider's headers and versions."""
    return ProviderWire(base_url, settings.api_key(), settings.api_version, dict(settings.extra_headers),
                        settings.anthropic_version, tuple(settings.anthropic_beta))


def wire_request(settings: ProviderSettings, base_url: str, path: str, body: dict[str, Any],
                 beta: tuple[str, ...] = ()) -> WireRequest:
    """The HTTP request for a prepared body (InvalidRequest: a path or field the provider cannot take).

    A native Messages path (NATIVE_PATHS) sends the body as it is to an Anthropic-type provider, with its
    headers and the client's `anthropic-beta` flags (`beta`) after the provider's.
    """
    if path in NATIVE_PATHS and settings.type == "anthropic":
        headers = wire_headers(provider_wire(settings, base_url), beta)
        return WireRequest("POST", join_url(base_url, NATIVE_PATHS[path]), headers, body, bool(body.get("stream")))
    if path == CHAT_PATH:
        return adapter(settings.type).build_request(body, str(body.get("model")), provider_wire(settings, base_url))
    if settings.type == "azure" and serves_media(settings, path):
        wire = provider_wire(settings, base_url)
        return WireRequest("POST", AZURE.url(str(body.get("model")), wire, path), AZURE.headers(wire), body)
    if settings.type != "openai":
        raise InvalidRequest(f"The model's provider ({settings.type}) serves chat completions only, not {path}.",
                             param="model", code="unsupported_endpoint")
    return WireRequest("POST", join_url(base_url, path), {}, body, bool(body.get("stream")))


def parse_answer(settings: ProviderSettings, path: str, answer: dict[str, Any], provider: str) -> dict[str, Any]:
    """A JSON answer as a canonical chat completion."""
    if path != CHAT_PATH or not translated(settings):
        return answer
    try:
        return adapter(settings.type).parse_response(200, answer)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UpstreamError(f"Upstream {provider!r} sent an answer the gateway cannot read.") from exc


def rejected(settings: ProviderSettings, response: requests.Response, provider: str) -> GatewayError:
    """The gateway error of a provider's error answer (OpenAI's wire: rejected_error, as it always was)."""
    if not translated(settings):
        return rejected_error(response, provider)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return adapter(settings.type).parse_error(response.status_code, response.headers, body).exception(provider)


def rejected_error(response: requests.Response, provider: str) -> GatewayError:
    """Translate a non-2xx upstream answer into the gateway's error tree."""
    message, kind, code, param = _upstream_error_fields(response)
    status = response.status_code
    metadata = {"provider_name": provider, "raw": response.text[:RAW_ERROR_CHARS]}
    if status in (401, 403):
        return UpstreamError(f"Upstream {provider!r} rejected the gateway's credentials: {message}",
                             metadata={"provider_name": provider})
    if 400 <= status < 500:
        headers = {"Retry-After": response.headers["Retry-After"]} if "Retry-After" in response.headers else {}
        error = UpstreamRejected(message, status=status, param=param, code=code, headers=headers, metadata=metadata)
        if kind:
            error.type = kind
        return error
    return UpstreamError(f"Upstream {provider!r} failed with {status}: {message}", metadata=metadata)


def _upstream_error_fields(response: requests.Response) -> tuple[str, str | None, str | None, str | None]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        code = error.get("code")
        return (
            str(error.get("message") or response.reason),
            error.get("type") if isinstance(error.get("type"), str) else None,
            str(code) if code is not None else None,
            error.get("param") if isinstance(error.get("param"), str) else None,
        )
    if isinstance(error, str):
        return error, None, None, None
    return (response.text[:500] or str(response.reason)), None, None, None


def translator(settings: ProviderSettings, path: str, body: dict[str, Any]) -> StreamTranslator | None:
    """A fresh stream translator, or None when the events are OpenAI chunks already."""
    if path != CHAT_PATH or not translated(settings):
        return None
    return adapter(settings.type).stream_translator(str(body.get("model")))


def translated_events(translate: StreamTranslator, events: Iterator[SseEvent]) -> Iterator[SseEvent]:
    """A provider's events as OpenAI chunk events, then `[DONE]` (raises UpstreamStreamBroken when cut short)."""
    for event in events:
        for chunk in translate.feed(event):
            yield SseEvent(json.dumps(chunk, separators=(",", ":")))
    for chunk in translate.finish():
        yield SseEvent(json.dumps(chunk, separators=(",", ":")))
    yield DONE
