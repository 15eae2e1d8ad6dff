"""An account and a ledger row as the admin API and the dashboard show them (amounts in credits)."""

from __future__ import annotations

import json
from typing import Any

from gateway.accounting import credits
from gateway.accounting.guardrail_names import decode_names
from gateway.tables import Account, LedgerEntry


def describe_account(account: Account) -> dict[str, Any]:
    """An account and its balances in credits."""
    summary = credits.summarize(account)
    return {
        "id": account.id, "name": account.name, "tier": account.tier, "scope": account.scope,
        "max_streams": account.max_streams, "guardrails": list(decode_names(account.guardrails)),
        "key_limits": {name: credits.to_credits(value) if name == "spend_limit" else value
                       for name, value in json.loads(account.key_limits or "{}").items()},
        "balance": credits.to_credits(summary.balance),
        "reserved": credits.to_credits(summary.reserved),
        "total_earned": credits.to_credits(summary.total_earned),
        "total_spent": credits.to_credits(summary.total_spent),
    }


def describe_entry(entry: LedgerEntry) -> dict[str, Any]:
    """One ledger row in credits."""
    return {
        "id": entry.id, "kind": entry.kind, "amount": credits.to_credits(entry.amount),
        "api_key_id": entry.api_key_id, "request_id": entry.request_id, "note": entry.note,
        "created_at": entry.created_at.isoformat(timespec="seconds") + "Z",
    }
