"""Internal events the tool loop yields; chat and Responses renderers both consume them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.accounting.usage import Usage
from gateway.errors import CLIENT_CLOSED, ContentPolicyViolation
from gateway.loop.failure import Failure

CHAT_FINISH_REASONS = {"max_output_tokens": "length", "context_length_exceeded": "length",
                       "content_filter": "content_filter"}  # incomplete reasons as chat finish reasons


@dataclass(frozen=True)
class TextDelta:
    """A piece of the assistant's visible answer."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's reasoning (upstream `reasoning_content` / `reasoning`)."""

    text: str


@dataclass(frozen=True)
class FunctionCallDelta:
    """Part of a client function-tool call; `index` orders parallel calls in one turn."""

    index: int
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class McpToolsListed:
    """A server's tool inventory was read (or failed to be) before the run."""

    server_label: str
    tools: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class McpCallStarted:
    """The loop is about to execute an MCP tool call."""

    item_id: str
    server_label: str
    name: str
    arguments: str


@dataclass(frozen=True)
class McpCallFinished:
    """An MCP tool call ended; exactly one of output / error is set."""

    item_id: str
    output: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class McpApprovalRequested:
    """A call needs the client's approval; the response ends after these."""

    item_id: str
    server_label: str
    name: str
    arguments: str


@dataclass(frozen=True)
class KeepAlive:
    """Nothing new yet (slow model or tool); streams send a comment."""


@dataclass(frozen=True)
class TurnFinished:
    """One upstream model turn ended."""

    finish_reason: str | None
    usage: Usage
    model: str = ""


UPSTREAM_FAILED = 502


@dataclass(frozen=True)
class LoopFinished:
    """The whole loop ended (or was ended); `status` is the Responses status it maps to."""

    status: Literal["completed", "incomplete", "failed", "cancelled"]
    usage: Usage
    incomplete_reason: str | None = None
    failure: Failure | None = None  # what a failed loop ended with: the one error every renderer shows

    def __post_init__(self) -> None:
        if (self.status == "failed") != (self.failure is not None):
            raise ValueError("a failed outcome carries its failure, and only a failed one")

    @property
    def http_status(self) -> int:
        """The status the usage row records: 200, the failure's status, or 499 when cancelled."""
        if self.status == "failed":
            return self.failure.status if self.failure else UPSTREAM_FAILED
        return CLIENT_CLOSED if self.status == "cancelled" else 200

    @property
    def finish_reason(self) -> str | None:
        """The chat finish reason: `stop`, `length` or `content_filter`; `error` if failed; None if cancelled."""
        if self.status == "failed":
            return "error"
        if self.status == "cancelled":
            return None
        return CHAT_FINISH_REASONS.get(self.incomplete_reason or "", "stop")

    @property
    def failed_early(self) -> bool:
        """A client-side (4xx) failure: answered as an HTTP error when no output was sent yet.

        A guardrail's block inside the loop (output, tool stages) is not one: the model had answered,
        so the response failed (a stream ends with `response.failed`; charged for what was generated).
        """
        blocked = self.failure is not None and self.failure.code == ContentPolicyViolation.code
        return self.status == "failed" and 400 <= self.http_status < 500 and not blocked


LoopEvent = (
    TextDelta
    | ReasoningDelta
    | FunctionCallDelta
    | McpToolsListed
    | McpCallStarted
    | McpCallFinished
    | McpApprovalRequested
    | KeepAlive
    | TurnFinished
    | LoopFinished
)
