"""The hub's guardrails (gateway.guardrails): a tools/call's arguments through the `tool_input` stage.

The view builds the request's guardrails once (the `default = true` ones, the profile's on
`/mcp/{scope}/{profile}`, the account's and the key's) and keeps them on the request's record, where
the tool call's usage row finds what acted. Each string in the arguments is checked before
admission: a redaction rewrites it; a block answers the call as a tool error naming the guardrail
(never the matched text), with a refusal usage row (status 400, cost 0) and nothing held.
"""

from __future__ import annotations

from typing import Any

from flask import request

from gateway.accounting.keys import Caller
from gateway.accounting.meter import refusals_recorded
from gateway.config import Settings
from gateway.guardrails import Guardrails
from gateway.guardrails.body import map_value
from gateway.guardrails.kept import keep_request_guardrails

ENDPOINT = "mcp"
STAGE = "tool_input"


def hub_guardrails(settings: Settings, caller: Caller, request_ref: str) -> Guardrails:
    """The guardrails of one hub request, kept on its record (none when the config has none)."""
    args = request.view_args or {}
    profile = f"{args['scope']}/{args['profile']}" if "scope" in args and "profile" in args else None
    return keep_request_guardrails(settings, caller, endpoint=ENDPOINT, model=None, profile=profile,
                                   request_ref=request_ref)


def checked_arguments(guardrails: Guardrails, caller: Caller, request_ref: str, tool: str,
                      arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments with `tool_input` redactions applied; a block raises ContentPolicyViolation after its
    refusal row (`tool` is the row's model, `server/tool`). Blocking I/O: call it off the bridge loop."""
    with refusals_recorded(caller, ENDPOINT, tool, request_ref, wait=True):
        return map_value(arguments, lambda text: guardrails.check(STAGE, text), every_string=True)
