"""The gateway's one exception tree, rendered in each base path's dialect.

`/v1` (and the `/api/v1/openai/...` profile routes) answer OpenAI's
`{"error": {"message", "type", "param", "code"}}`; `/api/v1` answers OpenRouter's, whose `code`
is the HTTP status as an integer, with `metadata` where OpenRouter has it, keeping `type` and
`param` so OpenAI SDKs pointed there still classify errors. Anthropic's Messages routes
(`/v1/messages`, `/api/v1/messages`) answer `{"type": "error", "error": {"type", "message"}}`, the
type chosen by status, and a 503 there is Anthropic's 529 `overloaded_error`.

    GatewayError (500 api_error)
    ├── InvalidRequest (400 invalid_request_error)
    │   ├── MalformedJson (400)
    │   ├── UnknownParameter (400 unknown_parameter)
    │   ├── NotFound (404)
    │   │   ├── ModelNotFound (404 model_not_found)
    │   │   └── ResponseNotFound (404 previous_response_not_found / not_found)
    │   ├── MethodNotAllowed (405)
    │   ├── Conflict (409)
    │   ├── BodyTooLarge (413)
    │   ├── RequestAboveTokenLimit (400 request_above_tpm_limit: no retry can fix it)
    │   └── ContentPolicyViolation (400 content_policy_violation: a guardrail blocked a text)
    ├── BadInput (422 bad_input)
    ├── AuthenticationFailed (401 authentication_error / invalid_api_key)
    ├── PermissionDenied (403 permission_error)
    ├── InsufficientBalance (402 insufficient_balance)
    │   └── DebtBoundReached (402 debt_bound_reached: a run stopped past its hold and debt bound)
    ├── RateLimited (429 rate_limit_exceeded, Retry-After)
    ├── UpstreamError (502 upstream_error)
    │   ├── UpstreamUnavailable (502 upstream_unavailable)
    │   ├── UpstreamTimeout (504 upstream_timeout)
    │   ├── UpstreamStreamBroken (502 upstream_error: malformed or truncated stream)
    │   └── UpstreamRejected (upstream's own 4xx status, passed through)
    └── ServiceUnavailable (503 service_unavailable)
        └── UpstreamOverloaded (503 upstream_overloaded; also an UpstreamError, so fallbacks move on)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import peewee
from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # the status a usage row records when the client went away (nginx's)
OPENAI, OPENROUTER, MCP, ANTHROPIC = "openai", "openrouter", "mcp", "anthropic"  # error dialects, by base path
MCP_PATH = "/mcp"  # the MCP hub: errors are JSON-RPC error objects that MCP clients show
JSONRPC_UNAUTHORIZED, JSONRPC_REFUSED = -32001, -32000  # server-defined JSON-RPC codes of the hub's refusals
OPENROUTER_PATH, PROFILE_PATH = "/api/v1/", "/api/v1/openai/"
MESSAGES_PATHS = ("/v1/messages", "/api/v1/messages")  # Anthropic's Messages API and count_tokens under it
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                   403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                   429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}
DIALECT_STATUSES = {ANTHROPIC: {503: 529}}  # a status a dialect spells its own way (Anthropic's overloaded)


class GatewayError(Exception):
    """Base of every error a client can see; subclasses set status, type and code."""

    status = 500
    type = "api_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.metadata = metadata  # OpenRouter's `error.metadata` (limit_source, provider_name, raw)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})
        # the route of the last upstream attempt, with the attempts made, when the router gave up (the usage
        # row of a failed request names them: gateway.upstream.router, gateway.accounting.meter)
        self.tried: Any = None

    def body(self, dialect: str = OPENAI) -> dict[str, Any]:
        """The error body in a base path's dialect: OpenAI's, or OpenRouter's (integer `code`)."""
        return render_error(self, dialect)


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class MalformedJson(InvalidRequest):
    code = "invalid_json"


class UnknownParameter(InvalidRequest):
    code = "unknown_parameter"


class NotFound(InvalidRequest):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class ResponseNotFound(NotFound):
    code = "not_found"


class MethodNotAllowed(InvalidRequest):
    status = 405
    code = "method_not_allowed"


class Conflict(InvalidRequest):
    status = 409
    code = "conflict"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class RequestAboveTokenLimit(InvalidRequest):
    code = "request_above_tpm_limit"


class ContentPolicyViolation(InvalidRequest):
    """A guardrail blocked a text: the message names the guardrail and the stage, never the matched text."""

    code = "content_policy_violation"

    def __init__(self, guardrail: str, stage: str, *, on_tool_block: str = "error") -> None:
        super().__init__(f"Blocked by guardrail {guardrail!r} ({stage}).")
        self.guardrail = guardrail
        self.stage = stage
        self.on_tool_block = on_tool_block  # tool stages: "error" (the tool's error output) or "fail" (the run)


class BadInput(GatewayError):
    status = 422
    type = "bad_input"
    code = "bad_input"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class InsufficientBalance(GatewayError):
    status = 402
    type = "insufficient_balance"
    code = "insufficient_balance"


class DebtBoundReached(InsufficientBalance):
    code = "debt_bound_reached"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamStreamBroken(UpstreamError):
    """An upstream stream that sent an error event, a malformed chunk, or ended before finishing."""


class UpstreamRejected(UpstreamError):
    """An upstream 4xx, passed through with its status and message."""

    type = "invalid_request_error"
    code = "upstream_rejected"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class UpstreamOverloaded(ServiceUnavailable, UpstreamError):
    """A provider that said it is overloaded (Anthropic's 529, Google's 503): a 503 with Retry-After; fallbacks move on."""

    code = "upstream_overloaded"


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Build `{"error": {"message", "type", "param", "code"}}`."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def openrouter_error_body(
    message: str, status: int, type_: str, param: str | None = None, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """OpenRouter's `{"error": {"code": <HTTP status>, "message", "metadata"}}`, plus OpenAI's `type`/`param`."""
    error: dict[str, Any] = {"code": status, "message": message, "type": type_, "param": param}
    if metadata:
        error["metadata"] = metadata
    return {"error": error}


class ErrorFields(Protocol):
    """What a dialect renders: a GatewayError, or a run's Failure (gateway.loop.failure)."""

    message: str
    status: int
    type: str
    code: str | None
    param: str | None
    metadata: Any


def openai_error(error: ErrorFields) -> dict[str, Any]:
    """OpenAI's error body."""
    return error_body(error.message, error.type, error.param, error.code)


def openrouter_error(error: ErrorFields) -> dict[str, Any]:
    """OpenRouter's error body."""
    return openrouter_error_body(error.message, error.status, error.type, error.param, error.metadata)


def mcp_error(error: ErrorFields) -> dict[str, Any]:
    """A JSON-RPC error object (MCP clients show its message); the tree's type, code and status in `data`."""
    code = JSONRPC_UNAUTHORIZED if error.status == 401 else JSONRPC_REFUSED
    data = {"type": error.type, "code": error.code, "param": error.param, "status": error.status}
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": error.message, "data": data}}


def anthropic_error(error: ErrorFields) -> dict[str, Any]:
    """Anthropic's error body: its type by status (other 4xx invalid_request_error, other 5xx api_error)."""
    fallback = "invalid_request_error" if error.status < 500 else "api_error"
    return {"type": "error", "error": {"type": ANTHROPIC_TYPES.get(error.status, fallback), "message": error.message}}


ERROR_BODIES: dict[str, Callable[[ErrorFields], dict[str, Any]]] = {
    OPENAI: openai_error, OPENROUTER: openrouter_error, MCP: mcp_error, ANTHROPIC: anthropic_error}
# a new dialect is one more function here, which every renderer then reaches through render_error


def render_error(error: ErrorFields, dialect: str = OPENAI) -> dict[str, Any]:
    """The error body of an error (or a run's failure) in a dialect."""
    return ERROR_BODIES[dialect](error)


def status_in(error: ErrorFields, dialect: str) -> int:
    """The HTTP status of an error in a dialect (Anthropic's 529 for a 503)."""
    return DIALECT_STATUSES.get(dialect, {}).get(error.status, error.status)


def dialect_of(path: str) -> str:
    """A path's error dialect: JSON-RPC on the MCP hub, Anthropic's on Messages, OpenRouter's under /api/v1, else OpenAI's."""
    if path == MCP_PATH or path.startswith(MCP_PATH + "/"):
        return MCP
    if any(path == prefix or path.startswith(prefix + "/") for prefix in MESSAGES_PATHS):
        return ANTHROPIC
    if path.startswith(OPENROUTER_PATH) and not path.startswith(PROFILE_PATH):
        return OPENROUTER
    return OPENAI


def http_error(exc: HTTPException) -> GatewayError:
    """Map a werkzeug HTTP exception (routing, 405, 413, bad JSON) into the tree."""
    if exc.code == 404:
        return NotFound(f"Unknown route: {request.method} {request.path}", code="unknown_route")
    if exc.code == 405:
        allowed = dict(exc.get_headers()).get("Allow")  # RFC 9110: a 405 names the methods that work
        return MethodNotAllowed(f"Method {request.method} is not allowed on {request.path}.",
                                headers={"Allow": allowed} if allowed else None)
    if exc.code == 413:
        return BodyTooLarge("The request body is too large.")
    if exc.code == 400:
        return InvalidRequest("The request could not be parsed.")
    error = GatewayError(exc.description or exc.name, status=exc.code or 500, code=None)
    error.type = "invalid_request_error" if (exc.code or 500) < 500 else "api_error"
    return error


def init_app(app: Flask) -> None:
    """Register handlers so every error leaves as one JSON body in its base path's dialect."""

    def respond(error: GatewayError):
        dialect = dialect_of(request.path)
        response = jsonify(error.body(dialect))
        response.status_code = status_in(error, dialect)
        response.headers.update(error.headers)
        return response

    @app.errorhandler(GatewayError)
    def _gateway_error(exc: GatewayError):
        return respond(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return respond(http_error(exc))

    @app.errorhandler(peewee.OperationalError)
    @app.errorhandler(peewee.InterfaceError)
    def _database_unavailable(exc: peewee.DatabaseError):
        # the database is down or unreachable: the client may retry, so 503, not a 500
        log.warning("database unavailable in request %s: %s", g.get("request_id", "-"), type(exc).__name__)
        return respond(ServiceUnavailable("The database is unavailable; retry shortly."))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        request_id = g.get("request_id", "-")
        log.exception("unhandled error in request %s", request_id)
        return respond(GatewayError(f"Internal server error (request id {request_id})."))

