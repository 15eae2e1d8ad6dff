"""Each guardrail type's builder, and the checks of one configuration, built once.

A builder is `build(name, guardrail: GuardrailSettings, settings: Settings) -> Check`, and a check
is `check(text, stage, context) -> Verdict` (gateway.guardrails.verdicts). The pure types live in
this package's detectors and rules; `webhook` and `moderation` (I/O) are their modules' `build`,
imported when a configuration uses them.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import GuardrailSettings, Settings
from gateway.guardrails.detectors import DETECTORS, DetectorScanner
from gateway.guardrails.rules import build_max_size, build_regex
from gateway.guardrails.verdicts import Check, ScanCheck

Builder = Callable[[str, GuardrailSettings, Settings], Check]
IO_MODULES = {"webhook": "gateway.guardrails.webhook", "moderation": "gateway.guardrails.moderation"}


def build_pii(name: str, guardrail: GuardrailSettings, settings: Settings) -> ScanCheck:
    """A `pii` guardrail's check: its detectors that are on, with its action."""
    return ScanCheck(tuple(DetectorScanner(DETECTORS[detector], guardrail.action)
                           for detector in dict.fromkeys(guardrail.detectors)))


BUILDERS: dict[str, Builder] = {"pii": build_pii, "regex": build_regex, "max_size": build_max_size}


def builder(kind: str) -> Builder:
    """The builder of a type (an I/O type's module is imported on first use)."""
    if kind not in BUILDERS:
        BUILDERS[kind] = importlib.import_module(IO_MODULES[kind]).build
    return BUILDERS[kind]


@dataclass(frozen=True)
class Entry:
    """One configured guardrail: its name, its settings, its built check."""

    name: str
    settings: GuardrailSettings
    check: Check


class Built:
    """The entries of one configuration, by name in declared order, and its default list."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.entries = {name: Entry(name, guardrail, builder(guardrail.type)(name, guardrail, settings))
                        for name, guardrail in settings.guardrails.items()}
        self.order = {name: index for index, name in enumerate(self.entries)}
        self.defaults = tuple(name for name, entry in self.entries.items() if entry.settings.default)
        self.chosen: dict = {}  # gateway.guardrails.apply's choices by attachment (model, profile, key's, account's)


_lock = threading.Lock()
_built: list[Built] = []  # the last few configurations' checks (one in a server; tests make many)


def built_for(settings: Settings) -> Built:
    """The checks of this configuration, built on first use (patterns compile once, not per request)."""
    for built in _built:
        if built.settings is settings:
            return built
    with _lock:
        for built in _built:
            if built.settings is settings:
                return built
        built = Built(settings)
        _built[:] = [built, *_built[:7]]
        return built
