"""What a key has spent, from the ledger: overall and since a moment (OpenRouter's usage windows)."""

from __future__ import annotations

import datetime

from peewee import fn

from gateway.tables import LedgerEntry


def spent_by_key_since(key_id: int, since: datetime.datetime | None = None) -> int:
    """Micro-credits charged to one key (since `since`, when given)."""
    query = LedgerEntry.select(fn.COALESCE(fn.SUM(LedgerEntry.amount), 0)).where(
        LedgerEntry.api_key == key_id, LedgerEntry.kind == "charge"
    )
    if since is not None:
        query = query.where(LedgerEntry.created_at >= since)
    return int(query.scalar())
