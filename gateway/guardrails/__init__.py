"""Guardrails: named checks on what goes in and comes out, MCP tool traffic included.

A `[guardrails.NAME]` table is one check of one `type` (pii, regex, max_size, webhook, moderation)
on some `stages` (input, output, tool_input, tool_output), with an `action`: block, redact or log.
`guardrails_for(settings, ...)` gives the ones that apply to a request (the defaults, the model's,
the profile's, the account's and the key's, in declared order, each once); its `check`,
`check_body` and `stream` run them, and its `fired` says what they did.

A check is one callable per guardrail, built once per configuration by its type's builder
(gateway.guardrails.registry.BUILDERS; `webhook` and `moderation` are the `build` of
gateway/guardrails/webhook.py and moderation.py):

    build(name: str, guardrail: GuardrailSettings, settings: Settings) -> Check
    check(text: str, stage: str, context: CheckContext | None) -> Verdict

    Verdict()                                        allow
    Verdict("block", what=(...), reason="...")       block (the reason stays on the verdict: it may quote the text, so it is neither logged nor shown; the client sees the name)
    Verdict("redact", text="new text", what=(...))   redact: go on with `text`
    Verdict("log", what=(...))                       record only

`what` names what matched (detector or pattern names), never the matched text. A check that needs
the whole text (webhook, moderation) sees a stream's whole answer at its end; the pure ones (pii,
regex) run over a sliding window (gateway.guardrails.window).
"""

from gateway.config import Settings
from gateway.guardrails.apply import NO_GUARDRAILS, Fired, Guardrails, guardrails_for
from gateway.guardrails.registry import built_for
from gateway.guardrails.verdicts import ALLOW, STAGES, CheckContext, Verdict
from gateway.guardrails.window import StreamCheck

__all__ = ["ALLOW", "NO_GUARDRAILS", "STAGES", "CheckContext", "Fired", "Guardrails", "StreamCheck", "Verdict",
           "guardrails_for", "prepare"]


def prepare(settings: Settings) -> None:
    """Build every configured guardrail's check now (at startup), so a type's own load-time error (a webhook
    URL the policy refuses, say) stops the process instead of failing the first request that uses it."""
    built_for(settings)
