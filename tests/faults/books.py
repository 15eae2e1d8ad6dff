"""The books of one paying account after a fault: nothing held, and ledger == balance drop == usage x price."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway import db
from gateway.accounting.credits import Price, balance_of
from gateway.accounting.usage import Usage
from gateway.config import ModelSettings
from gateway.tables import LedgerEntry, Reservation, UsageEntry

SETTLE_WAIT_S = 10.0  # a stream a client left settles on the server's thread, a moment later


@dataclass(frozen=True)
class Payer:
    """A funded key: its secret, its account and what it was granted (micro-credits)."""

    secret: str
    account_id: int
    granted: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


def open_holds() -> int:
    """Reservations still open, of every account."""
    with db.database.connection_context():
        return Reservation.select().where(Reservation.status == "open").count()


def audit(payer: Payer, prices: dict[str, ModelSettings]) -> list[UsageEntry]:
    """Assert the payer's books balance to the micro-credit; return its usage rows, oldest first.

    No reservation is open; every row costs its tokens at its model's price; the charges in the
    ledger, the drop of the balance and the sum of the rows' costs are one number.
    """
    with db.database.connection_context():
        assert not Reservation.select().where(Reservation.status == "open").exists(), "a hold is still open"
        rows = list(UsageEntry.select().where(UsageEntry.account == payer.account_id).order_by(UsageEntry.id))
        charged = sum(entry.amount for entry in LedgerEntry.select().where(
            LedgerEntry.account == payer.account_id, LedgerEntry.kind == "charge"))
        drop = payer.granted - balance_of(payer.account_id)
    for row in rows:
        assert row.cost == Price.of(prices[row.model]).cost(Usage(row.prompt_tokens, row.completion_tokens)), row
    assert charged == drop == sum(row.cost for row in rows)
    return rows


def newest_row(payer: Payer, prices: dict[str, ModelSettings], count: int = 1) -> UsageEntry:
    """The payer's newest usage row once it has `count` (waits for a late settlement), books audited."""
    deadline = time.monotonic() + SETTLE_WAIT_S
    while time.monotonic() < deadline and (open_holds() or len(rows_of(payer)) < count):
        time.sleep(0.05)
    rows = audit(payer, prices)
    assert len(rows) == count, rows
    return rows[-1]


def rows_of(payer: Payer) -> list[UsageEntry]:
    with db.database.connection_context():
        return list(UsageEntry.select().where(UsageEntry.account == payer.account_id))
