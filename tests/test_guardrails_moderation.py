"""The moderation guardrail against a real loopback provider: /v1/moderations and a chat-model classifier."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from gateway.config import ConfigError, Settings, load_settings
from gateway.guardrails import moderation
from gateway.guardrails.verdicts import ALLOW, BLOCK, LOG, CheckContext, Verdict
from gateway.observability import metrics
from tests.doc_pages import documented_examples
from tests.fake_upstream import FakeUpstream, HangReply, JsonReply, chat_completion

CONTEXT = CheckContext(request_id="req-1", endpoint="chat/completions", model="test-model", account_id=1, key_id=2)
PROVIDER_KEY = "sk-provider-secret-123"


@pytest.fixture(autouse=True)
def own_moderations(fake_upstream: FakeUpstream) -> None:
    """These tests answer /moderations with their own responders, not the fake's media routes."""
    fake_upstream.serves_media = False


def moderation_answer(*flagged: str, model: str = "omni-moderation-2024-09-26") -> dict[str, Any]:
    """OpenAI's /v1/moderations answer for one input, with `flagged` categories true."""
    categories = {category: category in flagged for category in moderation.OPENAI_CATEGORIES}
    scores = {category: (0.91 if category in flagged else 0.0004) for category in moderation.OPENAI_CATEGORIES}
    applied = {category: ["text"] for category in moderation.OPENAI_CATEGORIES}
    result = {"flagged": bool(flagged), "categories": categories, "category_scores": scores,
              "category_applied_input_types": applied}
    return {"id": "modr-fake", "model": model, "results": [result]}


def moderations(*flagged: str) -> Callable[[str, dict], JsonReply]:
    def answer(path: str, body: dict) -> JsonReply:
        if path.endswith("/moderations"):
            return JsonReply(moderation_answer(*flagged))
        return JsonReply({"error": {"message": "not here"}}, status=404)

    return answer


def classifier(content: str) -> Callable[[str, dict], JsonReply]:
    return lambda path, body: JsonReply(chat_completion(content))


@pytest.fixture
def moderation_settings(make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
                        ) -> Callable[..., Settings]:
    """Settings with a moderation model and a `[guardrails.mod]` on it (the fake provider has a key)."""
    monkeypatch.setenv("FAKE_PROVIDER_KEY", PROVIDER_KEY)

    def build(**fields: Any) -> Settings:
        guardrail = {"type": "moderation", "model": "omni", **fields}
        if "chat_model" in fields:
            guardrail.pop("model")
        return make_settings(
            providers={"fake": {"api_key_env": "FAKE_PROVIDER_KEY", "extra_headers": {"X-Org": "acme"}}},
            models={"omni": {"provider": "fake", "upstream_model": "omni-moderation-latest"}},
            guardrails={"mod": guardrail},
        )

    return build


def check_of(settings: Settings) -> moderation.ModerationCheck:
    return moderation.build("mod", settings.guardrails["mod"], settings)


def test_fake_answer_is_what_the_openai_sdk_parses(fake_upstream: FakeUpstream) -> None:
    fake_upstream.responder = moderations("violence")
    client = openai.OpenAI(base_url=fake_upstream.base_url, api_key="sk-test", max_retries=0)
    answer = client.moderations.create(model="omni-moderation-latest", input="some text")
    assert answer.results[0].flagged is True
    assert answer.results[0].categories.violence is True
    assert answer.results[0].categories.self_harm is False
    assert answer.results[0].category_scores.violence == pytest.approx(0.91)
    assert fake_upstream.requests[0][0] == "/v1/moderations"


def test_flagged_category_blocks(moderation_settings, fake_upstream: FakeUpstream) -> None:
    fake_upstream.responder = moderations("violence", "hate")
    verdict = check_of(moderation_settings())("a violent text", "input", CONTEXT)
    assert verdict == Verdict(BLOCK, what=("hate", "violence"), reason="flagged hate, violence")
    [(path, body, headers)] = fake_upstream.requests
    assert path == "/v1/moderations"
    assert body == {"model": "omni-moderation-latest", "input": "a violent text"}
    assert headers["Authorization"] == f"Bearer {PROVIDER_KEY}" and headers["X-Org"] == "acme"


def test_unflagged_text_is_allowed(moderation_settings, fake_upstream: FakeUpstream) -> None:
    fake_upstream.responder = moderations()
    assert check_of(moderation_settings())("a kind text", "output", CONTEXT) == ALLOW


@pytest.mark.parametrize(("configured", "flagged", "blocked"), [
    (["violence"], ["hate"], ()),
    (["violence"], ["violence", "hate"], ("violence",)),
    (["self_harm"], ["self-harm"], ("self-harm",)),              # names compare loosely
    (["Harassment/Threatening"], ["harassment/threatening"], ("harassment/threatening",)),
    (["self-harm"], ["self-harm/intent"], ()),                   # a subcategory is its own category
])
def test_only_configured_categories_count(moderation_settings, fake_upstream: FakeUpstream,
                                          configured: list[str], flagged: list[str], blocked: tuple) -> None:
    fake_upstream.responder = moderations(*flagged)
    verdict = check_of(moderation_settings(categories=configured))("text", "input", CONTEXT)
    assert verdict.what == blocked and verdict.action == ("block" if blocked else "allow")


def test_log_action_records_instead_of_blocking(moderation_settings, fake_upstream: FakeUpstream) -> None:
    fake_upstream.responder = moderations("violence")
    assert check_of(moderation_settings(action="log"))("text", "input", CONTEXT) == Verdict(LOG, what=("violence",))


@pytest.mark.parametrize("fail_open", [True, False])
@pytest.mark.parametrize(("responder", "reason"), [
    pytest.param(lambda path, body: HangReply(1.5), "timeout", id="timeout"),
    pytest.param(lambda path, body: JsonReply({"error": {"message": "down"}}, status=503), "status", id="503"),
    pytest.param(lambda path, body: JsonReply({"id": "modr", "results": []}), "malformed", id="no-results"),
    pytest.param(lambda path, body: JsonReply({"results": [{"flagged": True}]}), "malformed", id="no-categories"),
])
def test_failures_follow_fail_open(moderation_settings, fake_upstream: FakeUpstream, responder, reason: str,
                                   fail_open: bool) -> None:
    fake_upstream.responder = responder
    outcome = "allowed" if fail_open else "blocked"
    counter = metrics.metrics().guardrail_failures.labels("mod", reason, outcome)
    before = counter._value.get()
    verdict = check_of(moderation_settings(timeout_s=0.2, fail_open=fail_open))("text", "input", CONTEXT)
    assert verdict.action == ("allow" if fail_open else "block")
    assert counter._value.get() == before + 1


def test_chat_classifier_blocks_on_a_flagged_category(moderation_settings, fake_upstream: FakeUpstream) -> None:
    fake_upstream.responder = classifier('```json\n{"violence": true, "hate": false}\n```')
    settings = moderation_settings(chat_model="test-model", categories=["violence", "hate"])
    verdict = check_of(settings)("a violent text", "tool_output", CONTEXT)
    assert verdict == Verdict(BLOCK, what=("violence",), reason="flagged violence")
    [(path, body, headers)] = fake_upstream.requests
    assert path == "/v1/chat/completions" and headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert body["model"] == "upstream-model" and body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system" and "violence, hate" in system["content"]
    assert user == {"role": "user", "content": "a violent text"}


def test_chat_classifier_allows_and_lists_every_category_by_default(moderation_settings,
                                                                    fake_upstream: FakeUpstream) -> None:
    fake_upstream.responder = classifier(json.dumps(dict.fromkeys(moderation.OPENAI_CATEGORIES, False)))
    assert check_of(moderation_settings(chat_model="test-model"))("hello", "input", CONTEXT) == ALLOW
    assert ", ".join(moderation.OPENAI_CATEGORIES) in fake_upstream.bodies()[0]["messages"][0]["content"]


@pytest.mark.parametrize("content", ["I cannot help with that.", '{"violence": "yes"}', "[true]", ""])
def test_chat_classifier_garbage_is_a_failure(moderation_settings, fake_upstream: FakeUpstream,
                                              content: str) -> None:
    fake_upstream.responder = classifier(content)
    settings = moderation_settings(chat_model="test-model", fail_open=False)
    verdict = check_of(settings)("text", "input", CONTEXT)
    assert verdict == Verdict(BLOCK, what=("unavailable",), reason="moderation failed (malformed); fail_open is false")


def test_a_non_openai_provider_is_a_startup_error(make_settings) -> None:
    with pytest.raises(ConfigError, match=r"guardrails\.mod\.model: .*type = \"openai\""):
        make_settings(
            providers={"claude": {"type": "anthropic", "base_url": "https://api.anthropic.com"}},
            models={"claude-x": {"provider": "claude", "upstream_model": "claude-x"}},
            guardrails={"mod": {"type": "moderation", "model": "claude-x"}},
        )


def test_the_docs_example_loads_and_builds(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    example = {example.name: example for example in documented_examples()}["guardrails-moderation"]
    (tmp_path / "gateway.toml").write_text(example.code)
    settings = load_settings(str(tmp_path / "gateway.toml"), environ={})
    model = moderation.build("moderation", settings.guardrails["moderation"], settings)
    chat = moderation.build("classifier", settings.guardrails["classifier"], settings)
    assert model.endpoint == moderation.Endpoint("https://api.openai.com/v1/moderations", {},
                                                 "omni-moderation-latest")
    assert chat.endpoint.url == "https://api.openai.com/v1/chat/completions" and chat.chat
    assert "violence, hate" in chat.prompt


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """The app's settings (conftest's `app`, `client`): a default moderation guardrail on input."""
    return make_settings(models={"omni": {"provider": "fake", "upstream_model": "omni-moderation-latest"}},
                         guardrails={"mod": {"type": "moderation", "model": "omni", "default": True,
                                             "categories": ["violence"]}})


def moderated_chat(flagged: tuple[str, ...]) -> Callable[[str, dict], JsonReply]:
    """The fake provider: a moderations answer flagging `flagged`, and a chat completion otherwise."""
    return lambda path, body: JsonReply(moderation_answer(*flagged) if path.endswith("/moderations")
                                        else chat_completion("fine"))


@pytest.mark.parametrize(("flagged", "status"), [(("violence",), 400), (("hate",), 200), ((), 200)])
def test_chat_input_moderated(client, auth_headers, fake_upstream: FakeUpstream, flagged: tuple, status: int) -> None:
    fake_upstream.responder = moderated_chat(flagged)
    body = {"model": "test-model", "messages": [{"role": "user", "content": "a text"}]}
    response = client.post("/v1/chat/completions", json=body, headers=auth_headers)
    assert response.status_code == status
    paths = [path for path, _, _ in fake_upstream.requests]
    assert paths == (["/v1/moderations"] if status == 400 else ["/v1/moderations", "/v1/chat/completions"])
    if status == 400:
        assert response.get_json()["error"]["message"] == "Blocked by guardrail 'mod' (input)."
