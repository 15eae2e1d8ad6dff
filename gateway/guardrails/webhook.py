"""The `webhook` guardrail: POST the text, its stage and the request's metadata to an operator's URL.

The body is `{"text", "stage", "guardrail", "request": {"request_id", "endpoint", "model", "account_id",
"key_id"}}` (never the API key, its hash or the client's headers). The answer is `{"action": "allow"}`,
`{"action": "block", "reason": "..."}` or `{"action": "redact", "text": "..."}`. A timeout, a connection
error, a refused address, a non-2xx status or any other answer is a failure: `fail_open = true` lets the
text through (a warning log and `gateway_guardrail_failures_total`, never the text), false blocks it.

With `[mcp] remote_url_checks` on, the URL policy of remote MCP servers (gateway.url_policy) holds: the URL
is checked when the configuration is loaded and when the guardrail is built (gateway.config.webhook_headers:
a ConfigError naming `guardrails.NAME.url`), and the host's addresses on every new connection
(gateway.guardrails.outbound), so a name that resolves inside later (DNS rebinding) is refused then.
"""

from __future__ import annotations

from typing import Any

import requests

from gateway.config import GuardrailSettings, Settings, webhook_headers
from gateway.guardrails import outbound
from gateway.guardrails.verdicts import ALLOW, BLOCK, REDACT, CheckContext, Verdict

ACTIONS = ("allow", "block", "redact")
REQUEST_FIELDS = ("request_id", "endpoint", "model", "account_id", "key_id")  # of CheckContext: never the key
MAX_REASON_CHARS = 200  # of a block's reason, as kept on the verdict (never shown to the client)


def request_body(name: str, text: str, stage: str, context: CheckContext | None) -> dict[str, Any]:
    """What the webhook is sent: the text, the stage, the guardrail's name and the request's metadata."""
    request = {field: getattr(context, field, None) for field in REQUEST_FIELDS}
    return {"text": text, "stage": stage, "guardrail": name, "request": request}


def read_answer(answer: dict[str, Any]) -> Verdict:
    """The verdict of a webhook's answer; raises CallFailed("malformed") for anything but the three shapes."""
    action = answer.get("action")
    if action == "allow":
        return ALLOW
    if action == "block":
        reason = answer.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise outbound.CallFailed("malformed", "a block's reason is not a string")
        return Verdict(BLOCK, what=("webhook",), reason=_printable(reason or "blocked by the webhook"))
    if action == "redact":
        text = answer.get("text")
        if not isinstance(text, str):
            raise outbound.CallFailed("malformed", "a redact answer has no text")
        return Verdict(REDACT, text=text, what=("webhook",))
    raise outbound.CallFailed("malformed", f"the action is not one of {', '.join(ACTIONS)}")


class WebhookCheck:
    """One webhook guardrail, built once per configuration: `check(text, stage, context) -> Verdict`."""

    def __init__(self, name: str, guardrail: GuardrailSettings, url_checks: bool,
                 session: requests.Session | None = None) -> None:
        self.name = name
        self.url = guardrail.url or ""
        self.timeout_s = guardrail.timeout_s
        self.fail_open = guardrail.fail_open
        self.url_checks = url_checks
        self.headers = webhook_headers(f"guardrails.{name}", guardrail, url_checks)
        self.session = session or (outbound.CHECKED_SESSION if url_checks else outbound.PLAIN_SESSION)

    def __call__(self, text: str, stage: str, context: CheckContext | None) -> Verdict:
        """Ask the webhook; a failure allows (fail_open) or blocks."""
        try:
            answer = outbound.post_json(self.session, self.url, request_body(self.name, text, stage, context),
                                        self.headers, self.timeout_s, checked=self.url_checks)
            return read_answer(answer)
        except outbound.CallFailed as failure:
            return outbound.failure_verdict(self.name, "webhook", stage, failure, self.fail_open)


def build(name: str, guardrail: GuardrailSettings, settings: Settings) -> WebhookCheck:
    """The check of a `type = "webhook"` guardrail (URL policy from `[mcp] remote_url_checks`)."""
    return WebhookCheck(name, guardrail, settings.mcp.remote_url_checks)


def _printable(reason: str) -> str:
    """A reason as one short printable line."""
    flat = "".join(char if char.isprintable() else " " for char in reason)
    return flat[:MAX_REASON_CHARS]
