"""The MCP hub's `tools/call` through the `tool_input` guardrails (gateway.mcp_hub.guarded), with the `mcp` SDK.

A redacted argument reaches the tool redacted; a blocked one is a tool error naming the guardrail
(never the matched text), with a refusal row (status 400, cost 0, the guardrail in it) and nothing held
or charged, even for a priced tool.
"""

from __future__ import annotations

import json
import sys

import pytest

from gateway import db
from gateway.accounting import credits
from gateway.tables import ApiKey, LedgerEntry, Reservation, UsageEntry
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.mcp_hub_client import call, text_of

EMAIL, CARD = "alice@example.com", "4111 1111 1111 1111"


@pytest.fixture
def settings(make_settings):
    return make_settings(
        guardrails={
            "tool_emails": {"type": "pii", "stages": ["tool_input"], "action": "redact", "default": True,
                            "detectors": ["email"]},
            "tool_cards": {"type": "pii", "stages": ["tool_input"], "action": "block", "detectors": ["card"]},
        },
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER, "stdio"], "tool_prices": {"echo": 0.5}}},
        profiles={"acme/default": {"mcp_servers": ["tools"], "guardrails": ["tool_cards"]}},
    )


@pytest.fixture
def key(make_key) -> str:
    secret = make_key("hub-guarded", scope="acme")
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == "hub-guarded").account_id, 10_000_000)
    return secret


def rows() -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def test_tool_input_is_redacted_then_blocked_on_the_profiles_hub(live_server, key):
    redacted = call(f"{live_server}/mcp", key, "tools__echo", {"text": f"mail {EMAIL}"})
    assert not redacted.is_error and text_of(redacted) == "mail [EMAIL]"
    # the card guardrail is the profile's: the whole hub lets it through, the profile's hub blocks it
    assert text_of(call(f"{live_server}/mcp", key, "tools__echo", {"text": f"card {CARD}"})) == f"card {CARD}"
    blocked = call(f"{live_server}/mcp/acme/default", key, "tools__echo", {"text": f"card {CARD}"})
    assert blocked.is_error and text_of(blocked) == "Blocked by guardrail 'tool_cards' (tool_input)."
    first, second, refused = rows()
    assert json.loads(first.guardrails) == [{"name": "tool_emails", "action": "redact", "stage": "tool_input"}]
    assert second.guardrails is None and (second.status, second.cost) == (200, 500_000)
    assert (refused.endpoint, refused.model, refused.status, refused.cost) == ("mcp", "tools/echo", 400, 0)
    assert json.loads(refused.guardrails) == [{"name": "tool_cards", "action": "block", "stage": "tool_input"}]
    with db.database.connection_context():
        assert Reservation.select().where(Reservation.status == "open").count() == 0
        assert sum(abs(entry.amount) for entry in LedgerEntry.select().where(LedgerEntry.kind == "charge")) == \
            1_000_000  # the two calls that ran
    assert CARD not in json.dumps([row.__data__ for row in rows()], default=str)
