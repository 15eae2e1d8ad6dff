"""The prepared request: a pure function from the client's body and the settings to what the upstream gets."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.accounting.tokens import estimate_prompt_tokens, hold_prompt_tokens
from gateway.config import ModelSettings, ProviderSettings
from gateway.upstream.prepared import prepare, prepare_candidates
from gateway.upstream.routing import Route

PLAIN = ProviderSettings(base_url="http://upstream/v1")
LLAMA_CPP = ProviderSettings(base_url="http://upstream/v1", text_content=True, empty_tool_call_content=True,
                             tool_choice_required=False)
MODEL = ModelSettings(provider="fake", upstream_model="up", max_output_tokens=100, system_prompt="Be brief.",
                      default_parameters={"temperature": 0.2})
ROUTE = Route.of("public", MODEL)
USER = {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}]}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}


@pytest.mark.parametrize(
    ("body", "provider", "stream", "sent"),
    [
        ({"model": "public", "models": ["public", "other"], "messages": [USER]}, PLAIN, False,
         {"model": "up", "messages": [{"role": "system", "content": "Be brief."}, USER], "temperature": 0.2,
          "max_tokens": 100}),
        ({"model": "public", "messages": [USER], "max_completion_tokens": 7, "temperature": 1, "stream": True},
         PLAIN, True,
         {"model": "up", "messages": [{"role": "system", "content": "Be brief."}, USER], "temperature": 1,
          "max_completion_tokens": 7, "stream": True, "stream_options": {"include_usage": True}}),
        ({"model": "public", "messages": [{"role": "system", "content": "Mine"}, USER,
                                          {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}],
          "tools": [TOOL], "tool_choice": "required", "max_output_tokens": 9, "stream": True}, LLAMA_CPP, False,
         {"model": "up", "messages": [{"role": "system", "content": "Mine"}, {"role": "user", "content": "hi\n[image_url]"},
                                      {"role": "assistant", "content": "", "tool_calls": [{"id": "c"}]}],
          "tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "f"}}, "temperature": 0.2,
          "max_tokens": 9, "stream": False}),
        ({"model": "public", "input": "text"}, PLAIN, False, {"model": "up", "input": "text"}),  # embeddings
    ],
)
def test_prepare_builds_the_exact_upstream_body(body: dict[str, Any], provider: ProviderSettings, stream: bool,
                                                 sent: dict[str, Any]) -> None:
    path = "embeddings" if "input" in body else "chat/completions"
    original = copy.deepcopy(body)
    prepared = prepare(ROUTE, path, body, provider, stream)
    assert prepared.body == sent
    assert body == original  # the client's body is never changed
    assert (prepared.path, prepared.stream, prepared.provider) == (path, stream, "fake")
    assert prepared.input_tokens == estimate_prompt_tokens(sent)
    assert prepared.held_input_tokens == hold_prompt_tokens(sent)


def test_the_output_cap_is_the_sent_cap_times_n_and_none_for_embeddings() -> None:
    chat = prepare(ROUTE, "chat/completions", {"messages": [USER], "max_tokens": 5, "n": 3}, PLAIN, False)
    assert (chat.body["max_tokens"], chat.output_tokens) == (5, 15)
    assert prepare(ROUTE, "embeddings", {"input": "x"}, PLAIN, False).output_tokens == 0


def test_each_fallback_candidate_is_prepared_with_its_own_model() -> None:
    costly = ModelSettings(provider="other", input_price_per_mtok=10.0, output_price_per_mtok=10.0,
                           max_output_tokens=1000)
    routes = [ROUTE, Route.of("costly", costly.model_copy(update={"upstream_model": "costly-up"}))]
    providers = {"fake": PLAIN, "other": PLAIN}
    first, second = prepare_candidates(routes, "chat/completions", {"models": ["public", "costly"],
                                                                    "messages": [USER]}, providers, False)
    assert (first.body["model"], first.body["max_tokens"], second.body["model"], second.body["max_tokens"]) == (
        "up", 100, "costly-up", 1000)
    assert "temperature" not in second.body and second.body["messages"] == [USER]
    assert second.estimate().hold > first.estimate().hold == 0  # the free model holds nothing
