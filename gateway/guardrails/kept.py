"""A request's guardrails, built once by its face and kept on the request's record.

The meter takes them from the record at admission (the usage row lists the ones that acted), and the
tool loop and stream relays find them there; a face reads them back with `kept_guardrails()`.
"""

from __future__ import annotations

from gateway.accounting.keys import Caller
from gateway.config import Settings
from gateway.guardrails.apply import NO_GUARDRAILS, Guardrails, guardrails_for
from gateway.guardrails.verdicts import CheckContext
from gateway.observability.wsgi_middleware import current


def keep_request_guardrails(settings: Settings, caller: Caller, *, endpoint: str, model: str | None,
                            profile: str | None, request_ref: str) -> Guardrails:
    """The guardrails that apply to this request (the defaults, its model's, profile's, account's and key's),
    kept on its record."""
    guardrails = guardrails_for(settings, model=model, profile=profile, key_guardrails=caller.key_guardrails,
                                account_guardrails=caller.account_guardrails,
                                context=CheckContext(request_ref, endpoint, model, caller.account.id, caller.key.id))
    record = current()
    if record is not None:
        record.guardrails = guardrails
    return guardrails


def kept_guardrails() -> Guardrails:
    """The guardrails this request's face kept (none before it did)."""
    record = current()
    found = record.guardrails if record is not None else None
    return found if isinstance(found, Guardrails) else NO_GUARDRAILS
