"""A model's system prompt and sampling defaults, and the text-only content of llama-cpp-python upstreams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.config import ModelSettings, ProviderSettings, Settings
from gateway.upstream.model_defaults import with_model_defaults
from gateway.upstream.prepared import prepare
from gateway.upstream.routing import Route
from tests.fake_upstream import FakeUpstream

PROMPT = "You are a helpful assistant."
MODEL = ModelSettings(provider="fake", system_prompt=PROMPT, default_parameters={"temperature": 0.2, "top_p": 0.9})
SYSTEM = {"role": "system", "content": PROMPT}
USER = {"role": "user", "content": "Hi"}


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({"messages": [USER]}, {"messages": [SYSTEM, USER], "temperature": 0.2, "top_p": 0.9}),
        ({"messages": [{"role": "system", "content": "Mine"}, USER], "temperature": 1.0},
         {"messages": [{"role": "system", "content": "Mine"}, USER], "temperature": 1.0, "top_p": 0.9}),
        ({"messages": [{"role": "developer", "content": "Mine"}, USER], "top_p": None},
         {"messages": [{"role": "developer", "content": "Mine"}, USER], "temperature": 0.2, "top_p": 0.9}),
        ({"messages": [], "temperature": 0}, {"messages": [SYSTEM], "temperature": 0, "top_p": 0.9}),
        ({"prompt": "Hi"}, {"prompt": "Hi"}),  # legacy completions and embeddings: untouched
        ({"input": "Hi"}, {"input": "Hi"}),
    ],
)
def test_defaults_fill_only_what_the_request_leaves_out(body: dict[str, Any], sent: dict[str, Any]) -> None:
    assert with_model_defaults(body, MODEL) == sent
    assert with_model_defaults(sent, MODEL) == sent  # applying twice changes nothing


def test_a_model_without_defaults_sends_the_body_as_is() -> None:
    body = {"messages": [USER]}
    assert with_model_defaults(body, ModelSettings(provider="fake")) == body


def test_the_hold_counts_the_system_prompt() -> None:
    priced = {"provider": "fake", "input_price_per_mtok": 1_000_000.0, "max_output_tokens": 1}
    plain = Route.of("m", ModelSettings(**priced))
    prompted = Route.of("m", ModelSettings(**priced, system_prompt="x" * 200))
    body, provider = {"messages": [USER]}, ProviderSettings(base_url="http://upstream/v1")

    def hold(route: Route) -> int:
        return prepare(route, "chat/completions", body, provider, False).estimate().hold

    assert hold(prompted) > hold(plain)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        providers={"fake": {"text_content": True}},
        models={"test-model": {"system_prompt": PROMPT, "default_parameters": {"temperature": 0.2}}},
    )


def test_chat_completions_send_the_models_defaults(client, auth_headers, fake_upstream: FakeUpstream) -> None:
    body = {"model": "test-model", "messages": [USER]}
    assert client.post("/v1/chat/completions", json=body, headers=auth_headers).status_code == 200
    sent = fake_upstream.bodies()[-1]
    assert sent["messages"] == [SYSTEM, USER]
    assert sent["temperature"] == 0.2


def test_responses_send_the_defaults_and_content_as_text(client, auth_headers, fake_upstream: FakeUpstream) -> None:
    content = [{"type": "input_text", "text": "What is this?"},
               {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]
    body = {"model": "test-model", "input": [{"role": "user", "content": content}], "temperature": 0.7}
    response = client.post("/v1/responses", json=body, headers=auth_headers)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "completed"
    sent = fake_upstream.bodies()[-1]
    assert sent["messages"] == [SYSTEM, {"role": "user", "content": "What is this?\n[image_url]"}]
    assert sent["temperature"] == 0.7
    assert "base64" not in str(sent)
