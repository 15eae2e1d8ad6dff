"""One request's accounting: admission (rate limit + hold, one wait) and one settlement with its usage row.

How a request writes its usage row (the one API for it; an endpoint adds nothing else):
- `Meter.admit(...)` admits it and names its generation (`meter.generation_id`, the answer's `id`
  and `X-Generation-Id`); then exactly one `meter.finish(usage, status, route, finish_reason=...)`
  settles it and writes the row, durable on return (`closed_on_failure()` finishes on errors).
- `refusals_recorded(...)` around routing and admission writes the row of a request refused
  there (402, 404 unknown model, 429): cost 0, queued to the writer without waiting for it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting.keys import Caller
from gateway.accounting.money import Price
from gateway.accounting.operations import Admission, Extension, Settlement, UsageRow
from gateway.accounting.output_cap import choices, output_cap
from gateway.accounting.ratelimit import RateLimiter
from gateway.accounting.tokens import estimate_prompt_tokens, estimate_text_tokens, hold_prompt_tokens
from gateway.accounting.usage import Usage
from gateway.accounting.writer import AccountingWriter, writer
from gateway.config import ModelSettings, Settings
from gateway.errors import CLIENT_CLOSED, GatewayError, InsufficientBalance, ModelNotFound, RateLimited
from gateway.ids import new_id
from gateway.observability.record import current, request_settled
from gateway.upstream.model_defaults import with_model_defaults
from gateway.upstream.routing import Route

log = logging.getLogger(__name__)
INTERNAL_ERROR = 500
REFUSALS = (InsufficientBalance, ModelNotFound, RateLimited)  # refused before any work: a row with cost 0
MODEL_COLUMN_LENGTH = 255


def max_output_tokens(body: dict[str, Any], model: ModelSettings, endpoint: str) -> int:
    """The output a request may produce: its cap (see gateway.accounting.output_cap) times `n`."""
    return output_cap(body, model, endpoint) * choices(body)


def hold_amount(body: dict[str, Any], routes: list[Route], endpoint: str) -> int:
    """The worst case over the routes: the prompt's upper bound (with the model's system prompt) and the
    output cap at each route's prices."""
    worst = 0
    for route in routes:
        price = Price.of(route.settings)
        if price.free:
            continue
        prompt = hold_prompt_tokens(with_model_defaults(body, route.settings))
        worst = max(worst, price.cost(Usage(prompt, max_output_tokens(body, route.settings, endpoint))))
    return worst


@dataclass
class Meter:
    """Holds the reservation of a request in flight and writes its outcome exactly once."""

    caller: Caller
    request_id: str
    endpoint: str
    model: str
    prompt_estimate: int
    reservation_id: int | None = None
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    generation_id: str = field(default_factory=lambda: new_id("gen"))

    limiter: RateLimiter | None = None
    route_settings: ModelSettings | None = None
    rate_limit_headers: dict[str, str] = field(default_factory=dict)  # sent with the answer
    writer: AccountingWriter | None = None

    @classmethod
    def admit(
        cls, caller: Caller, routes: list[Route], body: dict[str, Any], endpoint: str, request_id: str,
        settings: Settings, limiter: RateLimiter, generation_id: str | None = None,
    ) -> Meter:
        """Check the key's rate limits (429) and hold the worst case over the routes (402), in one transaction.

        `generation_id` names the answer when it has an id of its own (a response's); else one is made.
        """
        accounts = writer()
        prompt = estimate_prompt_tokens(with_model_defaults(body, routes[0].settings))
        meter = cls(caller, request_id, endpoint, routes[0].model_id, prompt, limiter=limiter,
                    route_settings=routes[0].settings, writer=accounts)
        if generation_id is not None:
            meter.generation_id = generation_id
        meter.reservation_id, meter.rate_limit_headers = admission(
            caller, limiter, accounts, prompt + max_output_tokens(body, routes[0].settings, endpoint),
            hold_amount(body, routes, endpoint), request_id, settings.billing.reservation_ttl_s)
        return meter

    def estimate(self, completion_text: str) -> Usage:
        """Usage when the upstream reported none (see gateway.accounting.tokens)."""
        return Usage(self.prompt_estimate, estimate_text_tokens(completion_text), estimated=True)

    def extend(self, prompt_tokens: int) -> None:
        """Hold the input of one more model turn (tool loops), or raise 402."""
        if self.reservation_id is None:
            return
        amount = Price.of(self.route_settings).cost(Usage(prompt_tokens, 0))
        key = self.caller.key
        refusal = self.writer.call(Extension(key.account_id, key.id, key.spend_limit, self.reservation_id, amount))
        if refusal:
            raise InsufficientBalance(refusal)

    @staticmethod
    def cost_of(usage: Usage, route: Route) -> int:
        """Micro-credits this usage costs on this route."""
        return Price.of(route.settings).cost(usage)

    @contextlib.contextmanager
    def closed_on_failure(self) -> Iterator[None]:
        """Close the meter (nothing charged) when the block raises anything, then re-raise."""
        try:
            yield
        except BaseException as exc:
            self.finish(Usage(), exc.status if isinstance(exc, GatewayError) else INTERNAL_ERROR, None)
            raise

    def finish(self, usage: Usage, status: int, route: Route | None, finish_reason: str | None = None) -> int:
        """Settle (charge the full cost, release the hold) with the usage row and tokens; durable on return.

        Whether the answer streamed and when its first token came are read from the request's
        record (gateway.observability.record), which the stream relays already keep; the row's
        time to first token counts from admission, as its latency does.
        """
        if self.finished:
            return 0
        self.finished = True
        key_id = self.caller.key.id
        in_database = self.limiter is not None and self.limiter.counts_in_database
        record = current()
        streamed = record is not None and record.streamed
        ttft_ms = None
        if streamed and record.first_token_s is not None:
            ttft_ms = max(int((record.started + record.first_token_s - self.started) * 1000), 0)
        row = UsageRow(self.request_id, self.endpoint, route.model_id if route else self.model, usage.input_tokens,
                       usage.output_tokens, usage.estimated, status, milliseconds_since(self.started),
                       self.generation_id, route.provider if route else None, ttft_ms, finish_reason, streamed,
                       status == CLIENT_CLOSED)
        charged = self.writer.call(Settlement(
            self.caller.account.id, key_id, self.reservation_id, self.cost_of(usage, route) if route else 0,
            self.request_id, row, usage.total_tokens if in_database else 0,
            self.limiter.current_window() if in_database else None,
        ))
        if self.limiter is not None and not in_database and usage.total_tokens:
            self.limiter.record_tokens(key_id, usage.total_tokens)
        request_settled(row.model or "", route.provider if route else None, usage.input_tokens, usage.output_tokens, charged)
        return charged


def admission(
    caller: Caller, limiter: RateLimiter, accounts: AccountingWriter, tokens: int, amount: int, request_id: str,
    reservation_ttl_s: int,
) -> tuple[int | None, dict[str, str]]:
    """The key's rate limits for `tokens` (429) and a hold of `amount` (402), in one accounting wait.

    Returns the hold's id (None when nothing was held) and the rate-limit headers for the answer.
    The one admission rule: model requests (Meter.admit) and MCP hub tool calls both come here.
    """
    key = caller.key
    rpm, tpm = limiter.limits_for(key.rpm, key.tpm)
    ask = limiter.ask(key.id, rpm, tpm, tokens)
    headers: dict[str, str] = {}
    if not limiter.counts_in_database:
        decision = limiter.answer(ask)
        decision.raise_if_denied()
        headers, ask = decision.headers, None
    if ask is None and amount <= 0:
        return None, headers
    admitted = accounts.call(Admission(key.account_id, key.id, key.spend_limit, amount, request_id,
                                       reservation_ttl_s, ask))
    if ask is not None:
        decision = ask.decision(not admitted.rate_limited, admitted.counts)
        decision.raise_if_denied()
        headers = decision.headers
    if admitted.refusal:
        raise InsufficientBalance(admitted.refusal)
    return admitted.reservation_id, headers


def milliseconds_since(started: float) -> int:
    """Whole milliseconds since a `time.monotonic()` reading."""
    return int((time.monotonic() - started) * 1000)


@contextlib.contextmanager
def refusals_recorded(caller: Caller, endpoint: str, model: Any, request_id: str, wait: bool = False) -> Iterator[None]:
    """Around routing and admission: a 402, 404 (unknown model) or 429 raised inside writes its usage row.

    The row (cost 0, the refusal's status) goes to the accounting writer without a wait, unless
    `wait`: the refusal is answered at once and the row commits with the writer's next batch.
    """
    started = time.monotonic()
    try:
        yield
    except REFUSALS as refusal:
        row = UsageRow(request_id, endpoint, model[:MODEL_COLUMN_LENGTH] if isinstance(model, str) else None,
                       0, 0, False, refusal.status, milliseconds_since(started))
        try:
            pending = writer().submit(Settlement(caller.account.id, caller.key.id, None, 0, request_id, row))
            if wait:
                pending.wait()
        except GatewayError:  # shutting down: the refusal still goes out; its row is lost
            log.warning("usage row of refused request %s not written", request_id)
        raise
