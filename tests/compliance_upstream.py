"""A fast upstream for the OpenResponses compliance run: `python -m tests.compliance_upstream`.

The fake upstream of the tests, answering a turn that offers function tools with a call of the
first one (the suite's `tool-calling` test wants a `function_call`); it prints its base URL and
serves until interrupted. See tests/README.md.
"""

from __future__ import annotations

import threading
from typing import Any

from tests.fake_upstream import FakeUpstream, JsonReply, StreamReply, default_responder, usage_chunk
from tests.scripted_model import tool_call_chunks


def responder(path: str, body: dict[str, Any]) -> JsonReply | StreamReply:
    """A call of the first function tool for a user turn that offers tools; the default answers otherwise."""
    functions = [tool["function"]["name"] for tool in body.get("tools") or [] if tool.get("type") == "function"]
    last = (body.get("messages") or [{}])[-1]
    if functions and body.get("stream") and last.get("role") == "user":
        return StreamReply([*tool_call_chunks([(functions[0], {"location": "San Francisco, CA"})]), (0, usage_chunk())])
    return default_responder(path, body)


def main() -> None:
    """Serve on a free loopback port until interrupted."""
    fake = FakeUpstream()
    fake.responder = responder
    fake.start()
    print(fake.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
