"""What one request did, as the access log, the metrics and the traces report it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    """What one request did, as the access log and the metrics report it."""

    method: str
    path: str
    remote_addr: str | None
    user_agent: str
    started: float = field(default_factory=time.monotonic)
    wall_time: float = field(default_factory=time.time)
    request_id: str = ""
    route: str = "unmatched"
    status: int = 0
    streamed: bool = False
    account_id: int | None = None
    key_id: int | None = None
    model: str | None = None
    provider: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    first_byte_s: float | None = None
    first_token_s: float | None = None
    duration_s: float = 0.0
    fallbacks: list[str] = field(default_factory=list)
    tags: tuple[str, ...] = ()  # the request's attribution tags (gateway.accounting.attribution), on its usage row
    end_user: str | None = None  # the end user it names (OpenAI's `user`, Anthropic's `metadata.user_id`)
    cache: str | None = None  # "HIT" or "MISS" when the response cache was asked
    guardrails: Any = None  # the request's gateway.guardrails.Guardrails, built once by its face (None: not yet)
    span: Any = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started
