"""The Gemini adapter: request translation, answers, streams and errors, table-driven; then against the fake."""

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
from tests import fake_gemini
from tests.fake_gemini import FakeGemini
from tests.provider_round_trip import send, streamed_arguments, streamed_text

GEMINI = adapter("gemini")
WIRE = ProviderWire("https://gemini.test", api_key="g-key")
PNG = "iVBORw0KGgo="
USER = {"role": "user", "content": "Hi"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": PARAMETERS}}
SIGNATURE = {"type": "reasoning.encrypted", "data": "c2ln", "id": "call_1", "format": "google-gemini-v1"}


def wire(**body: Any) -> dict[str, Any]:
    """The generateContent body for a chat body (max_tokens 100 unless given)."""
    return GEMINI.build_request({"max_tokens": 100, "messages": [USER], **body}, "gemini-x", WIRE).json


REQUESTS = [
    ("system instruction, roles, merged turns",
     {"messages": [{"role": "system", "content": "S"}, USER, {"role": "user", "content": "more"},
                   {"role": "assistant", "content": "Hello"}]},
     {"systemInstruction": {"parts": [{"text": "S"}]},
      "contents": [{"role": "user", "parts": [{"text": "Hi"}, {"text": "more"}]},
                   {"role": "model", "parts": [{"text": "Hello"}]}]}),
    ("inline images", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]},
     {"contents": [{"role": "user", "parts": [{"text": "What is it?"},
                                              {"inlineData": {"mimeType": "image/png", "data": PNG}}]}]}),
    ("function calls and responses matched by id and name, signatures sent back",
     {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [CALL, {**CALL, "id": "call_2"}],
                          "reasoning_details": [SIGNATURE]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                   {"role": "tool", "tool_call_id": "call_2", "content": "rainy"}]},
     {"contents": [{"role": "user", "parts": [{"text": "Hi"}]},
                   {"role": "model", "parts": [
                       {"functionCall": {"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "c2ln"},
                       {"functionCall": {"id": "call_2", "name": "get_weather", "args": {"city": "Paris"}}}]},
                   {"role": "user", "parts": [
                       {"functionResponse": {"id": "call_1", "name": "get_weather", "response": {"result": "sunny"}}},
                       {"functionResponse": {"id": "call_2", "name": "get_weather", "response": {"result": "rainy"}}}]}]}),
    ("generation config", {"max_completion_tokens": 77, "max_tokens": None, "temperature": 1.5, "top_p": 0.9,
                           "stop": ["END"]},
     {"generationConfig": {"maxOutputTokens": 77, "temperature": 1.5, "topP": 0.9, "stopSequences": ["END"]}}),
    ("function declarations in the schema subset",
     {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
         "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
         "properties": {"a": {"type": ["string", "null"]}, "b": {"const": "x"}, "c": {"$ref": "#/$defs/C"}},
         "$defs": {"C": {"type": "integer", "exclusiveMinimum": 0, "description": "C"}}}}}]},
     {"tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "object", "properties": {
         "a": {"type": "string", "nullable": True}, "b": {"enum": ["x"]}, "c": {"type": "integer", "description": "C"}}}}]}]}),
    ("required", {"tools": [TOOL], "tool_choice": "required"}, {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
    ("none", {"tools": [TOOL], "tool_choice": "none"}, {"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}),
    ("a named function", {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     {"toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}}),
    ("json_schema", {"response_format": {"type": "json_schema", "json_schema": {"schema": PARAMETERS}}},
     {"generationConfig": {"maxOutputTokens": 100, "responseMimeType": "application/json", "responseSchema": PARAMETERS}}),
    ("json_object", {"response_format": {"type": "json_object"}},
     {"generationConfig": {"maxOutputTokens": 100, "responseMimeType": "application/json"}}),
    ("reasoning effort as a thinking budget", {"reasoning_effort": "medium"},
     {"generationConfig": {"maxOutputTokens": 100, "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": True}}}),
    ("no reasoning", {"reasoning": {"effort": "none"}},
     {"generationConfig": {"maxOutputTokens": 100, "thinkingConfig": {"thinkingBudget": 0, "includeThoughts": False}}}),
]


@pytest.mark.parametrize(("body", "expected"), [case[1:] for case in REQUESTS], ids=[case[0] for case in REQUESTS])
def test_request_translation(body, expected):
    sent = wire(**body)
    assert {key: sent.get(key) for key in expected} == expected


REFUSALS = [
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://img.test/a.png"}}]}]},
     "messages[0].content[0]"),
    ({"n": 3}, "n"), ({"logit_bias": {"1": 2}}, "logit_bias"), ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"node": {"$ref": "#"}}}}}]}, "tools[0].function.parameters"),
    ({"reasoning_effort": "huge"}, "reasoning_effort"),
    ({"messages": [USER, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]}, "messages[1].tool_call_id"),
]


@pytest.mark.parametrize(("body", "param"), REFUSALS, ids=[case[1] for case in REFUSALS])
def test_untranslatable_fields_are_a_400_naming_them(body, param):
    with pytest.raises(InvalidRequest) as refused:
        wire(**body)
    assert refused.value.param == param and param in refused.value.message


def test_urls_and_headers():
    plain = GEMINI.build_request({"messages": [USER]}, "gemini-2.0-flash", WIRE)
    assert plain.url == "https://gemini.test/v1beta/models/gemini-2.0-flash:generateContent"
    assert plain.headers == {"content-type": "application/json", "x-goog-api-key": "g-key"}
    streamed = GEMINI.build_request({"messages": [USER], "stream": True}, "gemini-x",
                                    ProviderWire("https://gemini.test", api_version="v1"))
    assert streamed.url == "https://gemini.test/v1/models/gemini-x:streamGenerateContent?alt=sse" and streamed.stream


@pytest.mark.parametrize(("reason", "finish"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("OTHER", "stop")])
def test_finish_reasons(reason, finish):
    answer = fake_gemini.response([{"text": "x"}], reason)
    assert GEMINI.parse_response(200, answer)["choices"][0]["finish_reason"] == finish


def test_response_with_thoughts_a_function_call_and_usage():
    answer = fake_gemini.response([{"text": "hmm", "thought": True}, {"text": "Calling."},
                                   {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "c2ln"}],
                                  thoughts=5)
    completion = GEMINI.parse_response(200, answer)
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert (choice["message"]["content"], choice["message"]["reasoning"]) == ("Calling.", "hmm")
    call = choice["message"]["tool_calls"][0]
    assert call["function"] == {"name": "f", "arguments": '{"a": 1}'} and call["id"]
    assert choice["message"]["reasoning_details"][0]["id"] == call["id"]
    assert completion["usage"] == {"prompt_tokens": 12, "completion_tokens": 14, "total_tokens": 26,
                                   "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                                   "completion_tokens_details": {"reasoning_tokens": 5}}


def test_a_blocked_prompt_is_a_content_filter_finish():
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    choice = GEMINI.parse_response(200, blocked)["choices"][0]
    assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] == ""


def feed_all(events: list[tuple[str | None, Any]]) -> list[dict[str, Any]]:
    """Every chunk a translator gives for an event sequence, its finish included."""
    translator = GEMINI.stream_translator("gemini-x")
    chunks = [chunk for name, data in events for chunk in translator.feed(SseEvent(json.dumps(data), name))]
    return chunks + translator.finish()


def test_stream_of_thoughts_text_and_a_function_call():
    answer = fake_gemini.response([{"text": "Thinking it over.", "thought": True}, {"text": "Calling now."},
                                   {"functionCall": {"id": "fc-1", "name": "f", "args": {"a": 1}}}], thoughts=5)
    chunks = feed_all(fake_gemini.stream_of(answer).events)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(delta.get("reasoning", "") for delta in deltas) == "Thinking it over."
    assert "".join(delta.get("content", "") for delta in deltas) == "Calling now."
    calls = [call for delta in deltas for call in delta.get("tool_calls", [])]
    assert calls == [{"index": 0, "id": "fc-1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 14 and chunks[-1]["choices"] == []


def test_stream_errors_and_early_end_raise():
    with pytest.raises(UpstreamStreamBroken, match="overloaded"):
        feed_all([(None, {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})])
    with pytest.raises(UpstreamStreamBroken, match="finished"):
        feed_all([(None, fake_gemini.response([{"text": "x"}], None, final=False))])


ERRORS = [
    (429, fake_gemini.error(429, "Quota exceeded", retry_delay="6.5s"), UpstreamRejected, 429, "7"),
    (503, fake_gemini.error(503, "The model is overloaded."), ServiceUnavailable, 503, "1"),
    (400, fake_gemini.error(400, "Invalid JSON payload received."), UpstreamRejected, 400, None),
    (403, fake_gemini.error(403, "Permission denied."), UpstreamError, 502, None),
    (500, fake_gemini.error(500, "Internal error."), UpstreamError, 502, None),
]


@pytest.mark.parametrize(("status", "reply", "raised", "gateway_status", "retry_after"), ERRORS,
                         ids=[str(case[0]) for case in ERRORS])
def test_errors(status, reply, raised, gateway_status, retry_after):
    error = GEMINI.parse_error(status, reply.headers, reply.body).exception("gemini")
    assert isinstance(error, raised) and (raised is ServiceUnavailable or type(error) is raised)  # or a subclass of 503
    assert error.status == gateway_status
    assert error.headers.get("Retry-After") == retry_after
    if raised is UpstreamRejected:
        assert error.message == reply.body["error"]["message"] and error.code == reply.body["error"]["status"]


@pytest.fixture(scope="module")
def fake():
    with FakeGemini(api_key="g-key") as running:
        yield running


def test_round_trip_json_and_a_sanitized_schema(fake):
    provider = ProviderWire(fake.base_url, api_key="g-key")
    assert send(GEMINI, {"max_tokens": 50, "messages": [USER]}, provider).choices[0].message.content == fake_gemini.TEXT
    loose = {"type": "function", "function": {"name": "f", "parameters": {
        **PARAMETERS, "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}}}
    completion = send(GEMINI, {"max_tokens": 50, "messages": [USER], "tools": [loose]}, provider)
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage.prompt_tokens_details.cached_tokens == 4


def test_round_trip_stream_and_a_tool_result_with_its_signature(fake):
    provider = ProviderWire(fake.base_url, api_key="g-key")
    body = {"max_tokens": 50, "messages": [USER], "tools": [TOOL], "reasoning_effort": "low", "stream": True}
    chunks = send(GEMINI, body, provider)
    assert json.loads(streamed_arguments(chunks)[0]) == {"city": "Paris"}
    first = send(GEMINI, {**body, "stream": False}, provider).choices[0].message
    call = first.tool_calls[0]
    history = [USER, first.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    assert streamed_text(send(GEMINI, {**body, "messages": history}, provider)).startswith("The tool said")
    sent_call = fake.requests[-1].body["contents"][1]["parts"][0]
    assert sent_call["thoughtSignature"] == "c2lnLWZha2U=" and sent_call["functionCall"]["id"] == call.id


def test_round_trip_errors(fake):
    provider = ProviderWire(fake.base_url, api_key="g-key")
    fake.script.append(fake_gemini.error(429, "Quota exceeded", retry_delay="7s"))
    with pytest.raises(UpstreamRejected) as limited:
        send(GEMINI, {"max_tokens": 50, "messages": [USER]}, provider)
    assert limited.value.headers["Retry-After"] == "7"
    with pytest.raises(UpstreamError) as refused:  # the gateway's key, not the client's request: a 502
        send(GEMINI, {"max_tokens": 50, "messages": [USER]}, ProviderWire(fake.base_url, api_key="wrong"))
    assert refused.value.status == 502 and "credentials" in refused.value.message
