"""`/v1/messages` through `@anthropic-ai/sdk` on models of the native providers' fakes (Anthropic, Gemini, Azure).

The same script shape as tests/test_messages_js.py: create, and a stream accumulated by `finalMessage()`.
Runs when ANTHROPIC_SDK_NODE_MODULES names a node_modules folder that holds `@anthropic-ai/sdk` (else skipped).
"""

from __future__ import annotations

import pytest

from gateway import db
from gateway.accounting import credits
from gateway.tables import ApiKey, UsageEntry
from tests.native_providers import Backend, native, settings  # noqa: F401 (fixtures, used by name)
from tests.test_messages_js import ANTHROPIC_SDK, node_with, run_node

SCRIPT = """
const Anthropic = require("@anthropic-ai/sdk");
const client = new Anthropic({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, maxRetries: 0 });
const request = { model: "native-model", max_tokens: 200, messages: [{ role: "user", content: "hi" }] };
async function main() {
  const created = await client.messages.create(request);
  const streamed = await client.messages.stream(request).finalMessage();
  console.log(JSON.stringify({ created, streamed }));
}
main().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.mark.skipif(not node_with(ANTHROPIC_SDK, "@anthropic-ai/sdk"),
                    reason="node with @anthropic-ai/sdk is not available (set ANTHROPIC_SDK_NODE_MODULES)")
def test_anthropic_sdk_js_on_a_native_provider(live_server, make_key, native: Backend):  # noqa: F811 (the fixture)
    secret = make_key("messages-js", scope="default")
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == "messages-js").account_id, 10_000_000)
    got = run_node(SCRIPT, ANTHROPIC_SDK, live_server, secret)
    for message in (got["created"], got["streamed"]):
        assert (message["content"][0]["text"], message["stop_reason"]) == (native.text, "end_turn")
        assert message["usage"]["input_tokens"] > 0 and message["usage"]["output_tokens"] > 0
    with db.database.connection_context():
        rows = list(UsageEntry.select().order_by(UsageEntry.id))
    assert [(row.endpoint, row.status) for row in rows] == [("messages", 200)] * 2
