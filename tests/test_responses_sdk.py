"""The official openai SDK against a live gateway: every object and event is valid OpenResponses."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import openresponses_types as spec
import pytest

from gateway.upstream.sse import SseDecoder
from tests.fake_upstream import JsonReply, StreamReply, chat_chunk, chat_completion
from tests.test_response_builder import check_stream, spec_json, validate_response
from tests.test_responses_api import PAID_MODEL


@pytest.fixture
def settings(make_settings):
    return make_settings(models=PAID_MODEL)


@pytest.fixture
def sdk(live_server, api_key) -> openai.OpenAI:
    with openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0, timeout=20) as client:
        yield client


def create_json(sdk: openai.OpenAI, **body: Any) -> tuple[dict[str, Any], Any]:
    """Create a response; the wire JSON (validated against the spec) and the SDK's parsed object."""
    raw = sdk.responses.with_raw_response.create(model="test-model", **body)
    data = raw.http_response.json()
    validate_response(data)
    return data, raw.parse()


def wire_events(sdk: openai.OpenAI, **body: Any) -> list[dict[str, Any]]:
    """A stream's events as sent on the wire, checked against the spec and the lifecycle."""
    with sdk.responses.with_streaming_response.create(model="test-model", stream=True, **body) as raw:
        decoder = SseDecoder()
        events = [event for chunk in raw.iter_bytes() for event in decoder.feed(chunk)]
    assert events[-1].data == "[DONE]"
    parsed = [json.loads(event.data) for event in events[:-1]]
    assert [event.event for event in events[:-1]] == [event["type"] for event in parsed]
    check_stream(parsed)
    return parsed


def test_create_json(sdk):
    data, response = create_json(sdk, input="Hello", instructions="Be brief.")
    assert response.status == "completed" and response.output_text == "Hello world"
    assert response.instructions == "Be brief." and response.usage.total_tokens == 18
    assert response.id == data["id"] and response.id.startswith("resp_")


def test_create_stream(sdk):
    wire = wire_events(sdk, input="Hello")
    events = list(sdk.responses.create(model="test-model", input="Hello", stream=True))
    assert [event.type for event in events] == [event["type"] for event in wire]
    assert events[-1].type == "response.completed"
    assert (
        "".join(event.delta for event in events if event.type == "response.output_text.delta")
        == "Hello world"
    )


def test_stream_helper(sdk):
    with sdk.responses.stream(model="test-model", input="Hello") as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert final.output_text == "Hello world"
    validate_response(sdk.responses.with_raw_response.retrieve(final.id).http_response.json())


def test_retrieve_input_items_and_delete(sdk):
    _, first = create_json(sdk, input=[{"role": "user", "content": f"m{index}"} for index in range(3)])
    _, second = create_json(sdk, input="next", previous_response_id=first.id)
    raw = sdk.responses.with_raw_response.retrieve(second.id)
    validate_response(raw.http_response.json())
    retrieved = raw.parse()
    assert retrieved.previous_response_id == first.id and retrieved.output_text == "Hello world"
    items = list(sdk.responses.input_items.list(first.id, limit=2, order="asc"))  # the SDK pages with `after`
    assert [item.content[0].text for item in items] == ["m0", "m1", "m2"]
    page = sdk.responses.input_items.with_raw_response.list(first.id).http_response.json()
    for item in page["data"]:
        spec_json(spec.Message, item)
    assert sdk.responses.delete(second.id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(second.id)


def test_chain_with_function_call_output(sdk, fake_upstream):
    call_chunk = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    }
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk(tool_calls=[call_chunk])), (0, chat_chunk(finish="tool_calls"))]
    )
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    _, first = create_json(sdk, input="Weather in Oslo?", tools=[tool])
    [call] = first.output
    assert call.type == "function_call" and call.call_id == "call_1"
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("Cold.")), (0, chat_chunk(finish="stop"))]
    )
    _, second = create_json(
        sdk,
        previous_response_id=first.id,
        tools=[tool],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "-5C"}],
    )
    assert second.output_text == "Cold."
    assert fake_upstream.bodies()[-1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "-5C",
    }


def test_incomplete_and_mid_stream_failure(sdk, fake_upstream):
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("cut")), (0, chat_chunk(finish="length"))]
    )
    _, response = create_json(sdk, input="long story", max_output_tokens=1)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    fake_upstream.responder = lambda path, body: StreamReply(
        [(0, chat_chunk("partial")), (0, {"error": {"message": "model crashed"}})], done=False
    )
    wire = wire_events(sdk, input="x")
    assert wire[-1]["type"] == "response.failed" and "error" in [event["type"] for event in wire]
    seen: list[Any] = []
    with pytest.raises(openai.APIError, match="model crashed"):
        seen.extend(sdk.responses.create(model="test-model", input="x", stream=True))
    assert seen[-1].type == "response.output_text.delta"  # the SDK raises on the `error` event


def test_errors_map_to_sdk_exceptions(sdk, fake_upstream):
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.responses.create(model="test-model", input="x", extra_body={"bogus": 1})
    assert bad.value.code == "unknown_parameter"
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.responses.create(model="test-model", input="x", previous_response_id="resp_missing")
    assert missing.value.code == "previous_response_not_found"
    with pytest.raises(openai.APIStatusError) as broke:
        sdk.responses.create(model="paid-model", input="x", stream=True)
    assert broke.value.status_code == 402
    assert fake_upstream.requests == []


def test_background_and_cancel(sdk, fake_upstream):
    queued = sdk.responses.create(model="test-model", input="x", background=True)
    assert queued.status in ("queued", "in_progress") and queued.background
    deadline = time.monotonic() + 10
    while (polled := sdk.responses.retrieve(queued.id)).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert polled.output_text == "Hello world"
    validate_response(sdk.responses.with_raw_response.retrieve(queued.id).http_response.json())
    fake_upstream.responder = lambda path, body: StreamReply([(0.05, chat_chunk("tick")) for _ in range(200)])
    slow = sdk.responses.create(model="test-model", input="x", background=True)
    cancelled = sdk.responses.cancel(slow.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.ConflictError):
        sdk.responses.cancel(queued.id)


def test_compact(sdk, fake_upstream):
    fake_upstream.responder = lambda path, body: JsonReply(chat_completion("A short summary."))
    raw = sdk.responses.with_raw_response.compact(
        model="test-model",
        input=[{"role": "user", "content": "Launch Tuesday."}, {"role": "assistant", "content": "Noted."}],
    )
    spec_json(spec.CompactResource, raw.http_response.json())
    compacted = raw.parse()
    assert compacted.object == "response.compaction"
    assert [item.type for item in compacted.output] == ["message", "compaction"]
    with pytest.raises(openai.BadRequestError):
        sdk.post("/responses/compact", body={"input": "no model"}, cast_to=object)
