"""One request's accounting: admission (rate limit + hold, one wait) and one settlement with its usage row.

How a request writes its usage row (the one API for it; an endpoint adds nothing else):
- `Meter.admit(...)` admits it and names its generation (`meter.generation_id`, the answer's `id`
  and `X-Generation-Id`); then exactly one `meter.finish(usage, status, route, finish_reason=...)`
  settles it and writes the row, durable on return (`closed_on_failure()` finishes on errors).
- `refusals_recorded(...)` around routing and admission writes the row of a request refused
  there (402, 404 unknown model, 429, 400 above its tpm, 400 an input a guardrail blocked): cost 0, queued
  to the writer without waiting.
- The row's `guardrails` column lists the guardrails that acted (the request record's, taken at admission).

What the hold covers (the meter never sees a body: it reads `Estimate`s of prepared requests):
admission holds the costliest candidate; `cover_turn` holds each tool-loop turn before it is sent
(turn 1 for what its MCP tools add); `cover_output` grows the hold of a stream held for its
model's typical output; `check_debt` stops a run whose cost passes its hold and the debt bound.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.accounting.keys import Caller
from gateway.accounting.money import Price, to_credits
from gateway.accounting.operations import Admission, Extension, Settlement, UsageRow
from gateway.accounting.ratelimit import RateLimiter
from gateway.accounting.tokens import estimate_text_tokens, tokens_of_length
from gateway.accounting.usage import Usage
from gateway.accounting.writer import AccountingWriter, writer
from gateway.config import ModelSettings, Settings
from gateway.errors import (
    CLIENT_CLOSED,
    ContentPolicyViolation,
    DebtBoundReached,
    GatewayError,
    InsufficientBalance,
    ModelNotFound,
    RateLimited,
    RequestAboveTokenLimit,
)
from gateway.ids import new_id
from gateway.observability import metrics
from gateway.observability.wsgi_middleware import current, request_settled

log = logging.getLogger(__name__)
INTERNAL_ERROR = 500
# a row with cost 0 (a guardrail's block of the input: the request was never sent)
REFUSALS = (InsufficientBalance, ModelNotFound, RateLimited, RequestAboveTokenLimit, ContentPolicyViolation)
MODEL_COLUMN_LENGTH = 255


class Guarded(Protocol):
    """What the meter reads of a request's guardrails (gateway.guardrails.Guardrails): the ones that acted."""

    fired: list[Any]  # each with `name`, `action` and `stage` (never the matched text)


def fired_column(guardrails: Guarded | None) -> str | None:
    """The usage row's `guardrails`: JSON [{"name", "action", "stage"}] of those that acted (None: none did).

    Called once per row as it is written, which counts each in `gateway_guardrail_actions_total`.
    """
    if guardrails is None or not guardrails.fired:
        return None
    for fired in guardrails.fired:
        metrics.guardrail_acted(fired.name, fired.action, fired.stage)
    return json.dumps([{"name": fired.name, "action": fired.action, "stage": fired.stage}
                       for fired in guardrails.fired], separators=(",", ":"))


class Served(Protocol):
    """Where a request was served (gateway.upstream.routing.Route): all the meter reads of it."""

    model_id: str
    provider: str
    settings: ModelSettings
    deployment: Any  # its `name` is the deployment that answered
    attempts: int


@dataclass(frozen=True)
class Estimate:
    """What one prepared upstream request may cost (gateway.upstream.prepared): the meter's only input."""

    model_id: str
    price: Price
    input_tokens: int  # usage estimate of the input (rate limits, rows without upstream usage)
    held_input_tokens: int  # the input as a hold assumes it
    output_tokens: int  # the output cap times `n`
    held_output_tokens: int  # the output held at admission: the cap, or a stream's typical output
    unit: str | None = None  # a media request's priced unit (gateway.accounting.money), and how many are held
    held_units: float = 0.0

    @property
    def tokens(self) -> int:
        """What the request counts against the key's tpm at admission."""
        return self.input_tokens + self.output_tokens

    @property
    def hold(self) -> int:
        """Micro-credits held for it: the held input and output at its model's prices (cache writes included)."""
        return self.price.most(self.held_input_tokens, self.held_output_tokens) + self.price.units_cost(
            self.unit, self.held_units)


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
    price: Price | None = None  # the first candidate's, for further turns
    rate_limit_headers: dict[str, str] = field(default_factory=dict)  # sent with the answer
    writer: AccountingWriter | None = None
    held: int = 0  # micro-credits held so far (admission and extensions)
    debt_bound: int = 0  # how far the cost may run past `held` before the run is stopped
    hit_price_fraction: float = 0.0  # of a cached answer's price, charged for a cache hit ([cache])
    held_input_tokens: int = 0  # the input of the next model turn that is already held
    turns_covered: int = 0
    output_held: int = 0  # output tokens held so far; a stream held for its typical output grows it
    output_cap: int = 0  # the output the upstream was told it may produce (times `n`)
    tags: tuple[str, ...] = ()  # the request's tags and end user, taken from its record at admission: a run that
    end_user: str | None = None  # finishes in another thread (a background response) still has them
    guardrails: Guarded | None = None  # the request's guardrails, from its record at admission (the row's column)
    batch_price_fraction: float | None = None  # a batch line's (gateway.batches): its share of the price; row marked

    @classmethod
    def admit(
        cls, caller: Caller, estimates: list[Estimate], endpoint: str, request_id: str,
        settings: Settings, limiter: RateLimiter, generation_id: str | None = None,
        batch_price_fraction: float | None = None,
    ) -> Meter:
        """Check the key's rate limits (429, or 400 for a request above its tpm) and hold the costliest
        candidate (402), in one transaction.

        `estimates` are the prepared requests' (the model, then its fallbacks); `generation_id` names
        the answer when it has an id of its own (a response's); else one is made. A batch line
        (`batch_price_fraction`) holds and is charged that share of the price, and is not counted against
        the key's rpm and tpm (its pace is the batch runner's: a batch never uses up the key's live quota).
        """
        first, accounts = estimates[0], writer()
        meter = cls(caller, request_id, endpoint, first.model_id, first.input_tokens, limiter=limiter,
                    price=first.price, writer=accounts, held_input_tokens=first.held_input_tokens,
                    output_held=first.held_output_tokens, output_cap=first.output_tokens)
        if generation_id is not None:
            meter.generation_id = generation_id
        record = current()
        if record is not None:
            meter.tags, meter.end_user, meter.guardrails = record.tags, record.end_user, record.guardrails
        hold = max(estimate.hold for estimate in estimates)
        if batch_price_fraction is not None:
            meter.batch_price_fraction = batch_price_fraction
            hold = math.ceil(hold * batch_price_fraction)
        meter.reservation_id, meter.rate_limit_headers = admission(
            caller, limiter, accounts, first.tokens, hold, request_id, settings.billing.reservation_ttl_s,
            model=first.model_id, rate_limited=batch_price_fraction is None)
        if batch_price_fraction is not None:
            meter.limiter = None  # a batch line's tokens stay out of the key's live windows too
        meter.held = hold if meter.reservation_id is not None else 0
        meter.debt_bound = math.ceil(meter.held * settings.billing.debt_bound_ratio)
        meter.hit_price_fraction = settings.cache.hit_price_fraction
        return meter

    def estimate(self, completion_text: str) -> Usage:
        """Usage when the upstream reported none (see gateway.accounting.tokens)."""
        return Usage(self.prompt_estimate, estimate_text_tokens(completion_text), estimated=True)

    def cover_turn(self, held_input_tokens: int) -> None:
        """Hold the input of the model turn about to be sent (402 if the balance cannot), before it is sent.

        The admission held the first turn's input as it was known then; a turn that offers more (the
        MCP tools the gateway adds) is held for the difference, and every later turn for its whole input.
        """
        already = self.held_input_tokens if self.turns_covered == 0 else 0
        self.turns_covered += 1
        self.extend(max(0, held_input_tokens - already))

    def extend(self, prompt_tokens: int) -> None:
        """Hold the input of one more model turn (tool loops), or raise 402."""
        if self.reservation_id is None or prompt_tokens <= 0:
            return
        self.hold_more(self.price.cost(Usage(prompt_tokens, 0)))

    def cover_output(self, output_tokens: int, route: Served) -> None:
        """Grow the hold of a stream held for its typical output, by as much again each time its output passes
        what is held (402 when the balance cannot), up to the cap it was sent."""
        step = max(self.output_held, 1)
        while self.reservation_id is not None and self.output_held < min(output_tokens, self.output_cap):
            grown = min(self.output_held + step, self.output_cap)
            self.hold_more(self.cost_of(Usage(0, grown - self.output_held), route))
            self.output_held = grown

    def hold_more(self, amount: int) -> None:
        """Grow the open hold by `amount` micro-credits, or raise 402."""
        key = self.caller.key
        refusal = self.writer.call(Extension(key.account_id, key.id, key.spend_limit, self.reservation_id, amount,
                                             key.limit_reset))
        if refusal:
            raise InsufficientBalance(refusal)
        self.held += amount

    def check_debt(self, usage: Usage | None, route: Served, generated_chars: int = 0) -> None:
        """Stop the run (DebtBoundReached) when what it used costs more than its hold and the debt bound.

        `usage` is what the upstream reported so far; without it, the input's estimate and the
        output's estimate from the characters generated so far.
        """
        if self.reservation_id is None:
            return
        used = usage or Usage(self.prompt_estimate, tokens_of_length(generated_chars), estimated=True)
        self.cover_output(used.output_tokens, route)
        if self.cost_of(used, route) > self.held + self.debt_bound:
            raise DebtBoundReached(
                "This request used more than its hold and the debt it may run into; it was stopped.")

    @staticmethod
    def cost_of(usage: Usage, route: Served) -> int:
        """Micro-credits this usage costs on this route."""
        return Price.of(route.settings).cost(usage)

    def charge_of(self, usage: Usage, route: Served) -> int:
        """Micro-credits this request is charged for this usage: the cost, a batch line's share of it."""
        cost = self.cost_of(usage, route)
        return cost if self.batch_price_fraction is None else round(cost * self.batch_price_fraction)

    @contextlib.contextmanager
    def closed_on_failure(self) -> Iterator[None]:
        """Close the meter (nothing charged) when the block raises anything, then re-raise.

        An upstream failure's row names the deployment last tried and the attempts made (`GatewayError.tried`).
        """
        try:
            yield
        except BaseException as exc:
            failed = isinstance(exc, GatewayError)
            self.finish(Usage(), exc.status if failed else INTERNAL_ERROR, exc.tried if failed else None)
            raise

    def finish(self, usage: Usage, status: int, route: Served | None, finish_reason: str | None = None,
               cache_hit: bool = False) -> int:
        """Settle (charge the full cost, release the hold) with the usage row and tokens; durable on return.

        Whether the answer streamed and when its first token came are read from the request's
        record (gateway.observability.wsgi_middleware), which the stream relays already keep; the row's
        time to first token counts from admission, as its latency does. Its tags and end user are the ones
        the record had at admission. A cache hit (`usage`: the stored answer's) is charged `hit_price_fraction`
        of that usage's price.
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
                       status == CLIENT_CLOSED, usage.cached_tokens, usage.cache_write_tokens, usage.reasoning_tokens,
                       route.deployment.name if route and not cache_hit else None,
                       route.attempts if route and not cache_hit else 0, cache_hit,
                       self.end_user, self.tags, fired_column(self.guardrails), usage.unit,
                       usage.units if usage.unit else None, self.batch_price_fraction is not None)
        cost = self.charge_of(usage, route) if route else 0
        charged = self.writer.call(Settlement(
            self.caller.account.id, key_id, self.reservation_id, round(cost * self.hit_price_fraction) if cache_hit else cost,
            self.request_id, row, usage.total_tokens if in_database else 0,
            self.limiter.current_window() if in_database else None,
        ))
        if self.limiter is not None and not in_database and usage.total_tokens:
            self.limiter.record_tokens(key_id, usage.total_tokens)
        request_settled(row.model or "", route.provider if route else None, usage.input_tokens, usage.output_tokens,
                        to_credits(charged))
        return charged


def admission(
    caller: Caller, limiter: RateLimiter, accounts: AccountingWriter, tokens: int, amount: int, request_id: str,
    reservation_ttl_s: int, model: str | None = None, rate_limited: bool = True,
) -> tuple[int | None, dict[str, str]]:
    """The key's rate limits for `tokens` (429) and a hold of `amount` (402: the balance or a budget), in one
    accounting wait.

    Returns the hold's id (None when nothing was held) and the rate-limit headers for the answer.
    The one admission rule: model requests (Meter.admit) and MCP hub tool calls both come here. The hold
    counts against the budgets of `model` (the public model asked for) and of the request record's tags.
    Without `rate_limited` (batch lines) only the hold is taken.
    """
    key = caller.key
    headers: dict[str, str] = {}
    ask = None
    if rate_limited:
        rpm, tpm = limiter.limits_for(key.rpm, key.tpm)
        check_fits_tpm(tokens, tpm)
        ask = limiter.ask(key.id, rpm, tpm, tokens)
    if ask is not None and not limiter.counts_in_database:
        decision = limiter.answer(ask)
        decision.raise_if_denied()
        headers, ask = decision.headers, None
    if ask is None and amount <= 0:
        return None, headers
    record = current()
    admitted = accounts.call(Admission(key.account_id, key.id, key.spend_limit, amount, request_id,
                                       reservation_ttl_s, ask, model, record.tags if record else (), key.limit_reset))
    if ask is not None:
        decision = ask.decision(not admitted.rate_limited, admitted.counts)
        decision.raise_if_denied()
        headers = decision.headers
    if admitted.refusal:
        raise InsufficientBalance(admitted.refusal)
    return admitted.reservation_id, headers


def check_fits_tpm(tokens: int, tpm: int) -> None:
    """400 for a request that alone needs more tokens than its key's whole tpm: no retry could admit it."""
    if tpm >= 1 and tokens > tpm:
        raise RequestAboveTokenLimit(
            f"This request needs about {tokens} tokens (its input and max output), more than this key's limit "
            f"of {tpm} tokens per min (TPM); retrying cannot help. Lower max_tokens or the input, or ask for a "
            "higher tpm.", param="max_tokens")


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
        record = current()  # a refusal is attributed as an answer is (its tags and end user)
        row = UsageRow(request_id, endpoint, model[:MODEL_COLUMN_LENGTH] if isinstance(model, str) else None,
                       0, 0, False, refusal.status, milliseconds_since(started),
                       end_user=record.end_user if record else None, tags=record.tags if record else (),
                       guardrails=fired_column(record.guardrails) if record else None)
        try:
            pending = writer().submit(Settlement(caller.account.id, caller.key.id, None, 0, request_id, row))
            if wait:
                pending.wait()
        except GatewayError:  # shutting down: the refusal still goes out; its row is lost
            log.warning("usage row of refused request %s not written", request_id)
        raise
