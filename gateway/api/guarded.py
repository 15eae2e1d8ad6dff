"""The one place the API faces ask the guardrails (gateway.guardrails): build a request's, check its input.

A request's guardrails are built once, when its body is checked (`checked_input`): the `default = true`
ones, its model's, its profile's (a profile route's `scope/profile`), its account's and its key's. They
are kept on the request's record, where the meter takes them at admission (the usage row lists the ones
that acted) and the tool loop and stream relays find them (gateway.loop.checks). The input check runs
after the body is validated and before the cache lookup and admission: a blocked request holds nothing
and writes a refusal row (cost 0, status 400, the guardrail in it); a redacted body is what is prepared,
sent upstream and what the cache key sees. A JSON answer's text is checked before it is returned
(`output_check`, handed to the relay). With no guardrail on a stage, nothing is walked.
"""

from __future__ import annotations

from typing import Any

from flask import request

from gateway import services
from gateway.accounting.keys import Caller, current_caller
from gateway.accounting.meter import refusals_recorded
from gateway.errors import ContentPolicyViolation
from gateway.guardrails.kept import keep_request_guardrails, kept_guardrails
from gateway.serving.http_conventions import request_id
from gateway.upstream.checked_answer import TextCheck

OUTPUT = "output"


def route_profile() -> str | None:
    """The profile of a profile route (`/api/v1/openai/{scope}/{profile}/...`), else None."""
    args = request.view_args or {}
    scope, profile = args.get("scope"), args.get("profile")
    return f"{scope}/{profile}" if isinstance(scope, str) and isinstance(profile, str) else None


def checked_input(endpoint: str, body: dict[str, Any], model: Any, caller: Caller | None = None,
                  request_ref: str | None = None) -> dict[str, Any]:
    """The body with the input guardrails' redactions applied; a block raises ContentPolicyViolation
    (400 in the path's dialect) after its refusal row.

    `caller` and `request_ref` default to the HTTP request's (a WebSocket turn passes its own).
    """
    if not services.settings().guardrails:
        return body  # the common case costs one lookup: nothing is built, kept or walked
    caller = caller or current_caller()
    request_ref = request_ref or request_id()
    guardrails = keep_request_guardrails(services.settings(), caller, endpoint=endpoint,
                                         model=model if isinstance(model, str) else None, profile=route_profile(),
                                         request_ref=request_ref)
    if not guardrails.active("input"):
        return body
    with refusals_recorded(caller, endpoint, model, request_ref):
        return guardrails.check_body(endpoint, body)


def output_check() -> TextCheck | None:
    """The output check of a JSON answer's texts (None when no guardrail checks output)."""
    guardrails = kept_guardrails()
    if not guardrails.active(OUTPUT):
        return None
    return lambda text: guardrails.check(OUTPUT, text)


def is_block(error: BaseException) -> bool:
    """Whether an error is a guardrail's block (also once a run's failure made it a plain GatewayError)."""
    return isinstance(error, ContentPolicyViolation) or getattr(error, "code", None) == ContentPolicyViolation.code
