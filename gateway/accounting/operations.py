"""What a request asks of the accounting writer, and what it answers: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.accounting.ratelimit import WindowAsk
from gateway.accounting.window_stores import WindowCounts


@dataclass(frozen=True, slots=True)
class Admission:
    """Admit one request: its rate-limit window (when counted in the database), then its hold (balance, budgets)."""

    account_id: int
    key_id: int
    spend_limit: int | None
    amount: int  # micro-credits to hold; 0 holds nothing
    request_id: str
    ttl_s: int
    ask: WindowAsk | None = None
    model: str | None = None  # the public model asked for (its budgets count the hold)
    tags: tuple[str, ...] = ()  # the request's tags (their budgets count the hold)
    limit_reset: str | None = None  # the period of `spend_limit` (gateway.accounting.budgets); None: lifetime


@dataclass(frozen=True, slots=True)
class Admitted:
    """The answer to an Admission; `refusal` (402) is only set when the rate limit passed."""

    reservation_id: int | None = None
    counts: WindowCounts | None = None  # the window after counting (None: not counted in the database)
    rate_limited: bool = False
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class Extension:
    """Grow an open hold by `amount` (a further tool-loop turn); answers a refusal or None."""

    account_id: int
    key_id: int
    spend_limit: int | None
    reservation_id: int
    amount: int
    limit_reset: str | None = None  # the period of `spend_limit`; the hold's model and tags come from its row


@dataclass(frozen=True, slots=True)
class UsageRow:
    """The usage row a settlement writes (its cost is what was charged), with its generation stats."""

    request_id: str
    endpoint: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    status: int
    latency_ms: int
    generation_id: str | None = None  # the answer's `id` (GET /api/v1/generation); None for refusals
    provider: str | None = None
    ttft_ms: int | None = None  # streams only: milliseconds to the first generated token
    finish_reason: str | None = None
    streamed: bool = False
    cancelled: bool = False  # the client disconnected before the answer finished
    cached_tokens: int = 0  # of prompt_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # of prompt_tokens: written to it
    reasoning_tokens: int = 0  # of completion_tokens
    deployment: str | None = None  # the deployment that answered (gateway.upstream.routing.Deployment.name)
    attempts: int = 0  # upstream attempts the request made, retries included (0: none was made)
    cache_hit: bool = False  # answered from the response cache
    end_user: str | None = None
    tags: tuple[str, ...] = ()
    guardrails: str | None = None  # JSON [{"name", "action", "stage"}] of the guardrails that acted (no matched text)
    unit: str | None = None  # what `units` counts on a media endpoint (gateway.accounting.money's units)
    units: float | None = None  # the images, audio seconds, characters, search units or requests it was priced on
    batch: bool = False  # a line of a batch (gateway.batches), charged [batches] batch_price_fraction of the price


@dataclass(frozen=True, slots=True)
class Settlement:
    """Close a hold, charge the full cost, write the usage row and add tokens: answers the charge."""

    account_id: int
    key_id: int | None
    reservation_id: int | None
    cost: int
    request_id: str
    usage: UsageRow | None = None
    tokens: int = 0  # added to the key's window `token_window` when windows are in the database
    token_window: int | None = None


Operation = Admission | Extension | Settlement
