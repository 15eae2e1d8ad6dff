"""Anthropic Messages as a client dialect: request -> chat, chat answer -> message and stream events, errors.

Tables for the pure translation; the official `anthropic` SDK, reading from a loopback server, checks
that the message JSON, the event stream and every error status are what it accepts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import pytest

from gateway import errors
from gateway.dialects.anthropic_messages import chat_request, count_tokens
from gateway.dialects.anthropic_replies import STOP_REASONS, anthropic_usage, error_event, message_of, ping
from gateway.dialects.anthropic_stream import MessagesStreamEncoder
from gateway.loop.failure import Failure
from gateway.upstream.providers.anthropic_answer import FINISH_REASONS, usage_of
from gateway.upstream.providers.base import chunk, completion, usage

USER = {"role": "user", "content": "Hi"}
BASE = {"model": "m", "max_tokens": 64, "messages": [USER]}
CHAT_USER = {"role": "user", "content": [{"type": "text", "text": "Hi"}]}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}

REQUESTS = [
    ("minimal", {}, {"messages": [CHAT_USER]}),
    ("a system turn mid-conversation (Claude Code sends one)",
     {"messages": [USER, {"role": "system", "content": "Agents: none."}, USER]},
     {"messages": [CHAT_USER, {"role": "system", "content": "Agents: none."}, CHAT_USER]}),
    ("system string", {"system": "Be brief."}, {"messages": [{"role": "system", "content": "Be brief."}, CHAT_USER]}),
    ("system blocks", {"system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
     {"messages": [{"role": "system", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
                   CHAT_USER]}),
    ("base64 image", {"messages": [{"role": "user", "content": [{"type": "image", "source": PNG},
                                                               {"type": "text", "text": "What?"}]}]},
     {"messages": [{"role": "user", "content": [
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
         {"type": "text", "text": "What?"}]}]}),
    ("url image", {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]},
     {"messages": [{"role": "user", "content": [
         {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
    ("tool round trip", {"messages": [
        USER,
        {"role": "assistant", "content": [{"type": "text", "text": "Looking."},
                                          {"type": "tool_use", "id": "toolu_1", "name": "weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                                     {"type": "text", "text": "And?"}]}]},
     {"messages": [CHAT_USER,
                   {"role": "assistant", "content": "Looking.", "tool_calls": [
                       {"id": "toolu_1", "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
                   {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
                   {"role": "user", "content": [{"type": "text", "text": "And?"}]}]}),
    ("tool result blocks and is_error", {"messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": True,
                                      "content": [{"type": "text", "text": "boom"}, {"type": "text", "text": "!"}]}]}]},
     {"messages": [{"role": "assistant", "content": None, "tool_calls": [
         {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "t", "content": "Error: boom\n!"}]}),
    ("tools and tool_choice any", {
        "tools": [{"name": "f", "description": "F.", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
     {"messages": [CHAT_USER], "tools": [{"type": "function", "function": {
         "name": "f", "parameters": {"type": "object"}, "description": "F."}}],
      "tool_choice": "required", "parallel_tool_calls": False}),
    ("tool_choice auto", {"tool_choice": {"type": "auto"}}, {"messages": [CHAT_USER], "tool_choice": "auto"}),
    ("tool_choice none", {"tool_choice": {"type": "none"}}, {"messages": [CHAT_USER], "tool_choice": "none"}),
    ("tool_choice tool", {"tool_choice": {"type": "tool", "name": "f"}},
     {"messages": [CHAT_USER], "tool_choice": {"type": "function", "function": {"name": "f"}}}),
    ("sampling, stops, user, stream", {"temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"],
                                       "metadata": {"user_id": "u-1"}, "stream": True},
     {"messages": [CHAT_USER], "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "user": "u-1", "stream": True}),
    ("thinking budget", {"thinking": {"type": "enabled", "budget_tokens": 5000}},
     {"messages": [CHAT_USER], "reasoning_effort": "medium"}),
    ("thinking disabled", {"thinking": {"type": "disabled"}}, {"messages": [CHAT_USER]}),
    ("output_config effort", {"output_config": {"effort": "max"}},
     {"messages": [CHAT_USER], "reasoning_effort": "xhigh"}),
    ("strict tool", {"tools": [{"type": "custom", "name": "f", "input_schema": {"type": "object"}, "strict": True}]},
     {"messages": [CHAT_USER], "tools": [{"type": "function", "function": {
         "name": "f", "parameters": {"type": "object"}, "strict": True}}]}),
    ("structured output", {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
     {"messages": [CHAT_USER], "response_format": {"type": "json_schema", "json_schema": {
         "name": "output", "schema": {"type": "object"}, "strict": True}}}),
]


@pytest.mark.parametrize(("name", "extra", "expected"), REQUESTS, ids=[case[0] for case in REQUESTS])
def test_request_translates_to_chat(name: str, extra: dict[str, Any], expected: dict[str, Any]) -> None:
    request = chat_request({**BASE, **extra})
    assert request.body == {"model": "m", "max_tokens": 64, **expected}
    assert request.dropped == []


DROPS = [
    ("top_k", {"top_k": 5}, ["top_k"]),
    ("thinking blocks", {"messages": [USER, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hm", "signature": "sig"}, {"type": "redacted_thinking", "data": "x"},
        {"type": "text", "text": "Hello"}]}, USER]}, ["thinking", "redacted_thinking"]),
    ("cache_control", {"system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}]},
     ["cache_control"]),
    ("tool cache_control", {"tools": [{"name": "f", "input_schema": {}, "cache_control": {"type": "ephemeral"}}]},
     ["cache_control"]),
    ("account-side fields", {"cache_control": {"type": "ephemeral"}, "speed": "fast", "service_tier": "auto"},
     ["cache_control", "service_tier", "speed"]),
    ("context_management (Claude Code sends it)",
     {"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}}, ["context_management"]),
]


@pytest.mark.parametrize(("name", "extra", "dropped"), DROPS, ids=[case[0] for case in DROPS])
def test_what_chat_cannot_take_is_dropped_and_named(name: str, extra: dict[str, Any], dropped: list[str]) -> None:
    request = chat_request({**BASE, **extra})
    assert request.dropped == dropped
    assert "top_k" not in request.body and "thinking" not in json.dumps(request.body["messages"])


REFUSALS = [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"model": ""}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [USER, {"role": "system", "content": [{"type": "image", "source": PNG}]}]},
     "messages[1].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": PNG}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages[0].content[0].source"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({"thinking": {"type": "enabled"}}, "thinking"),
    ({"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}, "mcp_servers"),
    ({"frequency_penalty": 1}, "frequency_penalty"),
    ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
]


@pytest.mark.parametrize(("extra", "param"), REFUSALS, ids=[case[1] for case in REFUSALS])
def test_untranslatable_requests_are_400_naming_the_field(extra: dict[str, Any], param: str) -> None:
    body = {key: value for key, value in {**BASE, **extra}.items() if value is not None}
    with pytest.raises(errors.InvalidRequest) as raised:
        chat_request(body)
    assert (raised.value.status, raised.value.param) == (400, param)
    assert errors.render_error(raised.value, errors.ANTHROPIC)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("budget", "effort"), [(1024, "minimal"), (1025, "low"), (8192, "medium"),
                                                (20000, "high"), (32768, "xhigh"), (64000, "xhigh")])
def test_thinking_budget_becomes_the_least_effort_that_covers_it(budget: int, effort: str) -> None:
    body = {**BASE, "thinking": {"type": "enabled", "budget_tokens": budget}}
    assert chat_request(body).body["reasoning_effort"] == effort


def test_count_tokens_estimates_the_translated_request() -> None:
    small = count_tokens({"model": "m", "messages": [USER]})
    large = count_tokens({"model": "m", "system": "x" * 400, "messages": [USER]})
    assert small["input_tokens"] > 0 and large["input_tokens"] >= small["input_tokens"] + 100


def test_stop_reasons_invert_the_adapters_finish_reasons() -> None:
    assert STOP_REASONS == {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                            "content_filter": "refusal"}
    assert all(FINISH_REASONS[stop] == finish for finish, stop in STOP_REASONS.items())


def test_usage_inverts_the_adapters_usage() -> None:
    canonical = usage(130, 20, cached=100, cache_write=10)
    assert anthropic_usage(canonical) == {"input_tokens": 20, "output_tokens": 20,
                                          "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100}
    assert usage_of(anthropic_usage(canonical)) == canonical


def chat_answer(message: dict[str, Any], finish: str, **choice: Any) -> dict[str, Any]:
    """A canonical completion with one choice."""
    body = completion("chatcmpl-1", "up", message, finish, usage(12, 5))
    body["choices"][0].update(choice)
    return body


ANSWERS = [
    ("text", chat_answer({"role": "assistant", "content": "Hello"}, "stop"),
     [{"type": "text", "text": "Hello"}], "end_turn", None),
    ("length", chat_answer({"role": "assistant", "content": "Hel"}, "length"),
     [{"type": "text", "text": "Hel"}], "max_tokens", None),
    ("refusal", chat_answer({"role": "assistant", "content": ""}, "content_filter"), [], "refusal", None),
    ("stop sequence named by the upstream", chat_answer({"role": "assistant", "content": "a"}, "stop",
                                                        stop_reason="END"),
     [{"type": "text", "text": "a"}], "stop_sequence", "END"),
    ("tool use", chat_answer({"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]}, "tool_calls"),
     [{"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": 1}}], "tool_use", None),
    ("reasoning", chat_answer({"role": "assistant", "content": "4", "reasoning": "2+2"}, "stop"),
     [{"type": "thinking", "thinking": "2+2", "signature": ""}, {"type": "text", "text": "4"}], "end_turn", None),
]


@pytest.mark.parametrize(("name", "answer", "content", "stop_reason", "stop_sequence"), ANSWERS,
                         ids=[case[0] for case in ANSWERS])
def test_chat_answer_becomes_a_message(name: str, answer: dict[str, Any], content: list[dict[str, Any]],
                                       stop_reason: str, stop_sequence: str | None) -> None:
    message = message_of(answer, "claude-like", stop_sequences=["END"])
    assert (message["content"], message["stop_reason"], message["stop_sequence"]) == (content, stop_reason,
                                                                                       stop_sequence)
    assert message["usage"] == {"input_tokens": 12, "output_tokens": 5, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0}
    parsed = anthropic.types.Message.model_validate(message)
    assert parsed.id.startswith("msg_") and parsed.model == "claude-like" and parsed.type == "message"


class Loopback(BaseHTTPRequestHandler):
    """Answers every POST with the server's `reply`: (status, content type, body bytes)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, content_type, body = self.server.reply  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def loopback() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Loopback)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def sdk(server: ThreadingHTTPServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{server.server_address[1]}", api_key="k", max_retries=0)


def encoded(chunks: list[dict[str, Any]], stop_sequences: tuple[str, ...] = ()) -> bytes:
    """The encoder's whole stream for these chunks, with a ping in the middle."""
    encoder = MessagesStreamEncoder("claude-like", input_tokens=9, stop_sequences=stop_sequences)
    frames = [frame for piece in chunks for frame in encoder.feed(piece)]
    return b"".join([*frames[:1], ping(), *frames[1:], *encoder.finish()])


def piece(delta: dict[str, Any] | None, finish: str | None = None, usage_: dict[str, Any] | None = None,
          **choice: Any) -> dict[str, Any]:
    body = chunk("chatcmpl-1", "up", delta, finish, usage_)
    if choice:
        body["choices"][0].update(choice)
    return body


TOOL_START = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}
STREAMS = [
    ("text", [piece({"role": "assistant", "content": ""}), piece({"content": "Hel"}), piece({"content": "lo"}),
              piece({}, "stop"), piece(None, usage_=usage(12, 2))],
     [{"type": "text", "text": "Hello"}], "end_turn", None),
    ("thinking then text", [piece({"reasoning": "Let me "}), piece({"reasoning": "see.", "reasoning_details": [
        {"type": "reasoning.text", "text": "", "signature": "sig-1"}]}), piece({"content": "4"}),
                            piece({}, "stop"), piece(None, usage_=usage(12, 2))],
     [{"type": "thinking", "thinking": "Let me see.", "signature": "sig-1"}, {"type": "text", "text": "4"}],
     "end_turn", None),
    ("text then two tools", [
        piece({"content": "Checking."}), piece({"tool_calls": [TOOL_START]}),
        piece({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        piece({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        piece({"tool_calls": [{**TOOL_START, "index": 1, "id": "call_2", "function": {
            "name": "time", "arguments": "{}"}}]}),
        piece({}, "tool_calls"), piece(None, usage_=usage(12, 2))],
     [{"type": "text", "text": "Checking."},
      {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}},
      {"type": "tool_use", "id": "call_2", "name": "time", "input": {}}], "tool_use", None),
    ("stop sequence", [piece({"content": "a"}), piece({}, "stop", stop_reason="END"),
                       piece(None, usage_=usage(12, 2))],
     [{"type": "text", "text": "a"}], "stop_sequence", "END"),
]


@pytest.mark.parametrize(("name", "chunks", "content", "stop_reason", "stop_sequence"), STREAMS,
                         ids=[case[0] for case in STREAMS])
def test_stream_events_are_accumulated_by_the_sdk(loopback: ThreadingHTTPServer, name: str,
                                                  chunks: list[dict[str, Any]], content: list[dict[str, Any]],
                                                  stop_reason: str, stop_sequence: str | None) -> None:
    loopback.reply = (200, "text/event-stream", encoded(chunks, ("END",)))  # type: ignore[attr-defined]
    with sdk(loopback).messages.stream(model="claude-like", max_tokens=64, messages=[USER]) as stream:
        kinds = [event.type for event in stream if event.type in ("message_start", "message_delta", "message_stop")]
        final = stream.get_final_message()
    assert kinds == ["message_start", "message_delta", "message_stop"]
    assert [block.model_dump(exclude_none=True) for block in final.content] == content
    assert (final.stop_reason, final.stop_sequence) == (stop_reason, stop_sequence)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 2)


def test_stream_block_events_are_in_order() -> None:
    frames = encoded(STREAMS[2][1]).decode().split("\n\n")
    names = [frame.split("\n")[0].removeprefix("event: ") for frame in frames if frame]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
                     "message_stop"]


def test_a_stream_that_fails_midway_ends_with_an_error_event(loopback: ThreadingHTTPServer) -> None:
    encoder = MessagesStreamEncoder("claude-like")
    failure = Failure.of(errors.ServiceUnavailable("Upstream is overloaded."))
    loopback.reply = (200, "text/event-stream",  # type: ignore[attr-defined]
                      b"".join([*encoder.feed(piece({"content": "Hel"})), error_event(failure)]))
    with pytest.raises(anthropic.APIStatusError) as raised, \
            sdk(loopback).messages.stream(model="m", max_tokens=64, messages=[USER]) as stream:
        stream.get_final_message()
    assert raised.value.body == {"type": "error", "error": {"type": "overloaded_error",
                                                            "message": "Upstream is overloaded."}}


ERRORS = [
    (errors.InvalidRequest("bad"), 400, anthropic.BadRequestError, "invalid_request_error"),
    (errors.AuthenticationFailed("who?"), 401, anthropic.AuthenticationError, "authentication_error"),
    (errors.InsufficientBalance("empty"), 402, anthropic.APIStatusError, "billing_error"),
    (errors.PermissionDenied("no"), 403, anthropic.PermissionDeniedError, "permission_error"),
    (errors.ModelNotFound("which?"), 404, anthropic.NotFoundError, "not_found_error"),
    (errors.BodyTooLarge("big"), 413, anthropic.APIStatusError, "request_too_large"),
    (errors.RateLimited("slow down"), 429, anthropic.RateLimitError, "rate_limit_error"),
    (errors.GatewayError("oops"), 500, anthropic.InternalServerError, "api_error"),
    (errors.UpstreamTimeout("late"), 504, anthropic.InternalServerError, "api_error"),
    (errors.ServiceUnavailable("busy"), 529, anthropic.InternalServerError, "overloaded_error"),
]


@pytest.mark.parametrize(("error", "status", "sdk_error", "kind"), ERRORS, ids=[case[3] + str(case[1])
                                                                               for case in ERRORS])
def test_errors_reach_the_sdk_as_its_typed_errors(loopback: ThreadingHTTPServer, error: errors.GatewayError,
                                                  status: int, sdk_error: type[Exception], kind: str) -> None:
    assert errors.status_in(error, errors.ANTHROPIC) == status
    body = json.dumps(errors.render_error(Failure.of(error), errors.ANTHROPIC)).encode()
    loopback.reply = (status, "application/json", body)  # type: ignore[attr-defined]
    with pytest.raises(sdk_error) as raised:
        sdk(loopback).messages.create(model="m", max_tokens=64, messages=[USER])
    assert raised.value.status_code == status  # type: ignore[attr-defined]
    assert raised.value.body == {"type": "error", "error": {"type": kind, "message": error.message}}  # type: ignore[attr-defined]


def test_messages_paths_answer_in_anthropics_dialect(client) -> None:
    for path in ("/v1/messages", "/api/v1/messages/count_tokens"):
        answer = client.post(path, json={})
        assert answer.status_code == 401
        assert answer.get_json()["type"] == "error"
        assert answer.get_json()["error"]["type"] == "authentication_error"
    assert client.post("/v1/chat/completions", json={}).get_json()["error"]["type"] == "authentication_error"
    assert "type" not in client.post("/v1/chat/completions", json={}).get_json()
