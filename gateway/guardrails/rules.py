"""The `regex` deny list and the `max_size` limit (pure checks)."""

from __future__ import annotations

import re

from gateway.accounting.tokens import tokens_of_length
from gateway.config import GuardrailSettings
from gateway.guardrails.verdicts import ALLOW, BLOCK, LOG, CheckContext, Hit, ScanCheck, Verdict

REGEX_PLACEHOLDER = "[REDACTED]"


class PatternScanner:
    """One named pattern of a deny list, with its action (empty matches are ignored)."""

    def __init__(self, name: str, pattern: str, action: str) -> None:
        self.name = name
        self.pattern = re.compile(pattern)
        self.action = action

    def scan(self, text: str, pos: int = 0) -> list[Hit]:
        """Every match from `pos` on."""
        return [Hit(match.start(), match.end(), self.name, True, self.action, REGEX_PLACEHOLDER)
                for match in self.pattern.finditer(text, pos) if match.end() > match.start()]


def build_regex(name: str, guardrail: GuardrailSettings, settings: object) -> ScanCheck:
    """A `regex` guardrail's check: its patterns compiled once."""
    return ScanCheck(tuple(PatternScanner(pattern.name, pattern.pattern, pattern.action or guardrail.action)
                           for pattern in guardrail.patterns))


class MaxSizeCheck:
    """A `max_size` guardrail: a text longer than max_chars or max_tokens (estimated, 4 characters each)."""

    def __init__(self, max_chars: int | None, max_tokens: int | None, action: str) -> None:
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        self.action = LOG if action == LOG else BLOCK  # a size cannot be redacted: redact blocks

    def over(self, characters: int) -> tuple[str, ...]:
        """Which limits a text of this many characters passes: ("max_chars",), ("max_tokens",), both or none."""
        what = ()
        if self.max_chars is not None and characters > self.max_chars:
            what += ("max_chars",)
        if self.max_tokens is not None and tokens_of_length(characters) > self.max_tokens:
            what += ("max_tokens",)
        return what

    def __call__(self, text: str, stage: str, context: CheckContext | None) -> Verdict:
        """Block (or log) a text over the limits."""
        what = self.over(len(text))
        return Verdict(self.action, what=what, reason="too large") if what else ALLOW


def build_max_size(name: str, guardrail: GuardrailSettings, settings: object) -> MaxSizeCheck:
    """A `max_size` guardrail's check."""
    return MaxSizeCheck(guardrail.max_chars, guardrail.max_tokens, guardrail.action)
