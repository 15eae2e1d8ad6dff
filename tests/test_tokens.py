"""Token counts: the usage estimate (chars / 4) and the hold size (UTF-8 bytes / 2 + template margin)."""

from __future__ import annotations

import pytest

from gateway.accounting.tokens import estimate_prompt_tokens, hold_prompt_tokens

REQUEST, MESSAGE = 8, 5  # the hold's template margin


def chat(*contents: str) -> dict:
    return {"messages": [{"role": "user", "content": content} for content in contents]}


@pytest.mark.parametrize(
    ("body", "estimate", "hold"),
    [
        (chat("y " * 100), 53, REQUEST + MESSAGE + 100),  # the upstream reported 100: the estimate undercounts
        (chat("hi"), 4, REQUEST + MESSAGE + 1),
        (chat("é" * 10), 6, REQUEST + MESSAGE + 10),  # two bytes each
        (chat("日本語のテキスト"), 5, REQUEST + MESSAGE + 12),  # three bytes each
        (chat("a", "b"), 8, REQUEST + 2 * MESSAGE + 2),
        ({"prompt": "1234567890"}, 3, REQUEST + 5),
        ({"input": [{"role": "user", "content": "x"}]}, 8, REQUEST + 16),  # as compact JSON
        ({}, 0, REQUEST),
    ],
)
def test_estimate_and_hold(body: dict, estimate: int, hold: int) -> None:
    assert estimate_prompt_tokens(body) == estimate
    assert hold_prompt_tokens(body) == hold
    assert hold_prompt_tokens(body) >= estimate_prompt_tokens(body)
