"""An Anthropic-type provider's Messages stream relayed event by event, as it arrives, and metered.

Every event goes out as the provider sent it (`ping` included), except `message_start`, whose
`message.model` becomes the public model id. Usage is read from `message_start` and `message_delta`
(cache reads and writes included) and priced as chat's; until the final `message_delta`, output is
at least the estimate of the text generated so far, so a client that leaves mid-stream is charged
for what was generated. Silences get `ping` events; the provider's own `error` event goes out as
sent, and any other failure (a stream cut short before `message_stop`) ends with the gateway's
`error` event in Anthropic's shape, and so does a block by an output guardrail (CheckedBlocks).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

from gateway.accounting.meter import Meter
from gateway.accounting.tokens import tokens_of_length, usage_from_openai
from gateway.accounting.usage import Usage
from gateway.db import own_connection
from gateway.dialects.anthropic_replies import error_event, ping
from gateway.errors import CLIENT_CLOSED, GatewayError, UpstreamStreamBroken
from gateway.observability.wsgi_middleware import first_token
from gateway.upstream import sse
from gateway.upstream.checked_text import OutputCheck
from gateway.upstream.chunks import error_message
from gateway.upstream.client import UpstreamStream
from gateway.upstream.providers.anthropic_answer import finish_reason, usage_of
from gateway.upstream.routing import Route

DELTA_TEXT = ("text", "thinking", "partial_json")  # the generated text of a content_block_delta


class ProviderErrorEvent(UpstreamStreamBroken):
    """The provider's own `error` event: the client gets it as sent (`sent`)."""

    def __init__(self, message: str, sent: bytes) -> None:
        super().__init__(message)
        self.sent = sent


def anthropic_usage(counts: Any) -> Usage | None:
    """The gateway's Usage of an Anthropic `usage` object (None when absent)."""
    return usage_from_openai(usage_of(counts)) if isinstance(counts, dict) else None


@dataclasses.dataclass
class Tally:
    """What a Messages stream reported and generated so far."""

    counts: dict[str, Any] = dataclasses.field(default_factory=dict)
    chars: int = 0
    final: bool = False  # the closing message_delta came (its output count is the whole output)
    stopped: bool = False  # message_stop came
    stop_reason: str | None = None

    def feed(self, payload: dict[str, Any]) -> int:
        """Read one event; the characters of text it generated."""
        kind = payload.get("type")
        if kind == "message_start":
            self.counts.update((payload.get("message") or {}).get("usage") or {})
        elif kind == "message_delta":
            self.counts.update({name: value for name, value in (payload.get("usage") or {}).items()
                                if value is not None})
            self.stop_reason = (payload.get("delta") or {}).get("stop_reason") or self.stop_reason
            self.final = True
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "content_block_delta":
            delta = payload.get("delta") or {}
            generated = sum(len(delta[name]) for name in DELTA_TEXT if isinstance(delta.get(name), str))
            self.chars += generated
            return generated
        return 0

    def usage(self, meter: Meter) -> Usage:
        """The usage to charge: the reported counts, output at least the generated text's estimate until final."""
        guessed = tokens_of_length(self.chars)
        reported = anthropic_usage(self.counts) if self.counts else None
        if reported is None:
            return Usage(meter.prompt_estimate, guessed, estimated=True)
        if not self.final and guessed > reported.output_tokens:
            return dataclasses.replace(reported, output_tokens=guessed, estimated=True)
        return reported


class CheckedBlocks:
    """Each text block's `text_delta`s through its own window of the output guardrails.

    Only a delta's `text` is rewritten; a block's held tail goes out, checked, as one more `text_delta`
    just before its `content_block_stop` (or before `message_delta` for a block never stopped).
    """

    def __init__(self, new_check: Callable[[], OutputCheck]) -> None:
        self.new_check = new_check
        self.windows: dict[int, OutputCheck] = {}

    def frames(self, event: sse.SseEvent, payload: dict[str, Any], route: Route) -> list[bytes]:
        """The frames to send for one provider event (raises the check's ContentPolicyViolation on block)."""
        kind, delta = payload.get("type"), payload.get("delta")
        index = payload.get("index", 0)
        if kind == "content_block_delta" and isinstance(delta, dict) and delta.get("type") == "text_delta" \
                and isinstance(delta.get("text"), str):
            window = self.windows.setdefault(index, self.new_check())
            delta["text"] = window.feed(delta["text"])
            return [sse.encode(payload, event=event.event)]
        if kind == "content_block_stop" and index in self.windows:
            return [*self.tail(index), outgoing(event, payload, route)]
        if kind == "message_delta":
            return [*(frame for open_block in list(self.windows) for frame in self.tail(open_block)),
                    outgoing(event, payload, route)]
        return [outgoing(event, payload, route)]

    def tail(self, index: int) -> list[bytes]:
        """A block's held-back text as one `text_delta` (none if nothing was held)."""
        text = self.windows.pop(index).finish()
        delta = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
        return [sse.encode(delta, event="content_block_delta")] if text else []


def relay_events(stream: UpstreamStream, route: Route, meter: Meter, keepalive_s: float,
                 output_check: Callable[[], OutputCheck] | None = None) -> Iterator[bytes]:
    """The provider's events to the client; the meter settled at the end, on failure, or when the client leaves.

    `output_check` makes each text block's window of the output guardrails (CheckedBlocks); a block ends
    the stream with Anthropic's `error` event, charged for what was generated.
    """
    checked = CheckedBlocks(output_check) if output_check is not None else None
    tally = Tally()
    status = CLIENT_CLOSED
    try:
        for event in stream.events(keepalive_s):
            if event is None:
                yield ping()
                continue
            payload = parsed(event)
            generated = tally.feed(payload)
            if generated and tally.chars == generated:  # the first text
                first_token(route.model_id)
            meter.check_debt(tally.usage(meter), route, tally.chars)  # a debt past its bound ends the stream
            if checked is None:
                yield outgoing(event, payload, route)
            else:
                yield from checked.frames(event, payload, route)
        if not tally.stopped:
            raise UpstreamStreamBroken("Upstream closed the stream before message_stop.")
        status = 200
        meter.finish(tally.usage(meter), status, route, finish_reason(tally.stop_reason))
    except GatewayError as exc:
        status = exc.status
        meter.finish(tally.usage(meter), status, route, "error")
        yield exc.sent if isinstance(exc, ProviderErrorEvent) else error_event(exc)
    except Exception:
        status = 500
        raise
    finally:
        stream.close()
        if not meter.finished:  # a client that left
            with own_connection():
                meter.finish(tally.usage(meter), status, route, finish_reason(tally.stop_reason))


def parsed(event: sse.SseEvent) -> dict[str, Any]:
    """One event's JSON object; the provider's `error` event or malformed data raises UpstreamStreamBroken."""
    try:
        payload = json.loads(event.data)
    except ValueError:
        raise UpstreamStreamBroken("Upstream sent a malformed stream event.") from None
    if not isinstance(payload, dict):
        raise UpstreamStreamBroken("Upstream sent a stream event that is not a JSON object.")
    if event.event == "error" or payload.get("type") == "error":
        raise ProviderErrorEvent(f"Upstream failed mid-stream: {error_message(payload.get('error'))}",
                                 sse.encode(event.data, event="error"))
    return payload


def outgoing(event: sse.SseEvent, payload: dict[str, Any], route: Route) -> bytes:
    """The event as the client gets it: as sent, `message_start` with the public model id."""
    if payload.get("type") != "message_start" or not isinstance(payload.get("message"), dict):
        return sse.encode(event.data, event=event.event)
    payload["message"]["model"] = route.model_id
    return sse.encode(payload, event=event.event)
