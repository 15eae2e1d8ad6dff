"""One hub tools/call against the key's limits and balance, and its usage row (the hub's one accounting call site).

A call counts one request in the key's rpm window (and needs one token of room in its tpm
window, as every request does). A tool with a price (`[mcpServers.X] tool_prices`) is held
before the call and charged once it succeeds; a failed call is free. The usage row has endpoint
`mcp`, model `server/tool`, no tokens, the latency, status 200 (ok), 502 (the tool failed or
timed out), 499 (cancelled before it ended), or 429 / 402 when refused (cost 0), and cost = what was charged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.accounting.keys import Caller
from gateway.accounting.meter import admission, fired_column, milliseconds_since, refusals_recorded
from gateway.accounting.money import to_credits
from gateway.accounting.operations import Settlement, UsageRow
from gateway.accounting.ratelimit import RateLimiter
from gateway.accounting.writer import AccountingWriter
from gateway.observability.wsgi_middleware import current, request_settled

ENDPOINT = "mcp"
OK, TOOL_FAILED = 200, 502


@dataclass
class ToolMeter:
    """Holds one admitted tool call and writes its usage row exactly once."""

    caller: Caller
    writer: AccountingWriter
    request_id: str
    model: str  # "server/tool"
    price: int  # micro-credits per successful call
    reservation_id: int | None = None
    started: float = field(default_factory=time.monotonic)
    finished: bool = False

    @classmethod
    def admit(
        cls, caller: Caller, writer: AccountingWriter, limiter: RateLimiter, request_id: str, model: str,
        price: int, reservation_ttl_s: int,
    ) -> ToolMeter:
        """Count the call in the key's rpm window (429) and hold its price (402), in one accounting wait.

        A refusal also writes its usage row (cost 0) before it is answered.
        """
        meter = cls(caller, writer, request_id, model, price)
        with refusals_recorded(caller, ENDPOINT, model, request_id, wait=True):
            meter.reservation_id, _ = admission(caller, limiter, writer, 0, price, request_id, reservation_ttl_s)
        return meter

    def finish(self, status: int) -> int:
        """Settle with the call's status: charge the price of a successful call (nothing otherwise), write the row."""
        if self.finished:
            return 0
        self.finished = True
        record = current()  # the request's (the call settles in a thread with its context)
        row = UsageRow(self.request_id, ENDPOINT, self.model, 0, 0, False, status, milliseconds_since(self.started),
                       guardrails=fired_column(record.guardrails) if record is not None else None)
        charged = self.writer.call(Settlement(self.caller.account.id, self.caller.key.id, self.reservation_id,
                                              self.price if status == OK else 0, self.request_id, row))
        request_settled(self.model, None, 0, 0, to_credits(charged))
        return charged

