"""StreamCheck: a stage's guardrails over streamed text, through a sliding window (pure).

Each guardrail is one link of a chain (the first one's output feeds the second, as in a one-shot
check, where each guardrail reads the text its predecessor returned):

- a pattern guardrail (pii, regex) holds back the last HOLD characters, so a match that spans
  chunks is whole before anything around it is sent; it checks again each STEP characters, so the
  delay is HOLD to HOLD + STEP characters (a few dozen tokens). It sends up to the last whitespace
  before that tail (a long unbroken token is held whole, up to MAX_HOLD characters), never inside a
  candidate match (a JWT or a private key block that is already a match is held until it is
  whole), and redacts what it sends; CONTEXT characters already sent stay as the patterns'
  look-behind. So the concatenation of everything sent equals the one-shot check of the whole
  text, for any chunking. The one exception: a regex whose match needs more than HOLD characters
  after its start before it matches at all (`foo.{300}bar`) may see its start sent first.
- a guardrail that only logs sends each delta at once and runs the same window beside it, so it
  still sees matches that span chunks (recorded when they leave the window, or at finish).
- `max_size` passes text through and counts it: the block comes with the chunk that passes the limit.
- a guardrail that needs the whole text (webhook, moderation) holds everything until finish.

A block raises ContentPolicyViolation (through `act`) when the blocked text would be sent.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.guardrails.registry import Entry
from gateway.guardrails.rules import MaxSizeCheck
from gateway.guardrails.verdicts import CheckContext, ScanCheck, Verdict, choose_hits, verdict_of

HOLD = 256        # characters a pattern guardrail holds back: the longest match it catches across chunks
STEP = 64         # it checks its window again once this many more characters wait (not on every delta)
MAX_HOLD = 4096   # the most it holds while waiting for whitespace (a long token with no break)
CONTEXT = 64      # characters already sent that the patterns may look behind at
Act = Callable[[Entry, Verdict, str], str]  # records a verdict on a text; the text to send, or raises on block


def last_whitespace(text: str, start: int, stop: int) -> int:
    """The index just after the last whitespace in text[start:stop], or -1."""
    index = max(text.rfind(" ", start, stop), text.rfind("\n", start, stop), text.rfind("\t", start, stop))
    return index + 1 if index >= 0 else -1


class PatternLink:
    """One pattern guardrail's window."""

    def __init__(self, entry: Entry, act: Act) -> None:
        self.entry, self.act = entry, act
        self.check: ScanCheck = entry.check  # type: ignore[assignment]
        self.passthrough = self.check.only_logs
        self.context = ""
        self.pending = ""

    def feed(self, delta: str) -> str:
        """What may be sent now (a log-only link sends `delta` itself)."""
        self.pending += delta
        out = self.advance(final=False) if len(self.pending) >= HOLD + STEP else ""
        return delta if self.passthrough else out

    def finish(self) -> str:
        """The rest, checked."""
        out = self.advance(final=True)
        return "" if self.passthrough else out

    def advance(self, final: bool) -> str:
        """Check and release the settled part of the window (all of it when final)."""
        window, base = self.context + self.pending, len(self.context)
        hits = self.check.hits(window, base)
        cut = len(window) if final else self.cut_point(window, base, hits)
        if cut <= base:
            return ""
        chosen = choose_hits([hit for hit in hits if hit.end <= cut])
        verdict = verdict_of(chosen, window[base:cut], base)
        out = self.act(self.entry, verdict, window[base:cut]) if chosen else window[base:cut]
        self.context, self.pending = window[max(base, cut - CONTEXT):cut], window[cut:]
        return out

    @staticmethod
    def cut_point(window: str, base: int, hits: list) -> int:
        """Where the sent part may end: before the held tail, at whitespace, outside every candidate."""
        cut = len(window) - HOLD
        space = last_whitespace(window, base, cut)
        if space > base:
            cut = space
        elif len(window) - base <= MAX_HOLD:
            return base
        moved = True
        while moved:
            moved = False
            for hit in hits:
                if hit.start < cut < hit.end:
                    cut, moved = hit.start, True
        return cut


class SizeLink:
    """A max_size guardrail: counts what passes."""

    def __init__(self, entry: Entry, act: Act) -> None:
        self.entry, self.act = entry, act
        self.check: MaxSizeCheck = entry.check  # type: ignore[assignment]
        self.seen = 0
        self.fired = False

    def feed(self, delta: str) -> str:
        """The delta, or a block once the count passes a limit."""
        self.seen += len(delta)
        what = () if self.fired else self.check.over(self.seen)
        if what:
            self.fired = True
            self.act(self.entry, Verdict(self.check.action, what=what, reason="too large"), delta)
        return delta

    def finish(self) -> str:
        """Nothing is held."""
        return ""


class WholeLink:
    """A guardrail that needs the whole text (webhook, moderation): holds it until finish."""

    def __init__(self, entry: Entry, act: Act, stage: str, context: CheckContext | None) -> None:
        self.entry, self.act, self.stage, self.context = entry, act, stage, context
        self.parts: list[str] = []

    def feed(self, delta: str) -> str:
        """Nothing yet."""
        self.parts.append(delta)
        return ""

    def finish(self) -> str:
        """The whole text, checked."""
        text = "".join(self.parts)
        self.parts = []
        verdict = self.entry.check(text, self.stage, self.context) if text else Verdict()
        return self.act(self.entry, verdict, text) if verdict.action != "allow" else text


class StreamCheck:
    """A stage's guardrails over streamed text: `feed` each delta, send what it returns, then `finish`."""

    def __init__(self, entries: tuple[Entry, ...], stage: str, act: Act, context: CheckContext | None = None) -> None:
        self.links = [link_for(entry, act, stage, context) for entry in entries]

    def feed(self, delta: str) -> str:
        """Text safe to send now (a bounded tail may wait); raises ContentPolicyViolation on block."""
        for link in self.links:
            if not delta:
                return ""
            delta = link.feed(delta)
        return delta

    def finish(self) -> str:
        """The held-back rest, checked."""
        out = ""
        for link in self.links:
            out = link.feed(out) if out else ""
            out += link.finish()
        return out


def link_for(entry: Entry, act: Act, stage: str, context: CheckContext | None) -> PatternLink | SizeLink | WholeLink:
    """The window kind a guardrail's check needs."""
    if isinstance(entry.check, ScanCheck):
        return PatternLink(entry, act)
    if isinstance(entry.check, MaxSizeCheck):
        return SizeLink(entry, act)
    return WholeLink(entry, act, stage, context)

