"""A scripted model for agent-framework tests: one MCP call the gateway runs, one client tool call, an answer."""

from __future__ import annotations

from typing import Any

from tests.fake_upstream import JsonReply, StreamReply, chat_completion
from tests.scripted_model import answer_chunks, tool_call_chunks, usage

TIME_TOOL = "mcp__time__get_current_time"
CLIENT_TOOL = "lucky_number"
LUCKY = "4217"


class AgentModel:
    """Asks the time (MCP), then the client's `lucky_number`, then answers with both results."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, path: str, body: dict[str, Any]) -> StreamReply | JsonReply:
        self.bodies.append(body)
        results = [str(message.get("content")) for message in body.get("messages", []) if message.get("role") == "tool"]
        offered = {tool["function"]["name"] for tool in body.get("tools") or []}
        if any(LUCKY in result for result in results):
            reply = answer_chunks(f"Your lucky number is {LUCKY}.")
        elif any("datetime" in result for result in results):
            reply = tool_call_chunks([(CLIENT_TOOL, {})]) if CLIENT_TOOL in offered else answer_chunks("It is late.")
        elif TIME_TOOL in offered:
            reply = tool_call_chunks([(TIME_TOOL, {"timezone": "UTC"})])
        else:
            reply = answer_chunks("No tools.")
        if not body.get("stream"):
            return JsonReply(chat_completion("non-streamed turns are not scripted"))
        return StreamReply([*reply, (0, usage(20, 5))])

    def time_results(self) -> list[str]:
        """The MCP results the gateway sent back to the model (tool messages from the time server)."""
        return [str(message["content"]) for body in self.bodies for message in body.get("messages", [])
                if message.get("role") == "tool" and "datetime" in str(message.get("content"))]
