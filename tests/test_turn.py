"""Pure reading of one streamed model turn."""

from __future__ import annotations

from gateway.accounting.usage import Usage
from gateway.loop.events import FunctionCallDelta, ReasoningDelta, TextDelta
from gateway.loop.turn import TurnReader
from tests.fake_upstream import chat_chunk
from tests.scripted_model import tool_call_chunks, usage


def read(chunks, is_gateway_tool=lambda name: False):
    reader = TurnReader(is_gateway_tool=is_gateway_tool)
    events = [event for chunk in chunks for event in reader.feed(chunk)]
    return reader, events


def test_text_and_reasoning():
    reader, events = read([chat_chunk(reasoning_content="think"), chat_chunk("Hel"), chat_chunk("lo"),
                           chat_chunk(finish="stop"), usage(3, 4)])
    assert events == [ReasoningDelta("think"), TextDelta("Hel"), TextDelta("lo")]
    assert (reader.text, reader.reasoning, reader.finish_reason) == ("Hello", "think", "stop")
    assert reader.usage == Usage(3, 4)
    assert reader.assistant_message() == {"role": "assistant", "content": "Hello"}


def test_client_function_calls_stream_as_deltas():
    chunks = [chunk for _, chunk in tool_call_chunks([("lookup", {"q": "x"}), ("other", {})])]
    reader, events = read(chunks)
    assert events[0] == FunctionCallDelta(0, "call_0", "lookup", "")
    assert "".join(e.arguments for e in events if e.index == 0) == '{"q": "x"}'
    assert [call.name for call in reader.tool_calls()] == ["lookup", "other"]
    assert reader.finish_reason == "tool_calls"
    message = reader.assistant_message()
    assert message["content"] == "" and message["tool_calls"][0]["function"]["arguments"] == '{"q": "x"}'
    assert message["tool_calls"][1]["function"]["arguments"] == "{}"


def test_gateway_tool_calls_are_never_shown():
    chunks = [chunk for _, chunk in tool_call_chunks([("mcp__t__echo", {"text": "hi"}), ("client_fn", {})])]
    reader, events = read(chunks, is_gateway_tool=lambda name: name.startswith("mcp__"))
    assert {event.index for event in events} == {1}
    assert reader.tool_calls()[0].arguments == '{"text": "hi"}'


def test_other_choices_are_ignored_and_missing_ids_filled():
    chunk = chat_chunk(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": "{}"}}])
    chunk["choices"].append({"index": 1, "delta": {"content": "ignored"}, "finish_reason": None})
    reader, events = read([chunk])
    assert reader.text == "" and reader.tool_calls()[0].call_id == "call_0"
    assert events == [FunctionCallDelta(0, None, "f", "{}")]


def test_repeated_names_are_not_concatenated():
    parts = [{"index": 0, "id": "c", "function": {"name": "mcp__t__now", "arguments": piece}} for piece in ("{", "}")]
    reader, _ = read([chat_chunk(tool_calls=[part]) for part in parts], lambda name: True)
    assert (reader.tool_calls()[0].name, reader.tool_calls()[0].arguments) == ("mcp__t__now", "{}")
    split = [{"index": 0, "function": {"name": piece, "arguments": ""}} for piece in ("get_", "time")]
    reader, _ = read([chat_chunk(tool_calls=[part]) for part in split])
    assert reader.tool_calls()[0].name == "get_time"
