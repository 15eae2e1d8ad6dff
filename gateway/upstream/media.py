"""Media requests (images, audio, moderations, rerank) prepared once, routed, retried and settled like chat.

A media request is a PreparedRequest (gateway.upstream.prepared) whose body is the client's JSON, or
the text fields of its upload, with the deployment's upstream model; its hold is its tokens and its
units (gateway.accounting.media_units). `relay_answer` reads a JSON or text answer whole and settles
with the usage `priced` reads from it; `open_audio` and `relay_audio` stream a speech answer to the
client as it arrives and settle when it ends. An upload (`MultipartBody`) is read again from its
start on each attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from gateway.accounting.meter import Meter
from gateway.accounting.tokens import estimate_text_tokens
from gateway.accounting.usage import Usage
from gateway.config import ProviderSettings
from gateway.db import own_connection
from gateway.errors import CLIENT_CLOSED, GatewayError, InvalidRequest
from gateway.upstream.client import MediaResponse
from gateway.upstream.multipart import MultipartBody
from gateway.upstream.prepared import PreparedRequest
from gateway.upstream.router import Router
from gateway.upstream.routing import Route
from gateway.upstream.wire import serves_media

Priced = Callable[[bytes, str], Usage]  # (the answer's body, its content type) -> the usage it is charged


def prepare_media(routes: list[Route], path: str, body: Mapping[str, Any], providers: Mapping[str, ProviderSettings],
                  unit: str, held_units: float, input_text: str = "", output_tokens: int = 0) -> list[PreparedRequest]:
    """One prepared media request per candidate route: `body` with its upstream model, held for its units.

    `input_text` is what its input tokens are estimated from; `output_tokens`, the output tokens held
    (an image model that reports tokens). A model whose provider does not serve the path is a 400 naming it.
    """
    for route in routes:
        for deployment in route.deployments:
            provider = providers[deployment.provider]
            if not serves_media(provider, path):
                raise InvalidRequest(f"The model {route.model_id!r} is served by a {provider.type} provider, which "
                                     f"has no /{path} here (OpenAI-compatible providers do; Azure for images and "
                                     "audio).", param="model", code="unsupported_endpoint")
    tokens = estimate_text_tokens(input_text)

    def prepared(route: Route, _provider: ProviderSettings | None = None) -> PreparedRequest:
        sent = {**body, "model": route.upstream_model}
        return PreparedRequest(route, path, sent, False, tokens, tokens, output_tokens, output_tokens, prepared,
                               unit, held_units)

    return [prepared(route) for route in routes]


def relay_answer(router: Router, candidates: list[PreparedRequest], meter: Meter, priced: Priced,
                 upload: MultipartBody | None = None) -> tuple[Route, bytes, str]:
    """One round trip, routed and retried; the answer's body and content type, its usage charged."""
    client = router.client
    with meter.closed_on_failure():
        route, answer = router.call(candidates, lambda sent: client.open_response(
            sent.provider, sent.path, sent.body, upload, sent.read_timeout_s))
        content = answer.content()
        meter.finish(priced(content, answer.content_type), 200, route)
    return route, content, answer.content_type


def open_audio(router: Router, candidates: list[PreparedRequest], meter: Meter) -> tuple[Route, MediaResponse]:
    """Open a speech answer (routed and retried until the upstream accepts it) before any byte goes out."""
    client = router.client
    with meter.closed_on_failure():
        return router.call(candidates, lambda sent: client.open_response(
            sent.provider, sent.path, sent.body, None, sent.read_timeout_s))


def relay_audio(answer: MediaResponse, route: Route, meter: Meter, usage: Usage) -> Iterator[bytes]:
    """The speech answer's bytes as they arrive; settles with `usage` (its input was spoken) when it ends.

    A failure after the first byte cannot be told in a binary body: the answer ends short, and its row
    has the failure's status.
    """
    status = CLIENT_CLOSED
    try:
        yield from answer.pieces()
        status = 200
    except GatewayError as error:
        status = error.status
    finally:
        answer.close()
        with own_connection():
            meter.finish(usage, status, route)
