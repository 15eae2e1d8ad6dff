"""One request's accounting: reserve credits at admission, settle once with a usage row."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting import credits
from gateway.accounting.keys import Caller
from gateway.accounting.output_cap import choices, output_cap
from gateway.accounting.ratelimit import RateLimiter
from gateway.accounting.tokens import estimate_prompt_tokens, estimate_text_tokens
from gateway.config import ModelSettings, Settings
from gateway.db import write_transaction
from gateway.errors import GatewayError
from gateway.loop.events import Usage
from gateway.tables import UsageEntry
from gateway.upstream.routing import Route

INTERNAL_ERROR = 500


def max_output_tokens(body: dict[str, Any], model: ModelSettings, endpoint: str) -> int:
    """The output a request may produce: its cap (see gateway.accounting.output_cap) times `n`."""
    return output_cap(body, model, endpoint) * choices(body)


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

    limiter: RateLimiter | None = None
    route_settings: ModelSettings | None = None
    rate_limit_headers: dict[str, str] = field(default_factory=dict)  # sent with the answer

    @classmethod
    def admit(
        cls, caller: Caller, routes: list[Route], body: dict[str, Any], endpoint: str, request_id: str,
        settings: Settings, limiter: RateLimiter,
    ) -> Meter:
        """Check the key's rate limits (429), then reserve the worst case over the routes (402)."""
        prompt = estimate_prompt_tokens(body)
        key = caller.key
        rpm, tpm = limiter.limits_for(key.rpm, key.tpm)
        decision = limiter.admit(key.id, rpm, tpm, prompt + max_output_tokens(body, routes[0].settings, endpoint))
        decision.raise_if_denied()
        worst = max(
            credits.Price.of(route.settings).cost(
                Usage(prompt, max_output_tokens(body, route.settings, endpoint))
            )
            for route in routes
        )
        meter = cls(caller, request_id, endpoint, routes[0].model_id, prompt, limiter=limiter,
                    route_settings=routes[0].settings, rate_limit_headers=decision.headers)
        meter.reservation_id = credits.reserve(
            caller.key, worst, request_id, settings.billing.reservation_ttl_s
        )
        return meter

    def estimate(self, completion_text: str) -> Usage:
        """Usage when the upstream reported none (see gateway.accounting.tokens)."""
        return Usage(self.prompt_estimate, estimate_text_tokens(completion_text), estimated=True)

    def extend(self, prompt_tokens: int) -> None:
        """Reserve the input of one more model turn (tool loops), or raise 402."""
        if self.reservation_id is not None:
            amount = credits.Price.of(self.route_settings).cost(Usage(prompt_tokens, 0))
            credits.extend(self.caller.key, self.reservation_id, amount)

    @staticmethod
    def cost_of(usage: Usage, route: Route) -> int:
        """Micro-credits this usage costs on this route."""
        return credits.Price.of(route.settings).cost(usage)

    @contextlib.contextmanager
    def closed_on_failure(self) -> Iterator[None]:
        """Close the meter (nothing charged) when the block raises anything, then re-raise."""
        try:
            yield
        except BaseException as exc:
            self.finish(Usage(), exc.status if isinstance(exc, GatewayError) else INTERNAL_ERROR, None)
            raise

    def finish(self, usage: Usage, status: int, route: Route | None) -> int:
        """Settle (charge actual cost, release the rest) and write the usage row, atomically."""
        if self.finished:
            return 0
        self.finished = True
        cost = self.cost_of(usage, route) if route is not None else 0
        account_id, key_id = self.caller.account.id, self.caller.key.id
        with write_transaction():
            charged = credits.settle(account_id, key_id, self.reservation_id, cost, self.request_id)
            UsageEntry.create(
                request_id=self.request_id, api_key=key_id, account=account_id,
                endpoint=self.endpoint, model=route.model_id if route else self.model,
                prompt_tokens=usage.input_tokens, completion_tokens=usage.output_tokens,
                estimated=usage.estimated, status=status, cost=charged,
                latency_ms=int((time.monotonic() - self.started) * 1000),
            )
        if self.limiter is not None and usage.total_tokens:
            self.limiter.record_tokens(key_id, usage.total_tokens)
        return charged
