"""The hub's routes: /mcp (every server the key may use) and /mcp/{scope}/{profile}.

The view authenticates the key: a refusal is a 401 whose body is a JSON-RPC error MCP clients show
(gateway.errors' `mcp` dialect) and whose `WWW-Authenticate` names no protected-resource metadata:
API keys are the only way in, so nothing sends an OAuth client on a discovery that cannot succeed.
It then decides which servers the caller may use, and hands the request to the SDK's transport on the
bridge loop (gateway.mcp_hub.asgi). Only POST carries MCP messages: the hub is stateless, so
there is no GET event stream and no session to DELETE (405, as the transport spec allows).
"""

from __future__ import annotations

import contextvars

from flask import Blueprint, Flask, Response, current_app, request

from gateway import services
from gateway.accounting import writer as accounting_writer
from gateway.accounting.keys import Caller, current_caller, presented_key
from gateway.errors import AuthenticationFailed, MethodNotAllowed
from gateway.mcp.access import hub_servers, profile_for, usable
from gateway.mcp_hub import asgi, call_slots, guarded
from gateway.mcp_hub.server import SCOPE_KEY, HubRequest, HubServer
from gateway.serving.body import parse_body
from gateway.serving.http_conventions import STREAM_HEADERS, request_id

EXTENSION = "gateway.mcp_hub"
HUB_REALM = "mcp"
KEY_HINT = "Send a gateway API key: Authorization: Bearer KEY, or X-API-Key: KEY (no OAuth)."
ANSWER_GRACE_S = 10.0  # beyond the tool timeout, for admission and settlement
bp = Blueprint("mcp_hub", __name__)


@bp.route("/mcp", methods=["GET", "POST", "DELETE"])
def hub() -> Response:
    """Every tool of the built-in servers of the profiles the key's scope may use."""
    caller = authenticate()
    settings = services.settings()
    return serve(caller, hub_servers(settings, caller.account.scope, caller.mcp_allow_list))


@bp.route("/mcp/<scope>/<profile>", methods=["GET", "POST", "DELETE"])
def profile_hub(scope: str, profile: str) -> Response:
    """Exactly one profile's servers (404 `profile_not_found` as on the chat profile routes)."""
    caller = authenticate()
    settings = services.settings()
    labels = profile_for(settings, f"{scope}/{profile}", caller.account.scope).mcp_servers
    return serve(caller, usable(settings, labels, caller.account.scope, caller.mcp_allow_list))


def authenticate() -> Caller:
    """The caller's key, or 401 with an RFC 6750 challenge that names what to send instead of OAuth."""
    try:
        return current_caller()
    except AuthenticationFailed as exc:
        challenge = f'Bearer realm="{HUB_REALM}"'
        if presented_key(request.headers):
            challenge += ', error="invalid_token"'
        exc.headers["WWW-Authenticate"] = challenge + f', error_description="{KEY_HINT}"'
        raise


def serve(caller: Caller, labels: list[str]) -> Response:
    """Hand an MCP POST to the SDK's transport on the bridge loop, for a caller limited to `labels`."""
    if request.method != "POST":
        raise MethodNotAllowed("The MCP hub is stateless: send MCP messages with POST.", headers={"Allow": "POST"})
    parse_body(request.get_data(cache=True))  # the one body gate (gateway.serving.body); the SDK reads it after
    settings = services.settings()
    runtime = services.mcp()
    for label in labels:  # a worker's first request waits (bounded) for its servers to connect
        runtime.servers.wait_started(label, settings.mcp.connect_timeout_s)
    release = call_slots.hold_tool_calls(caller)
    if isinstance(release, Response):
        return release
    guardrails = guarded.hub_guardrails(settings, caller, request_id())
    hub_request = HubRequest(caller, tuple(labels), request_id(), contextvars.copy_context(), guardrails)
    scope = asgi.http_scope(request.environ, request.path, {SCOPE_KEY: hub_request})
    try:
        answer = asgi.serve(runtime.bridge, hub_server().asgi_app(), scope, request.get_data(),
                            settings.mcp.tool_timeout_s + ANSWER_GRACE_S)
    finally:
        release()
    response = Response(answer.body, status=answer.status, headers=answer.headers)
    if response.mimetype == "text/event-stream":
        response.headers.update(STREAM_HEADERS)
    return response


def hub_server() -> HubServer:
    """The current app's hub."""
    return current_app.extensions[EXTENSION]


def init_app(app: Flask) -> None:
    """Give the app its hub (after lifecycle.init_app: it uses the MCP runtime, writer and limiter)."""
    app.extensions[EXTENSION] = HubServer(app.extensions["gateway.mcp"], accounting_writer.writer(app),
                                          app.extensions["gateway.ratelimit"])
    call_slots.init_app(app)
    app.register_blueprint(bp)
