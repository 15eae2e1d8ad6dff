"""Reading the prepared OpenAI chat body the way every non-OpenAI provider must: parts, images, arguments."""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.upstream.providers.base import refuse

DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+)(?:;[\w=.+-]+)*;base64,(?P<data>.*)$", re.DOTALL)
# OpenAI chat fields no other provider has; sent anyway they would be dropped silently, so they are refused
NO_EQUIVALENT = ("logprobs", "top_logprobs", "logit_bias", "frequency_penalty", "presence_penalty", "seed",
                 "audio", "modalities", "prediction", "web_search_options", "functions", "function_call")
NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "top_logprobs": 0, "logit_bias": {}, "modalities": ["text"]}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def refuse_no_equivalent(body: dict[str, Any], provider: str) -> None:
    """Raise a 400 naming the first field this provider has no equivalent for (`n` above 1 included)."""
    for name in NO_EQUIVALENT:
        value = body.get(name)
        if not (value is None or value is False or (name in NEUTRAL and value == NEUTRAL[name])):
            raise refuse(name, f"{provider} has no equivalent of this parameter.")
    if body.get("n") not in (None, 1):
        raise refuse("n", f"{provider} returns one choice per request.")


def content_parts(content: Any) -> list[dict[str, Any]]:
    """A message's content as a list of parts (a string is one text part)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [part for part in content if isinstance(part, dict)]


def text_of(content: Any) -> str:
    """The text of a message's content, parts joined by newlines."""
    return "\n".join(str(part.get("text", "")) for part in content_parts(content) if part.get("type") == "text")


def image_url(part: dict[str, Any]) -> str:
    """The URL of an `image_url` part (either spelling)."""
    image = part.get("image_url")
    return str(image.get("url", "") if isinstance(image, dict) else image or "")


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:` URL, else None."""
    match = DATA_URL.match(url)
    return (match["media"], match["data"]) if match else None


def tool_arguments(arguments: Any, param: str) -> dict[str, Any]:
    """A tool call's JSON arguments as an object (a 400 naming `param` when they are not one)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        raise refuse(param, "tool call arguments must be a JSON object.") from None
    if not isinstance(value, dict):
        raise refuse(param, "tool call arguments must be a JSON object.")
    return value


def reasoning_effort(body: dict[str, Any]) -> str | None:
    """`reasoning_effort`, or OpenRouter's / Responses' `reasoning.effort`; a 400 for an unknown value."""
    reasoning = body.get("reasoning")
    effort = body.get("reasoning_effort") or (reasoning.get("effort") if isinstance(reasoning, dict) else None)
    if effort is not None and effort not in EFFORTS:
        raise refuse("reasoning_effort", f"must be one of {', '.join(EFFORTS)}.")
    return effort


def stop_sequences(stop: Any) -> list[str] | None:
    """`stop` as a list of strings (None when unset)."""
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else [str(item) for item in stop]


def function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The function definitions of `tools` (a 400 naming any other kind of tool)."""
    functions = []
    for index, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise refuse(f"tools[{index}]", "only function tools can be sent to this provider.")
        functions.append({**tool["function"], **({"cache_control": tool["cache_control"]}
                                                  if "cache_control" in tool else {})})
    return functions


def max_output_tokens(body: dict[str, Any]) -> int | None:
    """The prepared output cap."""
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    return int(cap) if cap is not None else None
