"""The Anthropic adapter: request translation, answers, streams and errors, table-driven; then against the fake."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import (
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    UpstreamRejected,
    UpstreamStreamBroken,
)
from gateway.upstream.providers import ProviderWire, adapter
from gateway.upstream.sse import SseEvent
from tests import fake_anthropic
from tests.fake_anthropic import FakeAnthropic
from tests.provider_round_trip import send, streamed_arguments, streamed_text

ANTHROPIC = adapter("anthropic")
WIRE = ProviderWire("https://api.anthropic.test", api_key="sk-test")
PNG = "iVBORw0KGgo="
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}
USER = {"role": "user", "content": "Hi"}


def wire(**body: Any) -> dict[str, Any]:
    """The Messages body for a chat body (max_tokens 100 unless given)."""
    return ANTHROPIC.build_request({"max_tokens": 100, "messages": [USER], **body}, "claude-x", WIRE).json


REQUESTS = [
    ("system hoisted, same-role turns merged",
     {"messages": [{"role": "system", "content": "S"}, USER, {"role": "user", "content": "more"}]},
     {"system": [{"type": "text", "text": "S"}],
      "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "more"}]}]}),
    ("images from data and http URLs",
     {"messages": [{"role": "user", "content": [
         {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
         {"type": "image_url", "image_url": {"url": "https://img.test/a.jpg"}}]}]},
     {"messages": [{"role": "user", "content": [
         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
         {"type": "image", "source": {"type": "url", "url": "https://img.test/a.jpg"}}]}]}),
    ("tool calls, their results grouped into the next user turn",
     {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                   {"role": "tool", "tool_call_id": "call_2", "content": "rainy"},
                   {"role": "user", "content": "thanks"}]},
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                   {"role": "assistant", "content": [
                       {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                       {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Paris"}}]},
                   {"role": "user", "content": [
                       {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
                       {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
                       {"type": "text", "text": "thanks"}]}]}),
    ("thinking blocks sent back go through unchanged",
     {"messages": [USER, {"role": "assistant", "content": [
         {"type": "redacted_thinking", "data": "opaque"}, {"type": "text", "text": "Hello"}], "reasoning_details": [
         {"type": "reasoning.text", "text": "hmm", "signature": "sig", "format": "anthropic-claude-v1"}]}]},
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}, {"role": "assistant", "content": [
         {"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "redacted_thinking", "data": "opaque"},
         {"type": "text", "text": "Hello"}]}]}),
    ("a tool result with an image",
     {"messages": [USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "call_1", "content": [
         {"type": "text", "text": "chart:"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]},
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                   {"role": "assistant", "content": [
                       {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": [
                       {"type": "text", "text": "chart:"},
                       {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]}]}),
    ("the prepared cap is max_tokens", {"max_tokens": None, "max_completion_tokens": 77}, {"max_tokens": 77}),
    ("stop, temperature, top_p", {"stop": "END", "temperature": 0.2, "top_p": 0.9},
     {"stop_sequences": ["END"], "temperature": 0.2, "top_p": 0.9}),
    ("tools and required", {"tools": [TOOL], "tool_choice": "required"},
     {"tools": [{"name": "get_weather", "input_schema": TOOL["function"]["parameters"], "description": "Weather."}],
      "tool_choice": {"type": "any"}}),
    ("a named tool", {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     {"tool_choice": {"type": "tool", "name": "get_weather"}}),
    ("none", {"tools": [TOOL], "tool_choice": "none"}, {"tool_choice": {"type": "none"}}),
    ("parallel_tool_calls false", {"tools": [TOOL], "parallel_tool_calls": False},
     {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    ("json_schema as structured output",
     {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
     {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}),
    ("reasoning_effort as a thinking budget", {"max_tokens": 30000, "reasoning_effort": "high"},
     {"thinking": {"type": "enabled", "budget_tokens": 24576}}),
    ("Responses' reasoning.effort, budget kept below the cap", {"max_tokens": 2000, "reasoning": {"effort": "medium"}},
     {"thinking": {"type": "enabled", "budget_tokens": 1999}}),
    ("cache_control on parts, messages and tools",
     {"messages": [{"role": "system", "content": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}]},
                   {**USER, "cache_control": {"type": "ephemeral"}}],
      "tools": [{**TOOL, "cache_control": {"type": "ephemeral"}}]},
     {"system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
      "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}],
      "tools": [{"name": "get_weather", "input_schema": TOOL["function"]["parameters"], "description": "Weather.",
                 "cache_control": {"type": "ephemeral"}}]}),
    ("user and stream", {"user": "u-1", "stream": True, "stream_options": {"include_usage": True}},
     {"metadata": {"user_id": "u-1"}, "stream": True}),
]


@pytest.mark.parametrize(("body", "expected"), [case[1:] for case in REQUESTS], ids=[case[0] for case in REQUESTS])
def test_request_translation(body, expected):
    sent = wire(**body)
    assert {key: sent.get(key) for key in expected} == expected
    assert "stream_options" not in sent and sent["model"] == "claude-x"


REFUSALS = [
    ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"seed": 0}, "seed"),
    ({"response_format": {"type": "json_object"}}, "response_format"), ({"temperature": 1.5}, "temperature"),
    ({"max_tokens": 1000, "reasoning_effort": "low"}, "reasoning_effort"), ({"max_tokens": None}, "max_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content[0]"),
    ({"messages": [USER, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{"}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"tools": [{"type": "web_search"}]}, "tools[0]"),
]


@pytest.mark.parametrize(("body", "param"), REFUSALS, ids=[case[1] for case in REFUSALS])
def test_untranslatable_fields_are_a_400_naming_them(body, param):
    with pytest.raises(InvalidRequest) as refused:
        wire(**body)
    assert refused.value.status == 400 and refused.value.param == param and param in refused.value.message


def test_neutral_values_of_fields_without_an_equivalent_are_accepted():
    sent = wire(frequency_penalty=0, presence_penalty=0, logprobs=False, logit_bias={}, modalities=["text"], n=1)
    assert not {"frequency_penalty", "presence_penalty", "logprobs", "logit_bias", "modalities", "n"} & set(sent)


def test_new_api_versions_refuse_temperature():
    newer = ProviderWire("https://api.anthropic.test", anthropic_version="2026-10-21")
    with pytest.raises(InvalidRequest) as refused:
        ANTHROPIC.build_request({"max_tokens": 10, "messages": [USER], "temperature": 0.5}, "claude-x", newer)
    assert refused.value.param == "temperature"


def test_url_and_headers():
    provider = ProviderWire("https://api.anthropic.test/", api_key="sk-test", anthropic_beta=("a-1", "b-2"),
                            extra_headers={"x-team": "t"})
    request = ANTHROPIC.build_request({"max_tokens": 10, "messages": [USER]}, "claude-x", provider)
    assert (request.method, request.url) == ("POST", "https://api.anthropic.test/v1/messages")
    assert request.headers == {"x-api-key": "sk-test", "anthropic-version": "2023-06-01", "anthropic-beta": "a-1,b-2",
                               "content-type": "application/json", "x-team": "t"}


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("model_context_window_exceeded", "length")])
def test_stop_reasons(stop_reason, finish):
    answer = fake_anthropic.message([{"type": "text", "text": "x"}], stop_reason)
    assert ANTHROPIC.parse_response(200, answer)["choices"][0]["finish_reason"] == finish


def test_response_with_thinking_tool_use_and_cache_usage():
    answer = fake_anthropic.message([{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                                     {"type": "text", "text": "Let me look."},
                                     {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
                                    "tool_use", cached=100, written=20)
    completion = ANTHROPIC.parse_response(200, answer)
    message = completion["choices"][0]["message"]
    assert (message["content"], message["reasoning"]) == ("Let me look.", "hmm")
    assert message["reasoning_details"][0]["signature"] == "sig"
    assert message["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    assert completion["usage"]["prompt_tokens"] == 12 + 100 + 20 and completion["usage"]["completion_tokens"] == 9
    assert completion["usage"]["prompt_tokens_details"] == {"cached_tokens": 100, "cache_write_tokens": 20}


def feed_all(events: list[tuple[str | None, Any]]) -> list[dict[str, Any]]:
    """Every chunk a translator gives for an event sequence, its finish included."""
    translator = ANTHROPIC.stream_translator("claude-x")
    chunks = [chunk for name, data in events for chunk in translator.feed(SseEvent(json.dumps(data), name))]
    return chunks + translator.finish()


def test_stream_of_thinking_text_and_a_tool_call_in_pieces():
    answer = fake_anthropic.message([{"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"},
                                     {"type": "text", "text": "Checking."},
                                     {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"city": "Paris"}}],
                                    "tool_use", cached=100, written=20)
    chunks = feed_all(fake_anthropic.stream_events(answer).events)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(delta.get("reasoning", "") for delta in deltas) == "Let me think."
    assert "".join(delta.get("content", "") for delta in deltas) == "Checking."
    pieces = [call["function"]["arguments"] for delta in deltas for call in delta.get("tool_calls", [])]
    assert len(pieces) > 2 and json.loads("".join(pieces)) == {"city": "Paris"}
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks if chunk["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 132
    assert {chunk["id"] for chunk in chunks} == {"msg_fake01"}


def test_stream_error_event_and_early_end_raise():
    start = fake_anthropic.stream_events(fake_anthropic.message([{"type": "text", "text": "x"}])).events[:2]
    with pytest.raises(UpstreamStreamBroken, match="overloaded_error"):
        feed_all([*start, ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})])
    with pytest.raises(UpstreamStreamBroken, match="message_stop"):
        feed_all(start)


ERRORS = [
    (529, {}, "overloaded_error", ServiceUnavailable, 503, "1"),
    (529, {"retry-after": "30"}, "overloaded_error", ServiceUnavailable, 503, "30"),
    (429, {"retry-after": "7"}, "rate_limit_error", UpstreamRejected, 429, "7"),
    (400, {}, "invalid_request_error", UpstreamRejected, 400, None),
    (404, {}, "not_found_error", UpstreamRejected, 404, None),
    (401, {}, "authentication_error", UpstreamError, 502, None),
    (500, {}, "api_error", UpstreamError, 502, None),
]


@pytest.mark.parametrize(("status", "headers", "kind", "raised", "gateway_status", "retry_after"), ERRORS,
                         ids=[f"{case[0]}-{case[2]}" for case in ERRORS])
def test_errors(status, headers, kind, raised, gateway_status, retry_after):
    body = fake_anthropic.error(status, kind, "messages.0.content: bad").body
    error = ANTHROPIC.parse_error(status, headers, body).exception("claude")
    assert isinstance(error, raised) and (raised is ServiceUnavailable or type(error) is raised)  # or a subclass of 503
    assert error.status == gateway_status
    assert error.headers.get("Retry-After") == retry_after
    if raised is UpstreamRejected:
        assert error.message == "messages.0.content: bad" and error.code == kind
        assert error.type == ("rate_limit_error" if status == 429 else "invalid_request_error")


@pytest.fixture(scope="module")
def fake():
    with FakeAnthropic(api_key="sk-test") as running:
        yield running


def test_round_trip_json_with_cache_tokens(fake):
    provider = ProviderWire(fake.base_url, api_key="sk-test")
    body = {"max_tokens": 100, "messages": [{"role": "system", "content": [
        {"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}]}, USER]}
    completion = send(ANTHROPIC, body, provider)
    assert completion.choices[0].message.content == fake_anthropic.TEXT
    assert completion.usage.prompt_tokens == 132 and completion.usage.prompt_tokens_details.cached_tokens == 100
    assert fake.requests[-1].body["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_round_trip_stream_with_thinking_and_a_tool_call(fake):
    provider = ProviderWire(fake.base_url, api_key="sk-test")
    body = {"max_tokens": 4000, "messages": [USER], "tools": [TOOL], "reasoning_effort": "low", "stream": True}
    chunks = send(ANTHROPIC, body, provider)
    assert json.loads(streamed_arguments(chunks)[0]) == {"city": "Paris"}
    assert chunks[-2].choices[0].finish_reason == "tool_calls" and chunks[-1].usage.completion_tokens == 9
    assert "".join(getattr(chunk.choices[0].delta, "reasoning", "") or "" for chunk in chunks if chunk.choices)


def test_round_trip_tool_result(fake):
    provider = ProviderWire(fake.base_url, api_key="sk-test")
    first = send(ANTHROPIC, {"max_tokens": 100, "messages": [USER], "tools": [TOOL]}, provider)
    call = first.choices[0].message.tool_calls[0]
    history = [USER, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    chunks = send(ANTHROPIC, {"max_tokens": 100, "messages": history, "tools": [TOOL], "stream": True}, provider)
    assert streamed_text(chunks).startswith("The tool said")


def test_round_trip_errors(fake):
    provider = ProviderWire(fake.base_url, api_key="sk-test")
    body = {"max_tokens": 100, "messages": [USER]}
    fake.script.append(fake_anthropic.error(429, "rate_limit_error", "slow down", retry_after="7"))
    with pytest.raises(UpstreamRejected) as limited:
        send(ANTHROPIC, body, provider)
    assert limited.value.headers["Retry-After"] == "7"
    fake.script.append(fake_anthropic.error(529, "overloaded_error", "Overloaded"))
    with pytest.raises(ServiceUnavailable):
        send(ANTHROPIC, body, provider)
    with pytest.raises(UpstreamRejected) as refused:
        send(ANTHROPIC, {**body, "messages": [USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}]}, provider)
    assert refused.value.status == 400 and "tool_result" in refused.value.message
