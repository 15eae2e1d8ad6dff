"""The Azure adapter (and the OpenAI identity it extends): URLs, headers, content filters, errors; then the fake."""

from __future__ import annotations

import json

import pytest
import requests

from gateway.errors import ServiceUnavailable, UpstreamError, UpstreamRejected, UpstreamStreamBroken
from gateway.upstream.client import rejected_error
from gateway.upstream.providers import ProviderWire, adapter
from gateway.upstream.sse import SseEvent
from tests.fake_upstream import FakeUpstream, JsonReply, StreamReply, chat_chunk, chat_completion
from tests.provider_round_trip import send, streamed_text

AZURE, OPENAI = adapter("azure"), adapter("openai")
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10, "temperature": 0.3,
        "logprobs": True, "stream_options": {"include_usage": True}, "stream": True}
FILTERED = {"error": {"message": "The response was filtered due to the prompt triggering a content management policy.",
                      "type": None, "param": "prompt", "code": "content_filter", "status": 400,
                      "innererror": {"code": "ResponsibleAIPolicyViolation",
                                     "content_filter_result": {"hate": {"filtered": True, "severity": "high"}}}}}


def test_azure_deployment_url_api_version_and_key_header():
    provider = ProviderWire("https://res.openai.azure.com/", api_key="az-key", api_version="2024-10-21",
                            extra_headers={"x-ms-useragent": "gw"})
    request = AZURE.build_request(BODY, "my deployment", provider)
    assert request.url == ("https://res.openai.azure.com/openai/deployments/my%20deployment/chat/completions"
                           "?api-version=2024-10-21")
    assert request.headers == {"api-key": "az-key", "x-ms-useragent": "gw"} and request.stream
    assert request.json == {**BODY, "model": "my deployment"}  # OpenAI's wire, unchanged


def test_azure_default_api_version():
    request = AZURE.build_request(BODY, "d", ProviderWire("https://res.openai.azure.com"))
    assert request.url.endswith("?api-version=2024-10-21") and "api-key" not in request.headers


def test_openai_is_the_identity():
    request = OPENAI.build_request(BODY, "gpt-4o-2024", ProviderWire("http://up.test/v1", api_key="sk"))
    assert (request.url, request.headers) == ("http://up.test/v1/chat/completions", {"Authorization": "Bearer sk"})
    assert request.json == {**BODY, "model": "gpt-4o-2024"}
    answer = chat_completion()
    assert OPENAI.parse_response(200, answer) is answer


def test_content_filter_finishes_and_filter_results_are_kept():
    answer = chat_completion(prompt_filter_results=[{"prompt_index": 0, "content_filter_results": {}}])
    answer["choices"][0].update(finish_reason="content_filter", content_filter_results={"hate": {"filtered": True}})
    assert AZURE.parse_response(200, answer) == answer
    translator = AZURE.stream_translator("d")
    first = {"id": "", "object": "", "created": 0, "model": "", "choices": [],
             "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}
    chunks = [chunk for data in (first, chat_chunk("Hi"), chat_chunk(finish="content_filter"))
              for chunk in translator.feed(SseEvent(json.dumps(data)))]
    assert chunks[0]["prompt_filter_results"] and chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert translator.feed(SseEvent("[DONE]")) == [] and translator.finish() == []


def test_a_stream_that_never_finishes_raises():
    translator = OPENAI.stream_translator("m")
    translator.feed(SseEvent(json.dumps(chat_chunk("Hi"))))
    with pytest.raises(UpstreamStreamBroken):
        translator.finish()


ERRORS = [
    (400, {}, FILTERED, UpstreamRejected, 400, "content_filter", None),
    (429, {"Retry-After": "3"}, {"error": {"message": "Rate limit", "type": None, "code": "429"}}, UpstreamRejected, 429,
     "429", "3"),
    (401, {}, {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}}, UpstreamError, 502,
     "upstream_error", None),
    (503, {}, {"error": {"message": "busy"}}, UpstreamError, 502, "upstream_error", None),
]


@pytest.mark.parametrize(("status", "headers", "body", "raised", "gateway_status", "code", "retry_after"), ERRORS,
                         ids=[str(case[0]) for case in ERRORS])
def test_errors(status, headers, body, raised, gateway_status, code, retry_after):
    error = AZURE.parse_error(status, headers, body).exception("azure")
    assert type(error) is raised and (error.status, error.code) == (gateway_status, code)
    assert error.headers.get("Retry-After") == retry_after
    assert not isinstance(error, ServiceUnavailable)  # an OpenAI-compatible 503 stays a 502, as today


@pytest.fixture
def fake():
    running = FakeUpstream().start()
    yield running
    running.stop()


def test_round_trip_json_stream_and_content_filter(fake):
    provider = ProviderWire(fake.base_url.removesuffix("/v1"), api_key="az-key", api_version="2024-10-21")
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}
    assert send(AZURE, body, provider, "dep").choices[0].message.content == "Hello from upstream"
    path, _, headers = fake.requests[-1]
    assert path == "/openai/deployments/dep/chat/completions?api-version=2024-10-21" and headers["api-key"] == "az-key"
    fake.responder = lambda path, body: StreamReply([(0, chat_chunk("Hi")), (0, chat_chunk(finish="content_filter"))])
    chunks = send(AZURE, {**body, "stream": True}, provider, "dep")
    assert streamed_text(chunks) == "Hi" and chunks[-1].choices[0].finish_reason == "content_filter"
    fake.responder = lambda path, body: JsonReply(FILTERED, 400)
    with pytest.raises(UpstreamRejected) as refused:
        send(AZURE, body, provider, "dep")
    assert refused.value.code == "content_filter" and refused.value.status == 400


def upstream_response(status: int, body: object, headers: dict[str, str]) -> requests.Response:
    """A requests.Response as the shared client receives it."""
    response = requests.Response()
    response.status_code, response._content = status, json.dumps(body).encode()
    response.headers.update({"Content-Type": "application/json", **headers})
    return response


@pytest.mark.parametrize(("status", "headers", "body"), [case[:3] for case in ERRORS] + [
    (422, {}, {"error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": None}}),
    (500, {}, {"error": "boom"})], ids=lambda value: str(value) if isinstance(value, int) else "")
def test_openai_errors_become_what_the_shared_client_raises_today(status, headers, body):
    today = rejected_error(upstream_response(status, body, headers), "up")
    adapted = OPENAI.parse_error(status, headers, body).exception("up")
    fields = ("status", "type", "code", "param", "message", "headers", "metadata")
    assert type(adapted) is type(today)
    assert {name: getattr(adapted, name) for name in fields} == {name: getattr(today, name) for name in fields}
