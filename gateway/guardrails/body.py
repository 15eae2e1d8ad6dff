"""Every text a model will read in a request body, mapped through a function (pure, copy on write).

Chat `messages` (string content, text parts, tool results), legacy `prompt`, embeddings and
Responses `input` (strings, items, their content parts, function call outputs), Responses
`instructions`, Anthropic `system` and `messages` (text blocks, tool_result content), an image or
transcription `prompt`, speech `input`, rerank's `query` and `documents` (every string in them), and
the MCP hub's `tools/call` `arguments` (every string in them). What is unchanged is returned as is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TEXT_PART_TYPES = ("text", "input_text", "output_text")
TEXT_KEYS = ("messages", "prompt", "input", "instructions", "system")
EVERY_STRING_KEYS = {"tools/call": ("arguments",), "rerank": ("query", "documents")}  # all their strings are read
Mapper = Callable[[str], str]


def map_texts(endpoint: str, body: dict[str, Any], fn: Mapper) -> dict[str, Any]:
    """The body with fn applied to each text the model reads (the same object when nothing changed)."""
    every_string_keys = EVERY_STRING_KEYS.get(endpoint)
    keys = every_string_keys or TEXT_KEYS
    changed = {}
    for key in keys:
        if key in body:
            value = map_value(body[key], fn, every_string=every_string_keys is not None)
            if value is not body[key]:
                changed[key] = value
    return {**body, **changed} if changed else body


def map_value(value: Any, fn: Mapper, every_string: bool = False) -> Any:
    """A string, a list of strings or parts, or a message/item: fn over its texts."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        items = [map_value(item, fn, every_string) for item in value]
        return items if any(new is not old for new, old in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        return map_dict(value, fn, every_string)
    return value  # token ids, numbers, None


def map_dict(item: dict[str, Any], fn: Mapper, every_string: bool) -> dict[str, Any]:
    """A message, an item or a part: its content, its text (text parts), its output (tool results)."""
    if every_string:
        keys = tuple(item)
    elif item.get("type") in TEXT_PART_TYPES:
        keys = ("text",)
    else:
        keys = ("content", "output") if item.get("type") != "image_url" else ()
    changed = {}
    for key in keys:
        if key in item:
            value = map_value(item[key], fn, every_string)
            if value is not item[key]:
                changed[key] = value
    return {**item, **changed} if changed else item
