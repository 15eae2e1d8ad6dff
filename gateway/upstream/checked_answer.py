"""A JSON answer's generated text through the output guardrails, rewritten in place (pure).

The texts are a chat completion's `message.content` (a string, or its text parts), a legacy
completion's `text`, and an Anthropic message's `text` blocks; ids, tool calls and usage are left as
they are. `check` is the request's output check (gateway.guardrails.Guardrails.check at stage
`output`, seen here only as a function: this floor does not import the guardrails room); it returns
the text redacted, or raises ContentPolicyViolation. `checked_*` answer the block instead of raising,
so the caller can settle the answer's usage first (a blocked answer was generated: it is charged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from gateway.errors import ContentPolicyViolation

TextCheck = Callable[[str], str]
Holder = tuple[dict[str, Any], str]  # a dict and the key of one of its texts


def openai_texts(answer: dict[str, Any]) -> Iterator[Holder]:
    """Where a chat or legacy completion keeps its generated texts."""
    for choice in answer.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            yield choice, "text"
        message = choice.get("message")
        if isinstance(message, dict):
            yield from content_texts(message)


def content_texts(message: dict[str, Any]) -> Iterator[Holder]:
    """A message's `content` as a string, or its parts' `text`."""
    content = message.get("content")
    if isinstance(content, str):
        yield message, "content"
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part, "text"


def message_texts(message: dict[str, Any]) -> Iterator[Holder]:
    """An Anthropic message's `text` blocks."""
    for block in message.get("content") or []:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            yield block, "text"


def rewrite(holders: Iterator[Holder], check: TextCheck) -> None:
    """Each text replaced by what the check returns (raises on a block)."""
    for holder, key in list(holders):
        if holder[key]:
            holder[key] = check(holder[key])


def checked_openai(answer: dict[str, Any], check: TextCheck | None) -> ContentPolicyViolation | None:
    """Rewrite a chat or legacy completion's texts; the block, if a guardrail blocked one."""
    return _checked(openai_texts(answer), check)


def checked_message(message: dict[str, Any], check: TextCheck | None) -> ContentPolicyViolation | None:
    """Rewrite an Anthropic message's text blocks; the block, if a guardrail blocked one."""
    return _checked(message_texts(message), check)


def _checked(holders: Iterator[Holder], check: TextCheck | None) -> ContentPolicyViolation | None:
    if check is None:
        return None
    try:
        rewrite(holders, check)
    except ContentPolicyViolation as blocked:
        return blocked
    return None
