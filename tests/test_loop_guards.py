"""The tool loop with weak models: repeated calls, empty answers, a full context, a hard output cap."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from gateway.accounting.usage import Usage
from gateway.errors import UpstreamRejected
from gateway.loop.guards import (
    CONTEXT_FULL,
    REPEATED_MESSAGE,
    call_signature,
    capped_completion,
    capped_usage,
    overflows_context,
)
from gateway.upstream.prepared import required_as_accepted
from tests.fake_upstream import JsonReply, StreamReply, chat_completion
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.scripted_model import answer_chunks, tool_call_chunks, usage

PROFILE_ROUTE = "/api/v1/openai/acme/default/chat/completions"
ASK = {"model": "test-model", "messages": [{"role": "user", "content": "use tools"}], "tools": "auto"}
CONTEXT_ERROR = {"error": {"message": "This model's maximum context length is 2048 tokens. However, you requested "
                           "2300 tokens (2300 in the messages, 0 in the completion).", "type": "invalid_request_error",
                           "param": "messages", "code": "context_length_exceeded"}}


def function(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
def settings(make_settings):
    return make_settings(
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]}},
        profiles={"acme/default": {"mcp_servers": ["tools"]}},
        mcp={"tool_timeout_s": 5},
        providers={"llama": {"base_url": make_settings().providers["fake"].base_url, "streams_tool_calls": False,
                             "tool_choice_required": False}},
        models={"llama-model": {"provider": "llama", "upstream_model": "upstream-model"}},
    )


@pytest.fixture
def headers(make_key):
    return {"X-API-Key": make_key("acme-user", scope="acme")}


def tools_offered(body: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in body.get("tools") or []]


def tool_results(body: dict[str, Any]) -> list[str]:
    return [message["content"] for message in body["messages"] if message["role"] == "tool"]


@pytest.mark.parametrize("arguments,same", [
    (('{"a": 1, "b": [2]}', '{"b": [2], "a": 1}'), True),
    (('{"a": 1}', '{"a": 2}'), False),
    (("not json ", "not json"), True),
    (("", "{}"), True),
])
def test_call_signature_compares_arguments_as_values(arguments, same):
    assert (call_signature("f", arguments[0]) == call_signature("f", arguments[1])) is same


@pytest.mark.parametrize("reported,cap,expected", [
    (Usage(10, 5), 8, (Usage(10, 5), "stop")),
    (Usage(10, 12, reasoning_tokens=11), 8, (Usage(10, 8, reasoning_tokens=8), "length")),
    (Usage(10, 12), None, (Usage(10, 12), "stop")),
])
def test_capped_usage(reported, cap, expected):
    assert capped_usage(reported, "stop", cap) == expected


def test_capped_completion_cuts_the_text_and_drops_the_calls():
    completion = chat_completion("x" * 40, usage={"prompt_tokens": 3, "completion_tokens": 40, "total_tokens": 43})
    completion["choices"][0]["message"]["tool_calls"] = [{"id": "c", "type": "function",
                                                           "function": {"name": "f", "arguments": "{}"}}]
    capped = capped_completion(completion, 10)
    [choice] = capped["choices"]
    assert choice["message"] == {"role": "assistant", "content": "x" * 10} and choice["finish_reason"] == "length"
    assert capped["usage"] == {"prompt_tokens": 3, "completion_tokens": 10, "total_tokens": 13}
    assert capped_completion(completion, 40) is completion


@pytest.mark.parametrize("code,message,overflows", [
    ("context_length_exceeded", "too long", True),
    (None, "This model's maximum context length is 4096 tokens", True),
    (None, "Requested tokens (2100) exceed context window of 2048", True),
    (None, "messages: field required", False),
])
def test_overflows_context(code, message, overflows):
    assert overflows_context(UpstreamRejected(message, status=400, code=code)) is overflows


@pytest.mark.parametrize("tools,choice", [
    ([function("only")], {"type": "function", "function": {"name": "only"}}),
    ([function("a"), function("b")], "auto"),
    ([], "auto"),
])
def test_required_as_accepted(tools, choice):
    assert required_as_accepted(tools) == choice


@pytest.mark.parametrize("model,tools,sent", [
    ("llama-model", [function("only")], {"type": "function", "function": {"name": "only"}}),
    ("llama-model", [function("a"), function("b")], "auto"),
    ("test-model", [function("a"), function("b")], "required"),  # providers that accept it get it as is
])
def test_required_tool_choice_is_translated_for_llama_cpp_providers(client, headers, fake_upstream, model, tools,
                                                                     sent):
    answer = client.post("/v1/chat/completions", headers=headers, json={
        "model": model, "messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": "required"})
    assert answer.status_code == 200
    assert fake_upstream.bodies()[-1]["tool_choice"] == sent


def test_a_repeated_call_is_not_run_again_and_the_model_answers(client, headers, fake_upstream):
    def stubborn(path, body):  # calls the same tool with the same arguments whenever it may
        if "mcp__tools__echo" in tools_offered(body):
            return StreamReply([*tool_call_chunks([("mcp__tools__echo", {"text": "again"})]), (0, usage(20, 5))])
        return StreamReply([*answer_chunks("Done: " + " | ".join(tool_results(body))), (0, usage(20, 5))])

    fake_upstream.responder = stubborn
    answer = client.post(PROFILE_ROUTE, json=ASK, headers=headers)
    assert answer.status_code == 200, answer.json
    first, second, last = fake_upstream.bodies()
    assert first["tool_choice"] == "auto"  # said aloud when tools are offered
    assert tool_results(second) == ["again"]
    assert tool_results(last) == ["again", REPEATED_MESSAGE] and "tools" not in last
    message = answer.json["choices"][0]["message"]
    assert message["content"] == f"Done: again | {REPEATED_MESSAGE}" and len(message["tool_calls"]) == 1


def test_an_empty_answer_beside_tools_is_asked_again_without_them(client, headers, fake_upstream):
    def mute_with_tools(path, body):  # llama-cpp-python's automatic tool choice choosing "message"
        text = "" if body.get("tools") else "The answer."
        return StreamReply([*answer_chunks(text), (0, usage(20, 1))])

    fake_upstream.responder = mute_with_tools
    answer = client.post(PROFILE_ROUTE, json=ASK, headers=headers)
    assert answer.json["choices"][0]["message"]["content"] == "The answer."
    assert [bool(body.get("tools")) for body in fake_upstream.bodies()] == [True, False]
    assert answer.json["usage"]["completion_tokens"] == 2  # both turns are billed


def overflowing_after_one_call(path, body):
    if tool_results(body):
        return JsonReply(CONTEXT_ERROR, status=400)
    return StreamReply([*tool_call_chunks([("mcp__tools__echo", {"text": "long"})]), (0, usage(20, 5))])


def test_a_follow_up_turn_that_overflows_the_context_ends_the_chat_with_length(client, headers, fake_upstream):
    fake_upstream.responder = overflowing_after_one_call
    answer = client.post(PROFILE_ROUTE, json=ASK, headers=headers)
    assert answer.status_code == 200, answer.json
    assert answer.json["choices"][0]["finish_reason"] == "length"
    assert answer.json["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "mcp__tools__echo"


def test_a_follow_up_turn_that_overflows_the_context_ends_the_response_incomplete(client, headers, fake_upstream):
    fake_upstream.responder = overflowing_after_one_call
    answer = client.post("/v1/responses", headers=headers, json={
        "model": "test-model", "input": "use tools",
        "tools": [{"type": "mcp", "server_label": "tools", "require_approval": "never"}]})
    assert answer.status_code == 200, answer.json
    assert (answer.json["status"], answer.json["incomplete_details"]) == ("incomplete", {"reason": CONTEXT_FULL})


def test_a_first_turn_that_overflows_the_context_is_the_clients_400(client, headers, fake_upstream):
    fake_upstream.responder = lambda path, body: JsonReply(CONTEXT_ERROR, status=400)
    answer = client.post(PROFILE_ROUTE, json=ASK, headers=headers)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "context_length_exceeded"


def test_an_upstream_that_ignores_max_tokens_is_held_to_the_cap(client, headers, fake_upstream):
    def verbose(path, body):  # a fetched tool turn that answers in far more tokens than asked
        completion = chat_completion("word " * 40, usage={"prompt_tokens": 30, "completion_tokens": 40,
                                                          "total_tokens": 70})
        return JsonReply(completion)

    fake_upstream.responder = verbose
    answer = client.post(PROFILE_ROUTE, headers=headers, json={**ASK, "model": "llama-model", "max_tokens": 10})
    assert answer.status_code == 200, answer.json
    [choice] = answer.json["choices"]
    assert choice["finish_reason"] == "length" and choice["message"]["content"] == ("word " * 40)[:50]
    assert answer.json["usage"]["completion_tokens"] == 10
    assert json.loads(json.dumps(fake_upstream.bodies()[0]))["max_tokens"] == 10
