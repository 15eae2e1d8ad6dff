"""The rules of admission, holds and charges, applied to a batch of operations in one transaction.

Operations are decided in the order they were queued, exactly as if each ran in its own
transaction one after the other, but they share one read of each account and one write-back:
- **Admission**: the key's rate window (when windows are in the database) must have room for one
  request and the request's token estimate; the request is then counted. Its hold must fit in
  the account's available credits (balance minus open holds; stale holds are swept first when
  short) and in the key's spend limit, else the answer carries the 402 message.
- **Extension**: the same availability check for one more tool-loop turn, then the hold grows.
- **Settlement**: the hold is closed (once: a settled hold is never charged again), the full
  cost is charged, never cut to the balance: if it exceeds the hold and the balance, the
  account goes into debt by exactly the excess (a negative grant), so later holds get 402 until
  a top-up. The usage row (cost = what was charged) and the window's tokens are written with it.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from gateway.accounting.book import Book
from gateway.accounting.money import to_credits
from gateway.accounting.operations import Admission, Admitted, Extension, Operation, Settlement
from gateway.accounting.statements import Statements
from gateway.accounting.window_stores import WindowCounts

SHORT_TO_START = "Insufficient balance: this request"
SHORT_TO_CONTINUE = "Insufficient balance to continue: the next model turn"


def apply_batch(statements: Statements, operations: Sequence[Operation], now: datetime.datetime) -> list[Any]:
    """Decide and write `operations` inside the caller's write transaction; one answer each, in order."""
    book = Book(statements, now)
    statements.lock_accounts(operation.account_id for operation in operations)
    book.load_holds([op.reservation_id for op in operations
                     if not isinstance(op, Admission) and op.reservation_id is not None])
    answers: list[Any] = []
    positions: dict[int, int] = {}
    for index, operation in enumerate(operations):
        if isinstance(operation, Admission):
            answer, position = admit(book, operation)
            if position is not None:
                positions[index] = position
            answers.append(answer)
        elif isinstance(operation, Extension):
            answers.append(extend(book, operation))
        else:
            answers.append(settle(book, operation))
    ids = book.flush()
    for index, position in positions.items():
        counts = answers[index].counts
        answers[index] = Admitted(ids[position], counts)
    return answers


def admit(book: Book, op: Admission) -> tuple[Admitted, int | None]:
    """Rate window, then hold; returns the answer and the new hold's position (if one was queued)."""
    counts = None
    if op.ask is not None:
        if op.ask.impossible:
            return Admitted(counts=WindowCounts(0, 0), rate_limited=True), None
        window = book.window(op.key_id, op.ask.window)
        if not op.ask.fits(WindowCounts(*window)):
            return Admitted(counts=WindowCounts(*window), rate_limited=True), None
        book.count(op.key_id, op.ask.window, 1, 0)
        counts = WindowCounts(*window)
    if op.amount <= 0:
        return Admitted(counts=counts), None
    refusal = refuse(book, op.account_id, op.key_id, op.spend_limit, op.amount, SHORT_TO_START)
    if refusal is not None:
        return Admitted(counts=counts, refusal=refusal), None
    book.account(op.account_id).held += op.amount
    book.commit_to_key(op.key_id, op.amount)
    return Admitted(counts=counts), book.hold(op.account_id, op.key_id, op.amount, op.request_id, op.ttl_s)


def extend(book: Book, op: Extension) -> str | None:
    """Grow an open hold, or answer why not (402)."""
    if op.amount <= 0:
        return None
    refusal = refuse(book, op.account_id, op.key_id, op.spend_limit, op.amount, SHORT_TO_CONTINUE)
    if refusal is not None:
        return refusal
    hold = book.holds.get(op.reservation_id)
    if hold is not None and hold.status == "open":
        hold.amount += op.amount
        book.account(op.account_id).held += op.amount
        book.commit_to_key(op.key_id, op.amount)
        book.grown.append((op.amount, op.reservation_id))
    return None


def settle(book: Book, op: Settlement) -> int:
    """Close the hold and charge the full cost (once); write the usage row and tokens; returns the charge."""
    chargeable = True
    hold = book.holds.get(op.reservation_id) if op.reservation_id is not None else None
    if hold is not None:  # a hold lost to a database crash (admissions commit lazily) is charged too
        chargeable = hold.status in ("open", "swept")
        if chargeable:
            if hold.status == "open":
                book.account(op.account_id).held -= hold.amount
                book.commit_to_key(hold.key_id, -hold.amount)
            hold.status = "settled"
            book.settled.append(op.reservation_id)
    charged = op.cost if chargeable and op.cost > 0 else 0
    if charged:
        book.account(op.account_id).charge(charged)
        book.charge_row(op.account_id, op.key_id, charged, op.request_id)
        book.commit_to_key(op.key_id, charged)
    if op.usage is not None:
        book.usage_row(op.account_id, op.key_id, op.usage, charged)
    if op.tokens > 0 and op.key_id is not None and op.token_window is not None:
        book.count(op.key_id, op.token_window, 0, op.tokens)
    return charged


def refuse(book: Book, account_id: int, key_id: int, spend_limit: int | None, amount: int, what: str) -> str | None:
    """Why the account (or the key's spend limit) cannot hold `amount` more, or None if it can."""
    account = book.account(account_id)
    if account.available < amount and not account.swept:
        book.sweep(account)
    if account.available < amount:
        return (f"{what} may cost up to {to_credits(amount)} credits and "
                f"{to_credits(max(account.available, 0))} are available.")
    if spend_limit is not None:
        committed = book.key_committed(key_id)
        if committed + amount > spend_limit:
            return (f"This key's spend limit of {to_credits(spend_limit)} credits would be exceeded "
                    f"(committed {to_credits(committed)}, this request may cost up to {to_credits(amount)}).")
    return None
