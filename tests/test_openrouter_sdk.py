"""The official OpenRouter Python SDK, unchanged, against a live gateway on /api/v1."""

from __future__ import annotations

import math

import openai
import pytest

from gateway import db
from gateway.accounting.credits import grant_credits
from gateway.tables import ApiKey
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk
from tests.scripted_model import usage

openrouter = pytest.importorskip("openrouter")
from openrouter import errors as sdk_errors  # noqa: E402

PAID = {"provider": "fake", "input_price_per_mtok": 2.5, "output_price_per_mtok": 10, "max_output_tokens": 100,
        "context_length": 8192}
HI = [{"role": "user", "content": "hi"}]
SPENT = math.ceil(11 * 2.5 + 7 * 10) / 1e6  # the fake's 11 + 7 tokens, rounded up to a micro-credit


@pytest.fixture
def settings(make_settings):
    return make_settings(models={"paid-model": PAID}, limits={"rpm": 3})


@pytest.fixture
def payer(make_key) -> str:
    secret = make_key("payer")
    with db.database.connection_context():
        grant_credits(ApiKey.get(ApiKey.name == "payer").account_id, 5_000_000)
    return secret


def sdk(live_server: str, key: str):
    return openrouter.OpenRouter(api_key=key, server_url=f"{live_server}/api/v1", retry_config=None)


def test_chat_plain_and_streamed(live_server, payer, fake_upstream):
    client = sdk(live_server, payer)
    reply = client.chat.send(model="paid-model", messages=HI)
    assert reply.choices[0].message.content == "Hello from upstream"
    assert reply.usage.cost == SPENT
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("Hel")), (0, chat_chunk("lo")), (0, chat_chunk(finish="stop")), (0, usage(3, 2))])
    chunks = list(client.chat.send(model="paid-model", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"


def test_chat_with_client_tools(live_server, payer, fake_upstream):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
         "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}
    fake_upstream.responder = lambda path, body: JsonReply(completion)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    reply = sdk(live_server, payer).chat.send(model="paid-model", messages=HI, tools=tools)
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert fake_upstream.bodies()[-1]["tools"] == tools


def test_typed_errors(live_server, payer, make_key, fake_upstream):
    with pytest.raises(sdk_errors.UnauthorizedResponseError):
        sdk(live_server, "sk-gw-wrong").chat.send(model="paid-model", messages=HI)
    with pytest.raises(sdk_errors.NotFoundResponseError):
        sdk(live_server, payer).chat.send(model="no-such-model", messages=HI)
    broke = make_key("broke")
    with pytest.raises(sdk_errors.PaymentRequiredResponseError) as paid:
        sdk(live_server, broke).chat.send(model="paid-model", messages=HI)
    assert paid.value.data.error.code == 402
    client = sdk(live_server, payer)
    with pytest.raises(sdk_errors.TooManyRequestsResponseError):
        for _ in range(5):
            client.chat.send(model="paid-model", messages=HI)


def test_models_key_and_credits(live_server, payer):
    client = sdk(live_server, payer)
    models = client.models.list()
    listed = {model.id: model for model in models.result.data}
    assert set(listed) == {"test-model", "backup-model", "paid-model"}
    paid = listed["paid-model"]
    assert (paid.pricing.prompt, paid.pricing.completion) == ("0.0000025", "0.00001")
    assert paid.context_length == 8192 and paid.architecture.input_modalities == ["text"]
    client.chat.send(model="paid-model", messages=HI)
    key = client.api_keys.get_current_key_metadata().data
    assert key.usage == SPENT and key.usage_daily == SPENT
    assert key.limit is None and key.is_free_tier is True and key.rate_limit.requests == 3
    credits = client.credits.get_credits().data
    assert credits.total_credits == 5.0 and credits.total_usage == SPENT


def test_generation_stats(live_server, payer, fake_upstream):
    client = sdk(live_server, payer)
    reply = client.chat.send(model="paid-model", messages=HI)
    stats = client.generations.get_generation(id=reply.id).data
    assert (stats.id, stats.model, stats.provider_name, stats.total_cost, stats.usage) == (
        reply.id, "paid-model", "fake", SPENT, SPENT)
    assert (stats.tokens_prompt, stats.tokens_completion, stats.finish_reason) == (11, 7, "stop")
    assert (stats.streamed, stats.cancelled, stats.generation_time) == (False, False, None) and stats.latency >= 0
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("Hel")), (0, chat_chunk(finish="stop")), (0, usage(3, 2))])
    [first, *_] = list(client.chat.send(model="paid-model", messages=HI, stream=True))
    streamed = client.generations.get_generation(id=first.id).data
    assert (streamed.streamed, streamed.tokens_prompt) == (True, 3)
    assert 0 <= streamed.generation_time <= streamed.latency
    with pytest.raises(sdk_errors.NotFoundResponseError):
        client.generations.get_generation(id="gen_unknown")


def test_openai_sdk_still_maps_api_v1_errors(live_server, payer):
    client = openai.OpenAI(base_url=f"{live_server}/api/v1", api_key=payer, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HI)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live_server}/api/v1", api_key="sk-gw-wrong", max_retries=0).models.list()
