"""Gemini's answers in canonical form: a GenerateContentResponse, the SSE stream of them, the error body.

Parts marked `thought` go to `reasoning`; `functionCall` parts become whole tool calls (Gemini
does not stream arguments in pieces), their `thoughtSignature` kept in `reasoning_details`.
`finishReason` STOP / MAX_TOKENS / SAFETY, RECITATION and the other blocks map to stop / length /
content_filter. Usage: `promptTokenCount` (cached included, `cachedContentTokenCount` beside) and
`candidatesTokenCount + thoughtsTokenCount` as completion tokens (reasoning is output).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from gateway.errors import UpstreamStreamBroken
from gateway.upstream.providers.base import (
    OVERLOADED_RETRY_AFTER_S,
    WireError,
    chunk,
    completion,
    header,
    raw_body,
    usage,
)
from gateway.upstream.sse import SseEvent

SIGNATURE_FORMAT = "google-gemini-v1"  # OpenRouter's `reasoning_details[].format` for Gemini's signatures
FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
ERROR_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error"}


def finish_reason(reason: str | None, called: bool) -> str | None:
    """A `finishReason` as OpenAI's `finish_reason` (tool_calls when the model called functions)."""
    if not reason:
        return None
    if reason in FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if called else "stop"


def usage_of(counts: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical usage of `usageMetadata`."""
    thoughts = int(counts.get("thoughtsTokenCount") or 0)
    return usage(int(counts.get("promptTokenCount") or 0), int(counts.get("candidatesTokenCount") or 0) + thoughts,
                 int(counts.get("cachedContentTokenCount") or 0), 0, thoughts)


def signatures_of(details: Any) -> dict[str, str]:
    """tool call id -> thoughtSignature, from a message's `reasoning_details`."""
    return {str(item.get("id")): str(item.get("data")) for item in details or []
            if isinstance(item, dict) and item.get("format") == SIGNATURE_FORMAT and item.get("id")}


class PartReader:
    """Reads candidate parts into text, reasoning, tool calls and signatures, numbering calls across a stream."""

    def __init__(self, response_id: str) -> None:
        self.response_id = response_id
        self.calls = 0

    def read(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """The delta (or message fields) these parts make."""
        text, reasoning, calls, details = [], [], [], []
        for part in parts:
            if "functionCall" in part:
                call = part["functionCall"] or {}
                call_id = str(call.get("id") or f"call_{self.response_id}_{self.calls}")
                calls.append({"index": self.calls, "id": call_id, "type": "function", "function": {
                    "name": call.get("name"), "arguments": json.dumps(call.get("args") or {})}})
                self.calls += 1
                if part.get("thoughtSignature"):
                    details.append({"type": "reasoning.encrypted", "data": part["thoughtSignature"], "id": call_id,
                                    "format": SIGNATURE_FORMAT, "index": 0})
            elif isinstance(part.get("text"), str):
                (reasoning if part.get("thought") else text).append(part["text"])
        fields: dict[str, Any] = {}
        if text:
            fields["content"] = "".join(text)
        if reasoning:
            fields["reasoning"] = "".join(reasoning)
        if calls:
            fields["tool_calls"] = calls
        if details:
            fields["reasoning_details"] = details
        return fields


def candidate(body: dict[str, Any]) -> dict[str, Any]:
    """The first candidate (empty when the prompt was blocked)."""
    candidates = body.get("candidates") or []
    return candidates[0] if candidates else {}


def completion_of(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The canonical chat completion of a GenerateContentResponse."""
    response_id = str(body.get("responseId") or "gemini")
    first = candidate(body)
    fields = PartReader(response_id).read((first.get("content") or {}).get("parts") or [])
    calls = fields.get("tool_calls") or []
    message = {"role": "assistant", "content": fields.get("content", None if calls else ""), **{
        key: value for key, value in fields.items() if key != "content"}}
    for call in calls:
        call.pop("index")
    blocked = not first and (body.get("promptFeedback") or {}).get("blockReason")
    finish = "content_filter" if blocked else finish_reason(first.get("finishReason") or "STOP", bool(calls))
    return completion(f"chatcmpl-{response_id}", str(body.get("modelVersion") or model), message, finish,
                      usage_of(body.get("usageMetadata") or {}))


class GeminiStream:
    """Streamed GenerateContentResponses in, chat chunks out; usage goes out when the stream ends."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = ""
        self.reader: PartReader | None = None
        self.counts: dict[str, Any] = {}
        self.finish_reason: str | None = None

    def feed(self, event: SseEvent) -> list[dict[str, Any]]:
        """The chunks of one streamed response."""
        try:
            body = json.loads(event.data)
        except ValueError:
            raise UpstreamStreamBroken("Gemini sent a malformed stream event.") from None
        if not isinstance(body, dict) or "error" in body:
            error = body.get("error") if isinstance(body, dict) else body
            raise UpstreamStreamBroken(f"Upstream failed mid-stream: {(error or {}).get('message', error)}")
        chunks = [] if self.reader else self._start(body)
        assert self.reader is not None
        self.counts = body.get("usageMetadata") or self.counts
        first = candidate(body)
        delta = self.reader.read((first.get("content") or {}).get("parts") or [])
        if delta:
            chunks.append(chunk(self.id, self.model, delta))
        reason = first.get("finishReason") or ((body.get("promptFeedback") or {}).get("blockReason") and "SAFETY")
        if reason:
            self.finish_reason = finish_reason(reason, self.reader.calls > 0)
            chunks.append(chunk(self.id, self.model, {}, self.finish_reason))
        return chunks

    def _start(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        response_id = str(body.get("responseId") or "gemini")
        self.id, self.model = f"chatcmpl-{response_id}", str(body.get("modelVersion") or self.model)
        self.reader = PartReader(response_id)
        return [chunk(self.id, self.model, {"role": "assistant", "content": ""})]

    def finish(self) -> list[dict[str, Any]]:
        """The usage chunk; raises when no candidate finished."""
        if self.finish_reason is None:
            raise UpstreamStreamBroken("Gemini closed the stream before a candidate finished.")
        return [chunk(self.id, self.model, None, usage_=usage_of(self.counts))]


def retry_delay(error: dict[str, Any]) -> str | None:
    """Seconds from a google.rpc.RetryInfo detail (`"30s"`), rounded up."""
    for detail in error.get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(math.ceil(float(delay[:-1])))
            except ValueError:
                return None
    return None


def error_of(status: int, headers: Mapping[str, str], body: Any) -> WireError:
    """The gateway error of a Google error answer (503 UNAVAILABLE: retryable, with Retry-After)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {"message": str(body)[:500]}
    if any(isinstance(item, dict) and item.get("reason") == "API_KEY_INVALID" for item in error.get("details") or []):
        status = 401  # Google answers a bad key with 400: it is the gateway's credentials, not the client's request
    overloaded = status == 503
    retry_after = header(headers, "retry-after") or retry_delay(error) or (OVERLOADED_RETRY_AFTER_S if overloaded else None)
    return WireError(status, ERROR_TYPES.get(status, "api_error"), str(error.get("status") or status),
                     str(error.get("message") or error.get("status") or status), retry_after, overloaded=overloaded,
                     raw=raw_body(body))
