"""Schemathesis against a live gateway over every operation of /openapi.json: no 5xx, errors in dialect.

Each operation gets FUZZ_EXAMPLES generated cases (positive and negative, fixed seed) plus the
schema's examples. The coverage phase (boundary values, missing and null fields, wrong types and
methods: about 7,500 more cases) runs with GATEWAY_FUZZ_COVERAGE=1. A manual run:
`GATEWAY_FUZZ_EXAMPLES=300 GATEWAY_FUZZ_COVERAGE=1 python -m pytest -q tests/test_schemathesis.py`;
GATEWAY_FUZZ_SEED picks another seed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from werkzeug.serving import make_server

from gateway import create_app, db, lifecycle
from gateway.accounting.credits import grant_credits
from gateway.accounting.keys import create_key
from gateway.config import build_settings
from gateway.errors import ANTHROPIC, OPENROUTER, dialect_of
from tests.fake_upstream import FakeUpstream

FUZZ_EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "40"))
FUZZ_SEED = int(os.environ.get("GATEWAY_FUZZ_SEED", "20261203"))
FUZZ_COVERAGE = os.environ.get("GATEWAY_FUZZ_COVERAGE") == "1"
ADMIN_ENV, ADMIN_TOKEN = "OPENAPI_FUZZ_ADMIN_TOKEN", "fuzz-admin-token"
MODEL = "test-model"
OPENAI_FIELDS = {"message", "type", "param", "code"}


class Gateway:
    """A gateway on a real threaded server with a fake upstream, a key and its credits."""

    def __init__(self, tmp_path: Any) -> None:
        self.upstream = FakeUpstream().start()
        settings = build_settings({
            "database": {"url": f"sqlite:///{tmp_path / 'fuzz.db'}"},
            "providers": {"fake": {"base_url": self.upstream.base_url, "timeout_s": 5, "connect_timeout_s": 2}},
            "models": {MODEL: {"provider": "fake", "input_price_per_mtok": 1, "output_price_per_mtok": 1}},
            "profiles": {"acme/default": {"mcp_servers": []}},
            "admin": {"token_env": ADMIN_ENV},
            "server": {"access_log": ""},
            "limits": {"rpm": 1_000_000, "tpm": 1_000_000_000},
        })
        self.app = create_app(settings)
        with self.app.app_context():
            db.upgrade()
            with db.database.connection_context(), db.database.atomic():
                key, self.secret = create_key("fuzzer", scope="acme")
                grant_credits(key.account_id, 10**15)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        lifecycle.close(self.app)
        self.upstream.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    served = Gateway(tmp_path_factory.mktemp("fuzz"))
    yield served
    served.close()


@pytest.fixture(scope="module")
def api_schema(gateway: Gateway) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict({
        "base-url": gateway.base_url,
        "seed": FUZZ_SEED,
        "generation": {"max-examples": FUZZ_EXAMPLES, "mode": "all"},
        "phases": {"coverage": {"enabled": FUZZ_COVERAGE}},
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
    })
    return schemathesis.openapi.from_url(f"{gateway.base_url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schemathesis.check
def error_in_dialect(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                     case: schemathesis.Case) -> bool | None:
    """Every 4xx/5xx is the JSON error body of its base path's dialect."""
    if response.status_code < 400:
        return None
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"], "an empty error message"
    if dialect_of(case.path) == ANTHROPIC:
        assert response.json()["type"] == "error" and set(error) == {"type", "message"}, f"not Anthropic's: {error}"
    elif dialect_of(case.path) == OPENROUTER:
        assert error["code"] == response.status_code, f"OpenRouter's code is the status: {error}"
    else:
        assert set(error) == OPENAI_FIELDS, f"not OpenAI's error shape: {error}"
    return True


# Not allow_header_conformance: werkzeug's automatic OPTIONS on /v1/responses/compact rightly lists
# GET and DELETE too, as /v1/responses/{response_id} matches that path (a response id "compact").
CHECKS = [not_a_server_error, error_in_dialect, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, unsupported_method]


@schema.parametrize()
def test_every_operation(case: schemathesis.Case, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, ADMIN_TOKEN)
    secret = ADMIN_TOKEN if case.path.startswith("/admin") else gateway.secret
    if case.meta.generation.mode.is_positive and isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = MODEL  # reach the upstream, not only the unknown-model 404
    case.call_and_validate(headers={"Authorization": f"Bearer {secret}"}, checks=CHECKS, timeout=30)
