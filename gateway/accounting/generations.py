"""Generations: a usage row found by the generation id its answer carried, within the caller's account."""

from __future__ import annotations

from gateway.tables import UsageEntry


def find_generation(generation_id: str, account_id: int) -> UsageEntry | None:
    """The usage row of this generation if it belongs to this account, else None (as if it did not exist)."""
    return UsageEntry.get_or_none((UsageEntry.generation_id == generation_id) & (UsageEntry.account == account_id))
