"""The webhook guardrail against a real loopback webhook: allow, block, redact, failures, the URL policy."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.config import ConfigError, Settings, load_settings
from gateway.guardrails import outbound, webhook
from gateway.guardrails.verdicts import ALLOW, BLOCK, REDACT, CheckContext, Verdict
from gateway.observability import metrics
from tests.doc_pages import documented_examples
from tests.fake_upstream import FakeUpstream, HangReply, JsonReply, StreamReply

CONTEXT = CheckContext(request_id="req-1", endpoint="chat/completions", model="test-model", account_id=7, key_id=3)
TEXT = "my email is jane@example.com"


@pytest.fixture
def hook() -> Iterator[FakeUpstream]:
    """A real HTTP server on 127.0.0.1 playing the operator's webhook."""
    server = FakeUpstream().start()
    yield server
    server.stop()


def hook_url(server: FakeUpstream, path: str = "/hook") -> str:
    return server.base_url.removesuffix("/v1") + path


@pytest.fixture
def webhook_settings(make_settings: Callable[..., Settings], hook: FakeUpstream) -> Callable[..., Settings]:
    """Settings with one `[guardrails.hook]` webhook (URL checks off: the hook is on loopback)."""

    def build(checks: bool = False, **fields: Any) -> Settings:
        guardrail = {"type": "webhook", "url": hook_url(hook), "timeout_s": 2.0, **fields}
        return make_settings(guardrails={"hook": guardrail}, mcp={"remote_url_checks": checks})

    return build


def check_of(settings: Settings, **options: Any) -> webhook.WebhookCheck:
    if options:
        return webhook.WebhookCheck("hook", settings.guardrails["hook"], settings.mcp.remote_url_checks, **options)
    return webhook.build("hook", settings.guardrails["hook"], settings)


def answer(body: Any, status: int = 200) -> Callable[[str, dict], JsonReply]:
    return lambda path, request: JsonReply(body, status=status)


def failures(reason: str, outcome: str) -> float:
    return metrics.metrics().guardrail_failures.labels("hook", reason, outcome)._value.get()


def test_allow_sends_text_stage_and_metadata(webhook_settings, hook: FakeUpstream) -> None:
    hook.responder = answer({"action": "allow"})
    check = check_of(webhook_settings(headers={"X-Hook-Token": "operator-secret"}))
    assert check(TEXT, "input", CONTEXT) == ALLOW
    [(path, body, headers)] = hook.requests
    assert path == "/hook"
    assert body == {"text": TEXT, "stage": "input", "guardrail": "hook",
                    "request": {"request_id": "req-1", "endpoint": "chat/completions", "model": "test-model",
                                "account_id": 7, "key_id": 3}}
    assert headers["X-Hook-Token"] == "operator-secret"
    assert "Authorization" not in headers


def test_block_carries_the_reason_for_the_log(webhook_settings, hook: FakeUpstream) -> None:
    hook.responder = answer({"action": "block", "reason": "customer data\nnot allowed"})
    verdict = check_of(webhook_settings())(TEXT, "output", CONTEXT)
    assert verdict == Verdict(BLOCK, what=("webhook",), reason="customer data not allowed")
    assert hook.bodies()[0]["stage"] == "output"


def test_redact_replaces_the_text(webhook_settings, hook: FakeUpstream) -> None:
    hook.responder = answer({"action": "redact", "text": "my email is [EMAIL]"})
    verdict = check_of(webhook_settings())(TEXT, "tool_output", None)
    assert verdict == Verdict(REDACT, text="my email is [EMAIL]", what=("webhook",))
    assert hook.bodies()[0]["request"] == dict.fromkeys(("request_id", "endpoint", "model", "account_id",
                                                          "key_id"))


@pytest.mark.parametrize("fail_open", [True, False])
def test_timeout_follows_fail_open(webhook_settings, hook: FakeUpstream, fail_open: bool,
                                   caplog: pytest.LogCaptureFixture) -> None:
    hook.responder = lambda path, body: HangReply(1.5)
    outcome = "allowed" if fail_open else "blocked"
    before = failures("timeout", outcome)
    verdict = check_of(webhook_settings(timeout_s=0.2, fail_open=fail_open))(TEXT, "input", CONTEXT)
    assert verdict == (ALLOW if fail_open else Verdict(BLOCK, what=("unavailable",),
                                                        reason="webhook failed (timeout); fail_open is false"))
    assert failures("timeout", outcome) == before + 1
    assert "guardrail 'hook' (webhook) failed" in caplog.text
    assert "jane@example.com" not in caplog.text  # never the text


BAD_ANSWERS = [
    pytest.param(answer({"error": "boom"}, status=500), "status", id="500"),
    pytest.param(answer({"action": "allow"}, status=302), "status", id="redirect-not-followed"),
    pytest.param(answer("allow"), "malformed", id="json-string"),
    pytest.param(answer({"action": "explode"}), "malformed", id="unknown-action"),
    pytest.param(answer({"action": "redact"}), "malformed", id="redact-without-text"),
    pytest.param(answer({"action": "block", "reason": 42}), "malformed", id="reason-not-a-string"),
    pytest.param(lambda path, body: StreamReply([(0, "garbage")]), "malformed", id="not-json"),
]


@pytest.mark.parametrize(("responder", "reason"), BAD_ANSWERS)
@pytest.mark.parametrize("fail_open", [True, False])
def test_bad_answers_are_failures(webhook_settings, hook: FakeUpstream, responder, reason: str,
                                  fail_open: bool) -> None:
    hook.responder = responder
    outcome = "allowed" if fail_open else "blocked"
    before = failures(reason, outcome)
    verdict = check_of(webhook_settings(fail_open=fail_open))(TEXT, "input", CONTEXT)
    assert verdict.action == ("allow" if fail_open else "block")
    assert failures(reason, outcome) == before + 1


def test_connection_refused_is_a_failure(webhook_settings, hook: FakeUpstream) -> None:
    settings = webhook_settings(fail_open=False)
    hook.stop()
    assert check_of(settings)(TEXT, "input", CONTEXT).action == "block"


INTERNAL_URLS = [
    ("http://127.0.0.1:9/hook", "must use https"),
    ("https://127.0.0.1:9/hook", "IP address literal"),
    ("https://169.254.169.254/latest/meta-data/", "IP address literal"),
    ("https://localhost/hook", "local name"),
    ("https://metadata.google.internal/hook", "local name"),
    ("https://user:pw@hook.example.com/", "credentials"),
]


@pytest.mark.parametrize(("url", "rule"), INTERNAL_URLS)
def test_url_policy_refuses_internal_urls_at_startup(make_settings, url: str, rule: str) -> None:
    guardrails = {"hook": {"type": "webhook", "url": url}}
    with pytest.raises(ConfigError) as caught:
        make_settings(guardrails=guardrails)  # [mcp] remote_url_checks is on by default
    assert "guardrails.hook.url" in str(caught.value) and rule in str(caught.value)
    assert make_settings(guardrails=guardrails, mcp={"remote_url_checks": False}).guardrails["hook"].url == url


def test_url_policy_refuses_forbidden_headers_at_startup(make_settings) -> None:
    guardrails = {"hook": {"type": "webhook", "url": "https://hook.example.com/", "headers": {"Host": "x"}}}
    with pytest.raises(ConfigError, match=r"guardrails\.hook\.headers"):
        make_settings(guardrails=guardrails)


def test_builder_refuses_internal_url(webhook_settings) -> None:
    settings = webhook_settings(checks=False)
    with pytest.raises(ConfigError, match=r"guardrails\.hook\.url must use https"):
        webhook.WebhookCheck("hook", settings.guardrails["hook"], url_checks=True)


@pytest.mark.parametrize("fail_open", [True, False])
def test_a_name_resolving_inside_is_refused_at_call_time(make_settings, hook: FakeUpstream,
                                                         fail_open: bool) -> None:
    # A public-looking name whose DNS answer (now) is loopback: rebinding. Nothing is sent.
    port = hook.base_url.rsplit(":", 1)[1].split("/")[0]
    settings = make_settings(guardrails={"hook": {"type": "webhook", "url": f"https://hook.example.com:{port}/hook",
                                                  "fail_open": fail_open}})
    resolved: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["93.184.215.14", "127.0.0.1"]

    outcome = "allowed" if fail_open else "blocked"
    before = failures("refused", outcome)
    check = check_of(settings, session=outbound.new_session(checked=True, resolver=rebinding))
    verdict = check(TEXT, "input", CONTEXT)
    assert verdict.action == ("allow" if fail_open else "block")
    assert resolved == ["hook.example.com"]
    assert hook.requests == []
    assert failures("refused", outcome) == before + 1


def test_every_new_connection_resolves_and_checks(make_settings) -> None:
    # No address is dialled unless all the name resolved to are public; the port is the URL's (443 by default).
    seen: list[tuple[str, int]] = []

    def documentation(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return ["192.0.2.1"]  # a documentation address: refused

    settings = make_settings(guardrails={"hook": {"type": "webhook", "url": "https://hook.example.com/hook",
                                                  "fail_open": False}})
    check = check_of(settings, session=outbound.new_session(checked=True, resolver=documentation))
    assert check(TEXT, "input", CONTEXT).action == "block"
    assert check(TEXT, "input", CONTEXT).action == "block"
    assert seen == [("hook.example.com", 443)] * 2


def test_request_body_never_holds_more_than_the_metadata() -> None:
    body = webhook.request_body("hook", "t", "input", CONTEXT)
    assert set(body) == {"text", "stage", "guardrail", "request"}
    assert set(body["request"]) == {"request_id", "endpoint", "model", "account_id", "key_id"}
    assert json.dumps(body)  # plain JSON


def test_the_docs_example_loads_and_builds(tmp_path) -> None:
    example = {example.name: example for example in documented_examples()}["guardrails-webhook"]
    (tmp_path / "gateway.toml").write_text(example.code)
    settings = load_settings(str(tmp_path / "gateway.toml"), environ={})
    check = webhook.build("policy-hook", settings.guardrails["policy-hook"], settings)
    assert (check.url, check.headers, check.fail_open, check.url_checks) == (
        "https://guard.example.com/check", {"X-Hook-Token": "change-me"}, False, True)
    assert check.session is outbound.CHECKED_SESSION


@pytest.fixture
def settings(make_settings: Callable[..., Settings], hook: FakeUpstream) -> Settings:
    """The app's settings (conftest's `app`, `client`, `api_key`): a default webhook guardrail on input and output."""
    guardrail = {"type": "webhook", "url": hook_url(hook), "timeout_s": 0.5, "default": True,
                 "stages": ["input", "output"], "fail_open": False}
    return make_settings(guardrails={"hook": guardrail}, mcp={"remote_url_checks": False})


def by_stage(redact_input: bool = False, block: str | None = None) -> Callable[[str, dict], JsonReply]:
    """A webhook that redacts the email of inputs, or blocks one stage, and allows the rest."""

    def decide(path: str, body: dict) -> JsonReply:
        if body["stage"] == block:
            return JsonReply({"action": "block", "reason": "jane@example.com is a customer"})
        if redact_input and body["stage"] == "input":
            return JsonReply({"action": "redact", "text": body["text"].replace("jane@example.com", "[EMAIL]")})
        return JsonReply({"action": "allow"})

    return decide


def chat(client, auth_headers: dict[str, str]):
    body = {"model": "test-model", "messages": [{"role": "user", "content": TEXT}]}
    return client.post("/v1/chat/completions", json=body, headers=auth_headers)


def test_chat_input_redacted_by_the_webhook_never_shows_it_the_key(client, auth_headers, api_key: str,
                                                                   hook: FakeUpstream,
                                                                   fake_upstream: FakeUpstream) -> None:
    hook.responder = by_stage(redact_input=True)
    response = chat(client, auth_headers)
    assert response.status_code == 200, response.get_json()
    assert fake_upstream.bodies()[0]["messages"][0]["content"] == "my email is [EMAIL]"
    assert [body["stage"] for body in hook.bodies()] == ["input", "output"]
    first = hook.bodies()[0]
    assert first["text"] == TEXT and first["guardrail"] == "hook"
    assert first["request"]["endpoint"] == "chat/completions" and first["request"]["model"] == "test-model"
    assert first["request"]["request_id"] == response.headers["x-request-id"]
    assert isinstance(first["request"]["key_id"], int) and isinstance(first["request"]["account_id"], int)
    hashed = hashlib.sha256(api_key.encode()).hexdigest()
    for path, body, headers in hook.requests:  # never the key, its hash or the client's Authorization
        sent = json.dumps([path, body, headers])
        assert api_key not in sent and hashed not in sent and "Authorization" not in headers


@pytest.mark.parametrize("stage", ["input", "output"])
def test_chat_blocked_by_the_webhook_names_the_guardrail_not_the_reason(client, auth_headers, hook: FakeUpstream,
                                                                       fake_upstream: FakeUpstream,
                                                                       stage: str) -> None:
    hook.responder = by_stage(block=stage)
    response = chat(client, auth_headers)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "content_policy_violation"
    assert error["message"] == f"Blocked by guardrail 'hook' ({stage})."
    assert "jane" not in response.get_data(as_text=True)
    assert len(fake_upstream.requests) == (0 if stage == "input" else 1)


def test_chat_webhook_timeout_fails_closed(client, auth_headers, hook: FakeUpstream,
                                           fake_upstream: FakeUpstream) -> None:
    hook.responder = lambda path, body: HangReply(1.5)
    response = chat(client, auth_headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == "Blocked by guardrail 'hook' (input)."
    assert fake_upstream.requests == []


def test_a_slow_dns_answer_is_a_timeout(make_settings) -> None:
    def slow(host: str, port: int) -> list[str]:
        time.sleep(1.0)
        return ["192.0.2.1"]

    settings = make_settings(guardrails={"hook": {"type": "webhook", "url": "https://hook.example.com/hook",
                                                  "fail_open": False, "timeout_s": 0.2}})
    check = check_of(settings, session=outbound.new_session(checked=True, resolver=slow))
    started = time.monotonic()
    verdict = check(TEXT, "input", CONTEXT)
    assert verdict.reason == "webhook failed (timeout); fail_open is false"
    assert time.monotonic() - started < 0.8


def test_a_streamed_answer_is_held_and_redacted_whole(client, auth_headers, hook: FakeUpstream,
                                                      fake_upstream: FakeUpstream) -> None:
    # A webhook needs the whole text: the stream's text reaches the client only once the webhook has answered.
    hook.responder = lambda path, body: JsonReply(
        {"action": "redact", "text": body["text"].replace("world", "[PLANET]")} if body["stage"] == "output"
        else {"action": "allow"})
    body = {"model": "test-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/v1/chat/completions", json=body, headers=auth_headers)
    assert response.status_code == 200
    events = [line.removeprefix("data: ") for line in response.get_data(as_text=True).splitlines()
              if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk.get("choices", []))
    assert text == "Hello [PLANET]"
    assert [body["text"] for body in hook.bodies() if body["stage"] == "output"] == ["Hello world"]
