"""Request parsing and response helpers shared by the blueprints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, g, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import NotFound

from gateway import services
from gateway.accounting.attribution import TAGS_HEADER, attribution_of
from gateway.accounting.keys import current_caller
from gateway.accounting.meter import Meter
from gateway.api import API_PREFIXES
from gateway.errors import InvalidRequest, UnknownParameter
from gateway.loop.run import Run
from gateway.observability.wsgi_middleware import current
from gateway.serving.body import parse_body
from gateway.serving.http_conventions import STREAM_HEADERS, assign_request_id

ModelT = TypeVar("ModelT", bound=BaseModel)
# Bodies that never become a usage row: a conversation's `metadata` is the conversation's, not a request's tags.
UNMETERED_BLUEPRINTS = frozenset({"admin", "conversations"})


def json_object() -> dict[str, Any]:
    """The request body through the gate (gateway.serving.body): a JSON object, or 400 with a clear message.

    Every face that admits a request reads its body here, so here its tags and end user are set on the
    request record, before admission (budgets read them) and before its usage row (the meter writes them);
    not for the UNMETERED_BLUEPRINTS.
    """
    body = parse_body(request.get_data(cache=True))
    if (request.blueprint or "").rsplit(".", 1)[-1] not in UNMETERED_BLUEPRINTS:
        attribute(body)
    return body


def attribute(body: dict[str, Any]) -> None:
    """Set the request's tags (`X-Gateway-Tags`, `metadata`) and end user on its record; bad tags are a 400."""
    attribution = attribution_of(request.headers.getlist(TAGS_HEADER), body, services.settings().attribution)
    record = current()
    if record is not None:
        record.tags, record.end_user = attribution.tags, attribution.end_user


def stream_requested(body: dict[str, Any]) -> bool:
    """Whether a chat or completions request streams; a non-boolean `stream` or `stream_options` is a 400."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("`stream` must be true or false.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("`stream_options` must be an object.", param="stream_options")
    if options is not None and not isinstance(options.get("include_usage", False), bool):
        raise InvalidRequest("`stream_options.include_usage` must be true or false.",
                             param="stream_options.include_usage")
    return bool(stream)


def authenticated_blueprint(name: str, import_name: str, **options: Any) -> Blueprint:
    """A blueprint whose every route authenticates the key before anything reads the body."""
    blueprint = Blueprint(name, import_name, **options)
    blueprint.before_request(lambda: current_caller() and None)
    return blueprint


def event_stream(chunks: Iterator[bytes], run: Run | None = None) -> Response:
    """An unbuffered `text/event-stream` response around a generator of SSE bytes.

    With a run, closing the response also finishes the run: a client that leaves before the
    generator ever started still releases its hold.
    """
    # Not direct_passthrough: werkzeug then hands the bare generator to the server and never
    # runs the response's call_on_close callbacks (the run's finish, a stream slot's release).
    response = Response(chunks, mimetype="text/event-stream")
    response.headers.update(STREAM_HEADERS)
    if run is not None:
        response.call_on_close(lambda: run.finish(run.outcome_after(None)))
    return response


def with_headers(response: Response, meter: Meter) -> Response:
    """The response with the meter's rate-limit headers and its generation id (`X-Generation-Id`)."""
    response.headers.update(meter.rate_limit_headers)
    response.headers["X-Generation-Id"] = meter.generation_id
    return response


def parse_model(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    """Validate a body with pydantic; the first problem becomes a 400 naming the field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = param_of(exc.errors())
        if first["type"] == "extra_forbidden":
            raise UnknownParameter(f"Unknown parameter: {param!r}.", param=param) from None
        raise InvalidRequest(f"Invalid value for {param!r}: {first['msg']}.", param=param) from None


def param_of(errors: list[Any]) -> str | None:
    """The field the first error names, as OpenAI writes it (`messages[0].role`).

    A value that fits no member of a union fails once per member, each loc ending in the member's
    type; the field is what those locs share.
    """
    first = errors[0]["loc"]
    shared = [error["loc"] for error in errors if error["loc"][:1] == first[:1]]
    length = len(first)
    for loc in shared[1:]:
        same = next((i for i, (a, b) in enumerate(zip(first, loc, strict=False)) if a != b), len(loc))
        length = min(length, same)
    param = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first[:length])
    return param.lstrip(".") or None


def under_api_prefix(path: str) -> bool:
    """Whether a path is under one of the API base paths (`/v1`, `/api/v1`)."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in API_PREFIXES.values())


def init_app(app: Flask) -> None:
    """Give every request an id (kept from `x-request-id`) and send it back."""

    @app.before_request
    def _start() -> None:
        assign_request_id()
        if isinstance(request.routing_exception, NotFound) and under_api_prefix(request.path):
            current_caller()  # authentication before routing: a bad key is a 401 on any API path, known or not

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["x-request-id"] = g.get("request_id", "")
        return response
