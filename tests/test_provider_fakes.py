"""The provider fakes speak the real wire formats: each provider's official SDK parses them without complaint."""

from __future__ import annotations

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests import fake_anthropic, fake_gemini
from tests.fake_anthropic import FakeAnthropic
from tests.fake_gemini import FakeGemini
from tests.fake_upstream import FakeUpstream, JsonReply, StreamReply, chat_chunk, chat_completion

WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def claude():
    with FakeAnthropic() as fake:
        yield fake, anthropic.Anthropic(api_key="test-key", base_url=fake.base_url, max_retries=0)


@pytest.fixture
def gemini():
    with FakeGemini() as fake:
        options = genai_types.HttpOptions(base_url=fake.base_url)
        yield fake, genai.Client(api_key="test-key", http_options=options)


def test_anthropic_sdk_reads_a_message_with_cache_usage(claude):
    fake, client = claude
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    reply = client.messages.create(model="claude-x", max_tokens=100, system=system,
                                   messages=[{"role": "user", "content": "Hi"}])
    assert reply.content[0].text == fake_anthropic.TEXT and reply.stop_reason == "end_turn"
    assert (reply.usage.cache_read_input_tokens, reply.usage.cache_creation_input_tokens) == (100, 20)
    assert fake.requests[-1].header("anthropic-version")


def test_anthropic_sdk_accumulates_a_streamed_tool_call_and_thinking(claude):
    _, client = claude
    thinking = {"type": "enabled", "budget_tokens": 1024}
    with client.messages.stream(model="claude-x", max_tokens=2048, tools=[WEATHER], thinking=thinking,
                                messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    kinds = [block.type for block in final.content]
    assert kinds == ["thinking", "tool_use"] and final.stop_reason == "tool_use"
    assert final.content[0].signature == "sig-fake-1" and final.content[1].input == {"city": "Paris"}


def test_anthropic_sdk_tool_round_trip(claude):
    _, client = claude
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    call = client.messages.create(model="claude-x", max_tokens=100, tools=[WEATHER], messages=ask)
    use = call.content[0]
    result = [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]
    reply = client.messages.create(model="claude-x", max_tokens=100, tools=[WEATHER], messages=[
        *ask, {"role": "assistant", "content": call.content}, {"role": "user", "content": result}])
    assert reply.content[0].text.startswith("The tool said")


def test_anthropic_sdk_types_the_fakes_errors(claude):
    fake, client = claude
    ask = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    fake.script.append(fake_anthropic.error(429, "rate_limit_error", "slow down", retry_after="7"))
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(**ask)
    assert limited.value.response.headers["retry-after"] == "7"
    fake.script.append(fake_anthropic.error(529, "overloaded_error", "Overloaded"))
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        client.messages.create(**ask)
    assert overloaded.value.status_code == 529 and overloaded.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(**{**ask, "thinking": {"type": "enabled", "budget_tokens": 10}})
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(api_key="wrong", base_url=fake.base_url, max_retries=0).messages.create(**ask)


def test_genai_sdk_reads_text_usage_and_a_function_call(gemini):
    fake, client = gemini
    reply = client.models.generate_content(model="gemini-x", contents="Hi")
    assert reply.text == fake_gemini.TEXT
    assert reply.usage_metadata.cached_content_token_count == 4
    tool = genai_types.Tool(function_declarations=[genai_types.FunctionDeclaration(
        name="get_weather", parameters=genai_types.Schema(
            type="OBJECT", properties={"city": genai_types.Schema(type="STRING")}, required=["city"]))])
    config = genai_types.GenerateContentConfig(
        tools=[tool], automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True))
    called = client.models.generate_content(model="gemini-x", contents="Weather?", config=config)
    assert called.function_calls[0].name == "get_weather" and called.function_calls[0].args == {"city": "Paris"}
    assert fake.requests[-1].header("x-goog-api-key") == "test-key"


def test_genai_sdk_reads_a_stream_with_thoughts(gemini):
    fake, client = gemini
    config = genai_types.GenerateContentConfig(thinking_config=genai_types.ThinkingConfig(include_thoughts=True))
    parts = [part for piece in client.models.generate_content_stream(model="gemini-x", contents="Hi", config=config)
             for part in (piece.candidates[0].content.parts or [])]
    assert "".join(part.text for part in parts if not part.thought) == fake_gemini.TEXT
    assert any(part.thought for part in parts)
    assert "alt=sse" in fake.requests[-1].path


def test_genai_sdk_types_the_fakes_errors(gemini):
    fake, client = gemini
    fake.script.append(fake_gemini.error(429, "Quota exceeded", retry_delay="7s"))
    with pytest.raises(genai_errors.ClientError) as limited:
        client.models.generate_content(model="gemini-x", contents="Hi")
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"
    fake.script.append(fake_gemini.error(503, "The model is overloaded."))
    with pytest.raises(genai_errors.ServerError) as unavailable:
        client.models.generate_content(model="gemini-x", contents="Hi")
    assert unavailable.value.code == 503


def test_azure_openai_sdk_reaches_the_fake_behind_azures_url():
    fake = FakeUpstream().start()
    try:
        client = openai.AzureOpenAI(api_key="azure-key", api_version="2024-10-21", max_retries=0,
                                    azure_endpoint=fake.base_url.removesuffix("/v1"))
        reply = client.chat.completions.create(model="my-deployment", messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.content == "Hello from upstream"
        path, _, headers = fake.requests[-1]
        assert path == "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
        assert headers.get("api-key") == "azure-key"
        fake.responder = lambda path, body: StreamReply([(0, chat_chunk("Hi")), (0, chat_chunk(finish="stop"))])
        stream = client.chat.completions.create(model="my-deployment", stream=True,
                                                messages=[{"role": "user", "content": "Hi"}])
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "Hi"
        filtered = {"error": {"message": "The response was filtered", "type": None, "param": "prompt",
                              "code": "content_filter", "status": 400}}
        fake.responder = lambda path, body: JsonReply(filtered, 400)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="my-deployment", messages=[{"role": "user", "content": "Hi"}])
        assert refused.value.code == "content_filter"
        fake.responder = lambda path, body: JsonReply(chat_completion(), 429, {"Retry-After": "3"})
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="my-deployment", messages=[{"role": "user", "content": "Hi"}])
    finally:
        fake.stop()
