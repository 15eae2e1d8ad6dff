"""The output cap of a request: one rule for what a hold assumes and what the upstream is told.

A request may cap its output with `max_completion_tokens`, `max_tokens` or (Responses)
`max_output_tokens`, in that order of precedence; without one the model's `max_output_tokens`
applies. The hold reserves the cap times `n`, and the upstream always receives the same cap, so
a hold is an upper bound of the output. On chat completions `max_output_tokens` is not an OpenAI
field: it is accepted and sent upstream as `max_tokens`.
"""

from __future__ import annotations

from typing import Any

from gateway.config import ModelSettings
from gateway.errors import InvalidRequest

NO_OUTPUT_ENDPOINTS = frozenset({"embeddings"})
CAP_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def positive_integer(body: dict[str, Any], field: str) -> int | None:
    """`body[field]` when it is a positive integer, None when absent; anything else is a 400."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"`{field}` must be a positive integer.", param=field)
    return value


def requested_cap(body: dict[str, Any]) -> int | None:
    """The request's own output cap, if it set one."""
    caps = [positive_integer(body, field) for field in CAP_FIELDS]
    return next((cap for cap in caps if cap is not None), None)


def output_cap(body: dict[str, Any], model: ModelSettings, endpoint: str) -> int:
    """Tokens one choice may generate: the request's cap or the model's (0 when nothing is generated)."""
    if endpoint in NO_OUTPUT_ENDPOINTS:
        return 0
    return requested_cap(body) or model.max_output_tokens


def choices(body: dict[str, Any]) -> int:
    """How many choices the request asks for (`n`)."""
    return positive_integer(body, "n") or 1


def with_output_cap(body: dict[str, Any], model: ModelSettings, endpoint: str) -> dict[str, Any]:
    """The body with the cap the hold assumed, in the field the endpoint uses."""
    if endpoint in NO_OUTPUT_ENDPOINTS:
        return body
    sent = {key: value for key, value in body.items() if key not in CAP_FIELDS}
    field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    sent[field] = output_cap(body, model, endpoint)
    return sent
