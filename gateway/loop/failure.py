"""The error a run ended with: one value, built from the error tree, that every renderer shows.

Chat JSON raises it as its HTTP error, chat SSE frames it as its dialect's error event, Responses
JSON raises it, Responses SSE and WebSocket send it as the `error` event and the failed response's
`error`, and background runs store it: the status, `type` and `code` are decided once, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import OPENAI, GatewayError, render_error

SERVER_ERROR = "server_error"


@dataclass(frozen=True)
class Failure:
    """Why a run failed: the fields of the tree's error it ended with (status, type, code, message, ...)."""

    message: str
    status: int = GatewayError.status
    type: str = GatewayError.type
    code: str | None = SERVER_ERROR
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # a 429's Retry-After
    metadata: Mapping[str, Any] | None = None  # OpenRouter's `error.metadata`

    @classmethod
    def of(cls, error: GatewayError) -> Failure:
        """The failure of a run that ended with this error."""
        return cls(error.message, error.status, error.type, error.code, error.param, dict(error.headers),
                   dict(error.metadata) if error.metadata else None)

    def error(self) -> GatewayError:
        """The failure as the tree's error, to raise as an HTTP answer: the same status, type, code and headers."""
        error = GatewayError(self.message, param=self.param, status=self.status, headers=dict(self.headers),
                             metadata=dict(self.metadata) if self.metadata else None)
        error.type, error.code = self.type, self.code
        return error

    def body(self, dialect: str = OPENAI) -> dict[str, Any]:
        """The error body in a base path's dialect (gateway.errors.ERROR_BODIES)."""
        return render_error(self, dialect)

    def summary(self) -> dict[str, Any]:
        """A failed response's `error`: `type` (strict clients require it), `code` and `message`."""
        return {"type": self.type, "code": self.code or SERVER_ERROR, "message": self.message}
