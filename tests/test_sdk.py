"""The official openai SDK, pointed at a live gateway, sees OpenAI behaviour."""

from __future__ import annotations

import openai
import pytest

from tests.fake_upstream import JsonReply

MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def sdk(live_server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0)


def test_chat_completion(sdk):
    completion = sdk.chat.completions.create(model="test-model", messages=MESSAGES)
    assert completion.choices[0].message.content == "Hello from upstream"
    assert completion.model == "test-model"
    assert completion.usage.total_tokens == 18


def test_chat_stream(sdk):
    stream = sdk.chat.completions.create(model="test-model", messages=MESSAGES, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Hello world"


def test_chat_stream_with_usage(sdk):
    stream = sdk.chat.completions.create(
        model="test-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 7


def test_openrouter_base_path(live_server, api_key):
    client = openai.OpenAI(base_url=f"{live_server}/api/v1", api_key=api_key, max_retries=0)
    assert client.chat.completions.create(model="test-model", messages=MESSAGES).choices[0].message.content


def test_models_completions_embeddings(sdk):
    assert [model.id for model in sdk.models.list()] == ["test-model", "backup-model"]
    assert sdk.completions.create(model="test-model", prompt="x").choices[0].text == "legacy text"
    assert sdk.embeddings.create(model="test-model", input="x").data[0].embedding == [0.1, 0.2, 0.3]


def test_bad_key_is_authentication_error(live_server):
    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key="sk-gw-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="test-model", messages=MESSAGES)
    assert caught.value.code == "invalid_api_key"


def test_unknown_model_is_not_found(sdk):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="missing", messages=MESSAGES)
    assert caught.value.code == "model_not_found"


def test_upstream_429_is_rate_limit_error(sdk, fake_upstream):
    fake_upstream.responder = lambda path, body: JsonReply(
        {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "3"}
    )
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="test-model", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "3"


def test_upstream_5xx_is_server_error(sdk, fake_upstream):
    fake_upstream.responder = lambda path, body: JsonReply({"error": {"message": "down"}}, status=500)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="test-model", messages=MESSAGES)
    assert caught.value.status_code == 502


def test_mid_stream_error_raises_in_the_sdk(sdk, fake_upstream):
    from tests.fake_upstream import StreamReply, chat_chunk

    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("partial")), (0, {"error": {"message": "crashed"}})], done=False
    )
    stream = sdk.chat.completions.create(model="test-model", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="crashed"):
        list(stream)
