"""Guardrails on `/v1/messages`' native pass-through (Anthropic-type models), with the anthropic SDK.

The input is redacted before the provider (what the Anthropic fake received), a blocked input never
reaches it, and a JSON message's text blocks are redacted or blocked (charged: it was generated) in
Anthropic's `invalid_request_error`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import pytest

from gateway import db
from gateway.accounting import credits
from gateway.tables import ApiKey, UsageEntry
from tests import fake_anthropic
from tests.native_providers import PRICES, Backend, running_backend
from tests.polling import wait_until
from tests.provider_fake import Json

EMAIL, CARD = "alice@example.com", "4111 1111 1111 1111"


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    with running_backend("anthropic", monkeypatch) as backend:
        yield backend


@pytest.fixture
def settings(make_settings, native: Backend):
    return make_settings(
        providers={"native": native.settings},
        models={"native-model": {"provider": "native", "upstream_model": "native-upstream", **PRICES, "retries": 0}},
        guardrails={"emails": {"type": "pii", "stages": ["input", "output"], "action": "redact", "default": True,
                               "detectors": ["email"]},
                    "cards": {"type": "pii", "stages": ["input", "output"], "default": True, "detectors": ["card"]}},
    )


@pytest.fixture
def sdk(live_server, make_key) -> anthropic.Anthropic:
    secret = make_key("native-guarded")
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == "native-guarded").account_id, 10_000_000)
    return anthropic.Anthropic(base_url=live_server, api_key=secret, max_retries=0, timeout=20)


def rows() -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def ask(sdk: anthropic.Anthropic, text: str, **extra) -> anthropic.types.Message:
    return sdk.messages.create(model="native-model", max_tokens=50, messages=[{"role": "user", "content": text}],
                               **extra)


def test_native_input_is_redacted_or_blocked_before_the_provider(sdk, native: Backend):
    answer = ask(sdk, f"mail {EMAIL}", system=[{"type": "text", "text": f"owner {EMAIL}"}])
    assert answer.content[0].text == fake_anthropic.TEXT
    _, sent, _ = native.requests()[-1]
    assert sent["messages"] == [{"role": "user", "content": "mail [EMAIL]"}]
    assert sent["system"] == [{"type": "text", "text": "owner [EMAIL]"}]
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask(sdk, f"card {CARD}")
    assert refused.value.body["error"] == {"type": "invalid_request_error",
                                           "message": "Blocked by guardrail 'cards' (input)."}
    assert len(native.requests()) == 1
    wait_until(lambda: [row.status for row in rows()] == [200, 400], "the refusal's row (queued, not waited for)")


def test_native_output_is_redacted_or_blocked_and_charged(sdk, native: Backend):
    native.fake.script.append(Json(fake_anthropic.message([{"type": "text", "text": f"mail {EMAIL}"}])))
    assert ask(sdk, "hi").content[0].text == "mail [EMAIL]"
    native.fake.script.append(Json(fake_anthropic.message([{"type": "text", "text": f"card {CARD}"}])))
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask(sdk, "hi")
    assert refused.value.body["error"]["message"] == "Blocked by guardrail 'cards' (output)."
    redacted, blocked = rows()
    assert json.loads(redacted.guardrails) == [{"name": "emails", "action": "redact", "stage": "output"}]
    assert blocked.status == 400 and blocked.cost > 0 and blocked.completion_tokens == 9
    assert json.loads(blocked.guardrails) == [{"name": "cards", "action": "block", "stage": "output"}]
