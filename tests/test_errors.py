"""Every error a client can see has the OpenAI shape and the right status."""

from __future__ import annotations

import pytest

from gateway.errors import OPENROUTER, GatewayError, UpstreamTimeout, dialect_of, error_body
from gateway.upstream import relay
from tests.fake_upstream import HangReply, JsonReply

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


def assert_openai_error(response, status: int, code: str | None = None, type_: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    if type_ is not None:
        assert body["error"]["type"] == type_
    return body["error"]


CLIENT_FAILURES = [
    # (method, path, body, headers kind, status, code, type)
    ("GET", "/v1/nowhere", None, "good", 404, "unknown_route", "invalid_request_error"),
    ("GET", "/v1/chat/completions", None, "good", 405, "method_not_allowed", "invalid_request_error"),
    ("POST", "/v1/chat/completions", b"{not json", "good", 400, "invalid_json", "invalid_request_error"),
    ("POST", "/v1/chat/completions", b"[1, 2]", "good", 400, "invalid_request", "invalid_request_error"),
    ("POST", "/v1/chat/completions", CHAT, "none", 401, "invalid_api_key", "authentication_error"),
    ("POST", "/v1/chat/completions", CHAT, "bad", 401, "invalid_api_key", "authentication_error"),
    ("POST", "/api/v1/chat/completions", CHAT, "bad", 401, "invalid_api_key", "authentication_error"),
    ("POST", "/v1/completions", CHAT, "none", 401, "invalid_api_key", "authentication_error"),
    ("POST", "/v1/embeddings", CHAT, "none", 401, "invalid_api_key", "authentication_error"),
    ("GET", "/v1/models", None, "none", 401, "invalid_api_key", "authentication_error"),
    ("POST", "/v1/chat/completions", {**CHAT, "model": "nope"}, "good", 404, "model_not_found", None),
    ("POST", "/v1/completions", {"model": "nope", "prompt": "x"}, "good", 404, "model_not_found", None),
    ("POST", "/v1/embeddings", {"model": "nope", "input": "x"}, "good", 404, "model_not_found", None),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "good", 400, "missing_model", None),
    ("POST", "/v1/chat/completions", {**CHAT, "models": "x"}, "good", 400, "invalid_request", None),
    ("POST", "/v1/chat/completions", {**CHAT, "model": "nope", "models": ["nope-2"]}, "good", 404, "model_not_found",
     None),  # a fallback list that names no served model
    ("GET", "/admin/keys", None, "good", 404, "not_found", None),
    ("POST", "/v1/responses", {"input": "x"}, "good", 400, None, "invalid_request_error"),
    ("POST", "/v1/responses", {"model": "test-model", "input": "x", "colour": 1}, "good", 400,
     "unknown_parameter", "invalid_request_error"),
    ("POST", "/v1/responses", {"model": "nope", "input": "x"}, "good", 404, "model_not_found", None),
    ("POST", "/v1/responses", {"model": "test-model", "input": "x", "previous_response_id": "resp_x"}, "good",
     404, "previous_response_not_found", None),
    ("POST", "/v1/responses", {"model": "test-model", "input": "x"}, "none", 401, "invalid_api_key", None),
    ("POST", "/v1/responses", {"model": "test-model", "input": "x", "tools": [
        {"type": "function", "name": "mcp__x", "parameters": {}}]}, "good", 422, "bad_input", "bad_input"),
    ("GET", "/v1/responses/resp_missing", None, "good", 404, None, "invalid_request_error"),
    ("DELETE", "/v1/responses/resp_missing", None, "good", 404, None, "invalid_request_error"),
    ("GET", "/v1/responses/resp_missing/input_items", None, "good", 404, None, "invalid_request_error"),
    ("POST", "/v1/responses/resp_missing/cancel", None, "good", 404, None, "invalid_request_error"),
    ("POST", "/v1/responses/compact", {"input": "x"}, "good", 400, None, None),
    ("GET", "/v1/responses", None, "good", 426, "websocket_upgrade_required", "invalid_request_error"),
    ("GET", "/v1/responses", None, "none", 401, "invalid_api_key", None),
    ("POST", "/v1/conversations", {"itemz": []}, "good", 400, "unknown_parameter", "invalid_request_error"),
    ("POST", "/v1/conversations", {}, "none", 401, "invalid_api_key", None),
    ("GET", "/v1/conversations/conv_missing", None, "good", 404, "not_found", "invalid_request_error"),
    ("GET", "/api/v1/conversations/conv_missing/items", None, "good", 404, None, "invalid_request_error"),
    ("DELETE", "/v1/conversations/conv_missing/items/msg_x", None, "good", 404, "not_found", None),
    ("GET", "/v1/mcp/servers", None, "none", 401, "invalid_api_key", None),
    ("GET", "/v1/mcp/servers/ghost/tools", None, "good", 404, None, "invalid_request_error"),
    ("GET", "/quota", None, "bad", 401, "invalid_api_key", None),
    ("GET", "/api/v3/auth/credit-balance", None, "none", 401, "invalid_api_key", None),
    ("GET", "/api/v1/key", None, "none", 401, "invalid_api_key", None),
    ("GET", "/api/v1/credits", None, "none", 401, "invalid_api_key", None),
    ("GET", "/api/v1/generation", None, "good", 400, None, "invalid_request_error"),
    ("GET", "/api/v1/generation?id=gen_missing", None, "good", 404, None, "invalid_request_error"),
    ("GET", "/api/v1/generation?id=gen_missing", None, "none", 401, None, "authentication_error"),
    ("POST", "/api/v1/openai/acme/default/chat/completions", CHAT, "none", 401, "invalid_api_key", None),
    ("GET", "/api/v1/openai/acme/default/models", None, "good", 404, "profile_not_found", None),
    ("PATCH", "/v1/models", None, "good", 405, "method_not_allowed", None),
]


def assert_openrouter_error(response, status: int, type_: str | None = None) -> dict:
    """OpenRouter's dialect (/api/v1): integer `code` = the status, plus OpenAI's `type` and `param`."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert {"code", "message", "type", "param"} <= set(body["error"]) <= {"code", "message", "type", "param",
                                                                           "metadata"}
    assert body["error"]["code"] == status and body["error"]["message"]
    if type_ is not None:
        assert body["error"]["type"] == type_
    return body["error"]


def assert_error_in_dialect(path: str, response, status: int, code: str | None, type_: str | None) -> dict:
    """The error in the dialect of its base path."""
    if dialect_of(path) == OPENROUTER:
        return assert_openrouter_error(response, status, type_)
    return assert_openai_error(response, status, code, type_)


@pytest.mark.parametrize("method,path,body,who,status,code,type_", CLIENT_FAILURES)
def test_client_failures(client, api_key, method, path, body, who, status, code, type_):
    headers = {"good": {"Authorization": f"Bearer {api_key}"}, "bad": {"X-API-Key": "sk-gw-wrong"}, "none": {}}
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = client.open(path, method=method, headers=headers[who], **kwargs)
    error = assert_error_in_dialect(path, response, status, code, type_)
    if code == "model_not_found":
        assert error["param"] in ("model", "models")


def test_body_over_the_limit_is_413(make_settings, make_key, make_app):
    app = make_app(make_settings(server={"max_body_bytes": 2048}))
    headers = {"Authorization": f"Bearer {make_key()}"}
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = app.test_client().post("/v1/chat/completions", json=big, headers=headers)
    assert_openai_error(response, 413, "request_too_large")


UPSTREAM_FAILURES = [
    (JsonReply({"error": {"message": "boom"}}, status=500), 502, "upstream_error"),
    (JsonReply({"error": {"message": "busy"}}, status=503), 502, "upstream_error"),
    (JsonReply({"error": {"message": "bad param", "type": "invalid_request_error", "param": "n",
                          "code": "bad_n"}}, status=400), 400, "bad_n"),
    (JsonReply({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"}), 429, None),
    (JsonReply({"error": {"message": "who are you"}}, status=401), 502, "upstream_error"),
    (JsonReply("not an object"), 502, "upstream_error"),
]


@pytest.mark.parametrize("reply,status,code", UPSTREAM_FAILURES)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
def test_upstream_failures(client, auth_headers, fake_upstream, reply, status, code, path):
    fake_upstream.responder = lambda p, body: reply
    response = client.post(path, json={**CHAT, "prompt": "x", "input": "x"}, headers=auth_headers)
    assert_openai_error(response, status, code)
    if status == 429:
        assert response.headers["Retry-After"] == "7"


def test_upstream_timeout_is_504(make_settings, fake_upstream, make_key, make_app):
    app = make_app(make_settings(providers={"fake": {"timeout_s": 0.3}}))
    fake_upstream.responder = lambda path, body: HangReply(2)
    response = app.test_client().post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {make_key()}"}
    )
    assert_openai_error(response, 504, "upstream_timeout")


def test_unreachable_upstream_is_502(make_settings, make_key, make_app):
    app = make_app(make_settings(providers={"fake": {"base_url": "http://127.0.0.1:9/v1"}}))
    response = app.test_client().post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {make_key()}"}
    )
    error = assert_openai_error(response, 502, "upstream_unavailable")
    assert "127.0.0.1:9" not in error["message"]


def test_unexpected_exception_is_500_without_traceback(app, client, auth_headers, monkeypatch, caplog):

    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(relay, "relay_json", explode)
    response = client.post("/v1/chat/completions", json=CHAT, headers={**auth_headers, "x-request-id": "r-42"})
    error = assert_openai_error(response, 500, "internal_error", "api_error")
    assert "secret internals" not in error["message"] and "r-42" in error["message"]
    assert "r-42" in caplog.text


def test_error_body_builder_and_class_attributes():
    assert error_body("m", "t") == {"error": {"message": "m", "type": "t", "param": None, "code": None}}
    timeout = UpstreamTimeout("slow")
    assert (timeout.status, timeout.code) == (504, "upstream_timeout")
    custom = GatewayError("x", status=418, code="teapot", param="p")
    assert custom.body()["error"] == {"message": "x", "type": "api_error", "param": "p", "code": "teapot"}


def test_a_405_names_the_allowed_methods(client):
    answer = client.put("/v1/chat/completions")
    assert answer.status_code == 405 and answer.json["error"]["code"] == "method_not_allowed"
    assert set(answer.headers["Allow"].replace(" ", "").split(",")) >= {"POST"}
