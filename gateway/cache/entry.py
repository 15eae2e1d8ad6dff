"""A cached answer and its stored form: the answer and its usage as JSON text, with the times that bound it.

Pure: encoding once at put, decoding only on a hit (a miss never parses JSON).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from gateway.accounting.usage import Usage

USAGE_FIELDS = frozenset(field.name for field in fields(Usage))


@dataclass(frozen=True)
class CachedAnswer:
    """One answer as the client got it, and what it cost."""

    endpoint: str  # "chat/completions" | "completions" | "embeddings" | "messages"
    model: str  # the public model id
    answer: dict[str, Any]  # the complete JSON answer (a stream's: assembled into the JSON form)
    usage: Usage  # the original answer's usage: what a hit is priced at
    created: float  # epoch seconds it was stored


@dataclass(frozen=True)
class StoredEntry:
    """A CachedAnswer as a backend keeps it: text columns or hash fields, and epoch-second times."""

    endpoint: str
    model: str
    answer: str  # JSON
    usage: str  # JSON of the Usage fields
    created: float
    expires_at: float
    scope: str | None = None

    @property
    def size(self) -> int:
        """Bytes the entry takes: its answer and usage text, UTF-8."""
        return len(self.answer.encode()) + len(self.usage.encode())


def encoded(answer: CachedAnswer, expires_at: float, scope: str | None = None) -> StoredEntry:
    """The stored form of an answer."""
    text = json.dumps(answer.answer, separators=(",", ":"), ensure_ascii=False)
    usage = json.dumps(asdict(answer.usage), separators=(",", ":"))
    return StoredEntry(answer.endpoint, answer.model, text, usage, answer.created, expires_at, scope)


def decoded(entry: StoredEntry) -> CachedAnswer:
    """The answer of a stored entry (usage fields this version does not know are ignored)."""
    usage = {name: value for name, value in json.loads(entry.usage).items() if name in USAGE_FIELDS}
    return CachedAnswer(entry.endpoint, entry.model, json.loads(entry.answer), Usage(**usage), entry.created)
