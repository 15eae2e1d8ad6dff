"""`/v1/messages` on models of each native provider (Anthropic, Gemini, Azure fakes), through the `anthropic` SDK.

On Gemini and Azure the Messages body is translated to chat and then to the provider's wire; on
Anthropic it goes through natively (tests/test_messages_native.py): the text, the stop reason and a
usage row per call come back either way.
"""

from __future__ import annotations

import anthropic
import pytest

from gateway import db
from gateway.accounting import credits
from gateway.tables import ApiKey, UsageEntry
from tests.native_providers import Backend, native, settings  # noqa: F401 (fixtures, used by name)

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def sdk(live_server, make_key):
    secret = make_key("messages-user", scope="default")
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == "messages-user").account_id, 10_000_000)
    return anthropic.Anthropic(base_url=live_server, api_key=secret, max_retries=0, timeout=20)


def test_create_and_stream_on_a_native_provider(sdk, native: Backend):  # noqa: F811 (the fixture)
    message = sdk.messages.create(model="native-model", max_tokens=200, messages=USER)
    assert (message.content[0].text, message.stop_reason) == (native.text, "end_turn")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    with sdk.messages.stream(model="native-model", max_tokens=200, messages=USER) as stream:
        final = stream.get_final_message()
    assert (final.content[0].text, final.stop_reason) == (native.text, "end_turn")
    with db.database.connection_context():
        rows = list(UsageEntry.select().order_by(UsageEntry.id))
    assert [(row.endpoint, row.status) for row in rows] == [("messages", 200)] * 2
