"""The cross-path error test (tests/test_error_paths.py) in front of the Anthropic, Gemini and Azure fakes.

One provider failure, every path (relay, `tools: "auto"`, Responses JSON, SSE, WebSocket and
background, under /v1 and /api/v1): the same status, `type` and `code` on each, whatever the provider.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway import db
from gateway.accounting import credits
from gateway.tables import ApiKey
from tests import fake_anthropic, fake_gemini, native_providers
from tests.fake_upstream import JsonReply
from tests.native_providers import Backend
from tests.test_error_paths import BASES, PATHS, UPSTREAM_429, Expected, Seen, body_of, observe

native, settings = native_providers.native, native_providers.settings  # fixtures

FAILURES: dict[str, dict[str, Any]] = {  # a provider's answer, per kind of failure and provider
    "upstream 5xx": {"anthropic": fake_anthropic.error(500, "api_error", "boom"),
                     "gemini": fake_gemini.error(500, "boom"),
                     "azure": JsonReply({"error": {"message": "boom", "type": "server_error"}}, 500)},
    "upstream 429": {"anthropic": fake_anthropic.error(429, "rate_limit_error", "Slow down.", retry_after="7"),
                     "gemini": fake_gemini.error(429, "Quota exceeded.", retry_delay="7s"),
                     "azure": JsonReply(UPSTREAM_429, 429, {"Retry-After": "7"})},
    "overloaded": {"anthropic": fake_anthropic.error(529, "overloaded_error", "Overloaded"),
                   "gemini": fake_gemini.error(503, "The model is overloaded.")},
}
STATUSES = {"upstream 5xx": (502, "api_error"), "upstream 429": (429, "rate_limit_error"),
            "overloaded": (503, "service_unavailable")}


def fail_next(backend: Backend, reply: Any) -> None:
    """The provider's next answer is `reply` (and only the next)."""
    if backend.kind == "azure":
        backend.failures[:] = [reply]
    else:
        backend.fake.script[:] = [reply]


def funded_key(make_key, name: str) -> str:
    secret = make_key(name, scope="default")
    with db.database.connection_context():
        credits.grant_credits(ApiKey.get(ApiKey.name == name).account_id, 10**9)
    return secret


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("kind", list(FAILURES))
def test_every_path_shows_the_providers_failure_alike(client, live_server, make_key, native: Backend, kind, base):
    reply = FAILURES[kind].get(native.kind)
    if reply is None:
        pytest.skip(f"{native.kind} has no overloaded answer of its own")
    seen: dict[str, Seen] = {}
    for number, path in enumerate(PATHS):
        fail_next(native, reply)
        seen[path] = observe(client, live_server, path, base, funded_key(make_key, f"{kind}-{number}"),
                             body_of(path, "native-model"))
    status, type_ = STATUSES[kind]
    assert (seen["relay json"].status, seen["relay json"].type) == (status, type_), seen["relay json"]
    codes = {error.code for error in seen.values() if isinstance(error.code, str)}  # /api/v1's are the status
    assert len(codes) == 1, seen
    expected = Expected(status, type_, codes.pop())
    for path, error in seen.items():
        expected.check(error, path)
