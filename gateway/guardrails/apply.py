"""Guardrails: the ones that apply to one request, run stage by stage, and what they did (Fired)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import Settings
from gateway.errors import ContentPolicyViolation
from gateway.guardrails.body import map_texts
from gateway.guardrails.registry import Built, Entry, built_for
from gateway.guardrails.verdicts import ALLOW_ACTION, BLOCK, REDACT, STAGES, CheckContext, Verdict
from gateway.guardrails.window import StreamCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fired:
    """One guardrail that acted: recorded on the usage row and counted in metrics (never the matched text)."""

    name: str
    action: str                   # "block" | "redact" | "log"
    stage: str
    what: tuple[str, ...]         # detector or pattern names that matched, e.g. ("email",)


class Guardrails:
    """The guardrails that apply to one request (in declared order), and what they did."""

    def __init__(self, entries: tuple[Entry, ...] = (), context: CheckContext | None = None,
                 by_stage: dict[str, tuple[Entry, ...]] | None = None) -> None:
        self.names = tuple(entry.name for entry in entries)
        self.context = context
        self.fired: list[Fired] = []
        self.by_stage = by_stage if by_stage is not None else stages_of(entries)

    def active(self, stage: str) -> bool:
        """Whether any guardrail runs on this stage (skip the work when not)."""
        return bool(self.by_stage[stage])

    def check(self, stage: str, text: str) -> str:
        """The text, redacted where a guardrail redacts; raises ContentPolicyViolation on block."""
        for entry in self.by_stage[stage]:
            if not text:
                break
            verdict = entry.check(text, stage, self.context)
            if verdict.action != ALLOW_ACTION:
                text = self.act(entry, verdict, text, stage)
        return text

    def check_body(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """The input stage over every text the model will read in a request body: the body, redacted, or raises."""
        if not self.by_stage["input"]:
            return body
        return map_texts(endpoint, body, lambda text: self.check("input", text))

    def stream(self, stage: str = "output") -> StreamCheck:
        """A sliding-window check of streamed text on this stage (gateway.guardrails.window)."""
        return StreamCheck(self.by_stage[stage], stage, lambda entry, verdict, text: self.act(
            entry, verdict, text, stage), self.context)

    def act(self, entry: Entry, verdict: Verdict, text: str, stage: str) -> str:
        """Record what a guardrail did; the text to go on with, or raise on block."""
        self.record(Fired(entry.name, verdict.action, stage, verdict.what))
        if verdict.action == BLOCK:
            log.info("guardrail %s blocked (%s): %s", entry.name, stage, ", ".join(verdict.what))
            raise ContentPolicyViolation(entry.name, stage, on_tool_block=entry.settings.on_tool_block)
        return verdict.text if verdict.action == REDACT and verdict.text is not None else text

    def record(self, fired: Fired) -> None:
        """Add a firing; the same guardrail, action and stage again only adds what matched."""
        for index, earlier in enumerate(self.fired):
            if (earlier.name, earlier.action, earlier.stage) == (fired.name, fired.action, fired.stage):
                what = tuple(dict.fromkeys(earlier.what + fired.what))
                self.fired[index] = Fired(fired.name, fired.action, fired.stage, what)
                return
        self.fired.append(fired)


def stages_of(entries: tuple[Entry, ...]) -> dict[str, tuple[Entry, ...]]:
    """The entries that run on each stage, in order."""
    return {stage: tuple(entry for entry in entries if stage in entry.settings.stages) for stage in STAGES}


NO_GUARDRAILS = Guardrails()


def guardrails_for(settings: Settings, *, model: str | None, profile: str | None, key_guardrails: Sequence[str] = (),
                   account_guardrails: Sequence[str] = (), context: CheckContext | None = None) -> Guardrails:
    """The default guardrails plus the model's, the profile's, the account's and the key's, in declared order."""
    if not settings.guardrails:
        return NO_GUARDRAILS
    built = built_for(settings)
    attachment = (model, profile, tuple(key_guardrails), tuple(account_guardrails))
    chosen = built.chosen.get(attachment)
    if chosen is None:
        chosen = choose(built, settings, attachment)
        if len(built.chosen) >= CHOSEN_KEPT:
            built.chosen.clear()
        built.chosen[attachment] = chosen
    entries, by_stage = chosen
    return Guardrails(entries, context, by_stage) if entries else NO_GUARDRAILS


CHOSEN_KEPT = 4096  # attachments whose guardrails are remembered per configuration (then forgotten at once)
Attachment = tuple[str | None, str | None, tuple[str, ...], tuple[str, ...]]


def choose(built: Built, settings: Settings, attachment: Attachment) -> tuple[tuple[Entry, ...], dict]:
    """The entries one attachment brings in (in declared order, each once), and by stage."""
    model, profile, key_guardrails, account_guardrails = attachment
    names = set(built.defaults)
    model_settings = settings.models.get(model) if model else None
    if model_settings is not None:
        names.update(model_settings.guardrails)
    profile_settings = settings.profiles.get(profile) if profile else None
    if profile_settings is not None:
        names.update(profile_settings.guardrails)
    names.update(account_guardrails)
    names.update(key_guardrails)
    known = sorted((name for name in names if name in built.entries), key=built.order.__getitem__)
    entries = tuple(built.entries[name] for name in known)  # a name since removed from the config is skipped
    return entries, stages_of(entries)
