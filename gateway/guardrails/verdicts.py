"""What one check says about one text (a Verdict), and the pure checks' raw matches (Hit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

STAGES = ("input", "output", "tool_input", "tool_output")
ALLOW_ACTION, BLOCK, REDACT, LOG = "allow", "block", "redact", "log"
STRENGTH = {LOG: 1, REDACT: 2, BLOCK: 3}  # the strongest action of a guardrail's matches is the one it takes


@dataclass(frozen=True)
class CheckContext:
    """What a webhook is told about the request (never the key or its hash)."""

    request_id: str | None
    endpoint: str
    model: str | None
    account_id: int | None
    key_id: int | None


@dataclass(frozen=True)
class Verdict:
    """A check's answer: allow, block (with a reason for the log), redact (with the new text) or log."""

    action: str = ALLOW_ACTION
    text: str | None = None          # redact: the text to send instead
    what: tuple[str, ...] = ()       # detector or pattern names that matched (never the matched text)
    reason: str | None = None        # block: why (never logged or shown: it may quote the text; the client is told only the guardrail's name)


ALLOW = Verdict()


class Check(Protocol):
    """One guardrail's check, built once per configuration: `check(text, stage, context) -> Verdict`."""

    def __call__(self, text: str, stage: str, context: CheckContext | None) -> Verdict: ...


class Hit(NamedTuple):
    """One raw match of a pure check: `valid` False is a candidate its validator refused (Luhn, mod 97...)."""

    start: int
    end: int
    name: str
    valid: bool
    action: str
    placeholder: str


def choose_hits(hits: list[Hit]) -> list[Hit]:
    """The valid hits to act on, left to right, an overlapping later one dropped (the earlier, then longer, wins)."""
    chosen: list[Hit] = []
    end = -1
    for hit in sorted((hit for hit in hits if hit.valid), key=lambda hit: (hit.start, -hit.end)):
        if hit.start >= end:
            chosen.append(hit)
            end = hit.end
    return chosen


def verdict_of(hits: list[Hit], text: str, offset: int = 0) -> Verdict:
    """The verdict on `text` (which starts at `offset` of the hits' coordinates) given its chosen hits."""
    if not hits:
        return ALLOW
    what = tuple(dict.fromkeys(hit.name for hit in hits))
    action = max((hit.action for hit in hits), key=STRENGTH.__getitem__)
    if action == BLOCK:
        return Verdict(BLOCK, what=what, reason="matched " + ", ".join(what))
    if action == LOG:
        return Verdict(LOG, what=what)
    parts, last = [], 0
    for hit in hits:
        if hit.action == REDACT:
            parts += [text[last:hit.start - offset], hit.placeholder]
            last = hit.end - offset
    parts.append(text[last:])
    return Verdict(REDACT, text="".join(parts), what=what)


class ScanCheck:
    """A pure check made of patterns (pii, regex): windowable, so streams check it over a sliding window."""

    def __init__(self, scanners: tuple[Scanner, ...]) -> None:
        self.scanners = scanners
        self.only_logs = all(scanner.action == LOG for scanner in scanners)

    def hits(self, text: str, pos: int = 0) -> list[Hit]:
        """Every raw candidate starting at `pos` or later, valid or not."""
        found: list[Hit] = []
        for scanner in self.scanners:
            found += scanner.scan(text, pos)
        return found

    def __call__(self, text: str, stage: str, context: CheckContext | None) -> Verdict:
        """The verdict on the whole text."""
        hits = self.hits(text)
        return verdict_of(choose_hits(hits), text) if hits else ALLOW


class Scanner(Protocol):
    """One named pattern of a pure check, with its action."""

    action: str

    def scan(self, text: str, pos: int) -> list[Hit]: ...
