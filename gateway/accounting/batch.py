"""The rules of admission, holds and charges, applied to a batch of operations in one transaction.

Operations are decided in the order they were queued, exactly as if each ran in its own
transaction one after the other, but they share one read of each account and one write-back:
- **Admission**: the key's rate window (when windows are in the database) must have room for one
  request and the request's token estimate; the request is then counted. Its hold must fit in
  the account's available credits (balance minus open holds; stale holds are swept first when
  short) and in every budget the request answers to (the key's limit over its period, the account's,
  the key's for the model asked for, the tags'; gateway.accounting.budgets): what a budget's scope spent
  in its period plus its open holds plus this hold must stay within its amount, else the answer carries
  the 402 message. Exact under concurrency: the batch holds its accounts' locks (every budget lies
  within one account) and tracks each hold and charge it adds in the scopes it read.
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

from gateway.accounting import budgets
from gateway.accounting import statements as sql
from gateway.accounting.book import Book
from gateway.accounting.money import to_credits
from gateway.accounting.operations import Admission, Admitted, Extension, Operation, Settlement
from gateway.accounting.statements import Statements
from gateway.accounting.window_stores import WindowCounts

SHORT_TO_START = "Insufficient balance: this request"
SHORT_TO_CONTINUE = "Insufficient balance to continue: the next model turn"
OVER_TO_START = "This request"
OVER_TO_CONTINUE = "The next model turn"


def apply_batch(statements: Statements, operations: Sequence[Operation], now: datetime.datetime) -> list[Any]:
    """Decide and write `operations` inside the caller's write transaction; one answer each, in order."""
    book = Book(statements, now)
    holding = any(not isinstance(op, Settlement) and op.amount > 0 for op in operations)
    book.load_budgets(statements.lock_accounts((op.account_id for op in operations),
                                               then=sql.BUDGETS if holding else None))
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
    key_limit = budgets.key_limit(op.account_id, op.key_id, op.spend_limit, op.limit_reset)
    refusal = refuse(book, op.account_id, op.key_id, key_limit, op.model, op.tags, op.amount, starting=True)
    if refusal is not None:
        return Admitted(counts=counts, refusal=refusal), None
    book.account(op.account_id).held += op.amount
    return Admitted(counts=counts), book.hold(op.account_id, op.key_id, op.amount, op.request_id, op.ttl_s,
                                              op.model, op.tags)


def extend(book: Book, op: Extension) -> str | None:
    """Grow an open hold, or answer why not (402)."""
    if op.amount <= 0:
        return None
    hold = book.holds.get(op.reservation_id)
    model, tags = (hold.model, hold.tags) if hold is not None else (None, ())
    key_limit = budgets.key_limit(op.account_id, op.key_id, op.spend_limit, op.limit_reset)
    refusal = refuse(book, op.account_id, op.key_id, key_limit, model, tags, op.amount, starting=False)
    if refusal is not None:
        return refusal
    if hold is not None and hold.status == "open":
        hold.amount += op.amount
        book.account(op.account_id).held += op.amount
        book.commit(op.account_id, op.key_id, model, tags, op.amount)
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
                book.commit(op.account_id, hold.key_id, hold.model, hold.tags, -hold.amount)
            hold.status = "settled"
            book.settled.append(op.reservation_id)
    charged = op.cost if chargeable and op.cost > 0 else 0
    if charged:
        book.account(op.account_id).charge(charged)
        usage = op.usage
        book.charge_row(op.account_id, op.key_id, charged, op.request_id, usage.model if usage else None,
                        usage.tags if usage else ())
    if op.usage is not None:
        book.usage_row(op.account_id, op.key_id, op.usage, charged)
    if op.tokens > 0 and op.key_id is not None and op.token_window is not None:
        book.count(op.key_id, op.token_window, 0, op.tokens)
    return charged


def refuse(book: Book, account_id: int, key_id: int, key_limit: budgets.Budget | None, model: str | None,
           tags: tuple[str, ...], amount: int, starting: bool) -> str | None:
    """Why the account's balance or a budget cannot hold `amount` more, or None if they can.

    Holds past their TTL (a killed worker's) are swept first when they would decide it.
    """
    account = book.account(account_id)
    if account.available < amount and not account.swept:
        book.sweep(account)
    if account.available < amount:
        return (f"{SHORT_TO_START if starting else SHORT_TO_CONTINUE} may cost up to {to_credits(amount)} credits "
                f"and {to_credits(max(account.available, 0))} are available.")
    answering = budgets.applicable([*book.budgets(account_id), *([key_limit] if key_limit else [])],
                                   key_id, model, tags)
    passed = first_passed(book, answering, amount)
    if passed is not None and not account.swept:
        book.sweep(account)
        passed = first_passed(book, answering, amount)
    if passed is None:
        return None
    return budgets.refusal(passed, book.spent(passed.scope(book.now)), amount, book.now,
                           OVER_TO_START if starting else OVER_TO_CONTINUE)


def first_passed(book: Book, answering: list[budgets.Budget], amount: int) -> budgets.Budget | None:
    """The first budget that `amount` more would pass in its current period, if any."""
    for budget in answering:
        if book.spent(budget.scope(book.now)) + amount > budget.amount:
            return budget
    return None
