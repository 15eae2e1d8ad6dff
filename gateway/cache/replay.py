"""A cached answer replayed as a stream: chat chunks, legacy completion chunks or Anthropic Messages events.

Pure: the caller passes the fresh ids and time, and frames the results (SSE `data:` lines, or `event:`
and `data:` for Messages). Each text arrives as one delta: a replay has nothing to wait for, and a
client that accumulates deltas gets back exactly the stored answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from gateway.cache.entry import CachedAnswer

REASONING_FIELDS = ("reasoning_content", "reasoning", "reasoning_details")  # as the upstream named them
TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


def replay_chat_chunks(answer: CachedAnswer, generation_id: str, created: int,
                       include_usage: bool = True) -> list[dict[str, Any]]:
    """`chat.completion.chunk`s of a stored chat completion: per choice its role, reasoning, content, refusal and
    tool calls (with their index), then its finish_reason; last, when `include_usage`, a usage chunk."""
    completion = answer.answer
    head = {"id": generation_id, "object": "chat.completion.chunk", "created": created,
            "model": completion.get("model") or answer.model}
    if completion.get("system_fingerprint"):
        head["system_fingerprint"] = completion["system_fingerprint"]
    chunks = []
    for choice in completion.get("choices") or []:
        index = choice.get("index", 0)
        for delta, logprobs in _message_deltas(choice.get("message") or {}, choice.get("logprobs")):
            chunks.append({**head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                                "finish_reason": None}]})
        chunks.append({**head, "choices": [{"index": index, "delta": {}, "logprobs": None,
                                            "finish_reason": choice.get("finish_reason") or "stop"}]})
    if include_usage and completion.get("usage"):
        chunks.append({**head, "choices": [], "usage": completion["usage"]})
    return chunks


def _message_deltas(message: Mapping[str, Any], logprobs: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    """The deltas that rebuild `message`; the choice's logprobs ride on its content delta."""
    yield {"role": message.get("role") or "assistant", "content": ""}, None
    for field in REASONING_FIELDS:
        if message.get(field):
            yield {field: message[field]}, None
    if message.get("content"):
        yield {"content": message["content"]}, logprobs
    elif logprobs:
        yield {}, logprobs
    if message.get("refusal"):
        yield {"refusal": message["refusal"]}, None
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        yield {"tool_calls": [{"index": index, "id": call.get("id"), "type": call.get("type") or "function",
                               "function": {"name": function.get("name"),
                                            "arguments": function.get("arguments") or ""}}]}, None


def replay_completion_chunks(answer: CachedAnswer, generation_id: str, created: int,
                             include_usage: bool = True) -> list[dict[str, Any]]:
    """`text_completion` chunks of a stored legacy completion: per choice its text, then its finish_reason; last,
    when `include_usage`, a usage chunk."""
    completion = answer.answer
    head = {"id": generation_id, "object": "text_completion", "created": created,
            "model": completion.get("model") or answer.model}
    chunks = []
    for choice in completion.get("choices") or []:
        index = choice.get("index", 0)
        if choice.get("text"):
            chunks.append({**head, "choices": [{"text": choice["text"], "index": index,
                                                "logprobs": choice.get("logprobs"), "finish_reason": None}]})
        chunks.append({**head, "choices": [{"text": "", "index": index, "logprobs": None,
                                            "finish_reason": choice.get("finish_reason") or "stop"}]})
    if include_usage and completion.get("usage"):
        chunks.append({**head, "choices": [], "usage": completion["usage"]})
    return chunks


def replay_message_events(answer: CachedAnswer, message_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Anthropic stream events (name, data) of a stored Messages answer: message_start, each content block
    (start, deltas, stop), message_delta with the stop reason and the usage, message_stop."""
    message = answer.answer
    usage = dict(message.get("usage") or {})
    start = {**{key: value for key, value in message.items() if key not in ("content", "usage")}, "id": message_id,
             "type": "message", "role": message.get("role") or "assistant", "model": message.get("model") or
             answer.model, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 0}}
    events = [_event("message_start", message=start)]
    for index, block in enumerate(message.get("content") or []):
        events += _block_events(index, block)
    events.append(_event("message_delta", delta={"stop_reason": message.get("stop_reason") or "end_turn",
                                                 "stop_sequence": message.get("stop_sequence")}, usage=usage))
    events.append(_event("message_stop"))
    return events


def _block_events(index: int, block: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One content block's start, deltas and stop; blocks without a delta form arrive whole in their start."""
    kind = block.get("type")
    deltas: list[dict[str, Any]] = []
    if kind == "text":
        opened = {"type": "text", "text": ""} | ({"citations": []} if block.get("citations") else {})
        deltas = [{"type": "text_delta", "text": block.get("text") or ""}]
        deltas += [{"type": "citations_delta", "citation": citation} for citation in block.get("citations") or []]
    elif kind == "thinking":
        opened = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking") or ""}]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind in TOOL_BLOCKS:
        opened = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": ""},
                  {"type": "input_json_delta", "partial_json": json.dumps(block.get("input") or {})}]
    else:
        opened = dict(block)
    return [_event("content_block_start", index=index, content_block=opened),
            *(_event("content_block_delta", index=index, delta=delta) for delta in deltas),
            _event("content_block_stop", index=index)]


def _event(name: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return name, {"type": name, **fields}
