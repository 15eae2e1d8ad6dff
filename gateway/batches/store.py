"""Batch rows: the Batch object, its status moves, per-line results and the lease of the runner that holds it.

Statuses (OpenAI's): validating -> in_progress -> finalizing -> completed; failed (the input file is
invalid); cancelling -> cancelled; expired (past its 24 h window). A line's result is one `batch_line`
row, written with the batch's counters in one transaction once the line is done, so a batch resumed
after a restart runs only the lines without one. A runner holds a batch through its lease
(`lease_owner`, `lease_until`): it claims a batch whose lease ended, renews it while it runs, and a
renewal that finds another owner stops it, so two runners never hold one batch at once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from peewee import fn

from gateway.accounting.writelock import locked_write
from gateway.batches import files
from gateway.errors import NotFound
from gateway.ids import ordered_id
from gateway.tables import Batch, BatchLine, UsageEntry

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
WINDOW_S = {"24h": 24 * 3600}


def batch_object(row: Batch) -> dict[str, Any]:
    """OpenAI's Batch object."""
    errors = json.loads(row.errors) if row.errors else None
    return {
        "id": row.id, "object": "batch", "endpoint": row.endpoint,
        "errors": {"object": "list", "data": errors} if errors else None,
        "input_file_id": row.input_file_id, "completion_window": row.completion_window, "status": row.status,
        "output_file_id": row.output_file_id, "error_file_id": row.error_file_id, "created_at": row.created_at,
        "in_progress_at": row.in_progress_at, "expires_at": row.expires_at, "finalizing_at": row.finalizing_at,
        "completed_at": row.completed_at, "failed_at": row.failed_at, "expired_at": row.expired_at,
        "cancelling_at": row.cancelling_at, "cancelled_at": row.cancelled_at,
        "request_counts": {"total": row.total, "completed": row.completed, "failed": row.failed},
        "metadata": json.loads(row.metadata) if row.metadata else None,
    }


def create(account_id: int, key_id: int, endpoint: str, input_file_id: str, window: str,
           metadata: dict[str, str] | None) -> Batch:
    """A new batch, `validating`; a runner picks it up."""
    now = int(time.time())
    row = Batch(id=ordered_id("batch"), account=account_id, api_key=key_id, endpoint=endpoint,
                input_file_id=input_file_id, completion_window=window, status="validating",
                metadata=json.dumps(metadata) if metadata else None, created_at=now,
                expires_at=now + WINDOW_S[window])
    with locked_write():
        row.save(force_insert=True)
    return row


def load(batch_id: str, account_id: int) -> Batch:
    """The account's batch, or 404."""
    row = Batch.get_or_none((Batch.id == batch_id) & (Batch.account == account_id))
    if row is None:
        raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
    return row


def page(account_id: int, limit: int, after: str | None) -> dict[str, Any]:
    """GET /v1/batches: the account's batches, newest first, OpenAI's cursor page."""
    query = Batch.select().where(Batch.account == account_id)
    if after:
        query = query.where(Batch.id < after)  # ids are time-ordered
    rows = list(query.order_by(Batch.id.desc()).limit(limit + 1))
    return files.list_object([batch_object(row) for row in rows[:limit]], len(rows) > limit)


def cancel(batch_id: str, account_id: int) -> Batch:
    """POST /v1/batches/{id}/cancel: `cancelling` (its runner finishes it `cancelled`); idempotent once ended."""
    load(batch_id, account_id)
    with locked_write():
        Batch.update(status="cancelling", cancelling_at=int(time.time())).where(
            (Batch.id == batch_id) & Batch.status.in_(("validating", "in_progress"))).execute()
    return load(batch_id, account_id)


def status_of(batch_id: str) -> tuple[str | None, int]:
    """The batch's status and end of window now (None: gone)."""
    row = Batch.select(Batch.status, Batch.expires_at).where(Batch.id == batch_id).first()
    return (row.status, row.expires_at) if row else (None, 0)


def move(batch_id: str, status: str, when: str | None = None, **fields: Any) -> bool:
    """Set the status (and its timestamp field) unless the batch was cancelled meanwhile; whether it moved."""
    values = {"status": status, **fields}
    if when:
        values[when] = int(time.time())
    allowed = ("validating", "in_progress", "finalizing") if status != "cancelled" else ("cancelling",)
    with locked_write():
        return Batch.update(**values).where((Batch.id == batch_id) & Batch.status.in_(allowed)).execute() == 1


def claim(owner: str, lease_s: float) -> Batch | None:
    """Take the oldest active batch no live runner holds, of an account none of whose batches is held."""
    now = time.time()
    held = Batch.select(Batch.account).where(Batch.status.in_(ACTIVE) & (Batch.lease_until >= now))
    candidate = (Batch.select(Batch.id).where(Batch.status.in_(ACTIVE) & (Batch.lease_until < now)
                                              & Batch.account.not_in(held))
                 .order_by(Batch.id).first())
    if candidate is None:
        return None
    with locked_write():
        taken = Batch.update(lease_owner=owner, lease_until=now + lease_s).where(
            (Batch.id == candidate.id) & (Batch.lease_until < now)).execute()
    if taken != 1:
        return None
    claimed = Batch.get_by_id(candidate.id)
    if older_batch_held(claimed, now):  # another runner took an older batch of the account meanwhile: it keeps it
        release(claimed.id, owner)
        return None
    return claimed


def older_batch_held(batch: Batch, now: float) -> bool:
    """Whether a runner holds an older active batch of the same account."""
    return Batch.select(Batch.id).where(
        (Batch.account == batch.account_id) & (Batch.id < batch.id) & Batch.status.in_(ACTIVE)
        & (Batch.lease_until >= now)).exists()


def renew(batch_id: str, owner: str, lease_s: float) -> bool:
    """Extend the lease; False when another runner took the batch (the caller stops)."""
    with locked_write():
        return Batch.update(lease_until=time.time() + lease_s).where(
            (Batch.id == batch_id) & (Batch.lease_owner == owner)).execute() == 1


def release(batch_id: str, owner: str) -> None:
    """Give the batch up (another runner may take it at once)."""
    with locked_write():
        Batch.update(lease_owner=None, lease_until=0.0).where(
            (Batch.id == batch_id) & (Batch.lease_owner == owner)).execute()


def done_lines(batch_id: str) -> set[int]:
    """The lines with a result (a resumed batch skips them)."""
    return {row.line for row in BatchLine.select(BatchLine.line).where(BatchLine.batch_id == batch_id)}


def charged_before(request_id: str) -> bool:
    """Whether a line's request was charged already: its worker was killed after the charge and before the
    line's result was recorded, so the line runs again (and is not charged again)."""
    return UsageEntry.select().where((UsageEntry.request_id == request_id) & (UsageEntry.cost > 0)).exists()


def record_line(batch_id: str, number: int, ok: bool, result: str) -> None:
    """Store one line's result and count it, in one transaction (a line is recorded once)."""
    with locked_write():
        inserted = (BatchLine.insert(batch_id=batch_id, line=number, ok=ok, result=result).on_conflict_ignore()
                    .as_rowcount().execute())
        if inserted:
            counter = Batch.completed if ok else Batch.failed
            Batch.update({counter: counter + 1}).where(Batch.id == batch_id).execute()


def results(batch_id: str, ok: bool, chunk_bytes: int):
    """The output (ok) or error lines in input order, as pieces of about `chunk_bytes`."""
    piece, last = b"", -1
    while True:
        rows = list(BatchLine.select().where((BatchLine.batch_id == batch_id) & (BatchLine.ok == ok)
                                             & (BatchLine.line > last)).order_by(BatchLine.line).limit(1000))
        if not rows:
            break
        for row in rows:
            piece += row.result.encode() + b"\n"
            if len(piece) >= chunk_bytes:
                yield piece[:chunk_bytes]
                piece = piece[chunk_bytes:]
        last = rows[-1].line
    if piece:
        yield piece


def result_count(batch_id: str, ok: bool) -> int:
    """Lines recorded with this outcome."""
    return BatchLine.select(fn.COUNT(BatchLine.line)).where(
        (BatchLine.batch_id == batch_id) & (BatchLine.ok == ok)).scalar() or 0


def finalize(row: Batch, status: str, when: str, chunk_bytes: int) -> None:
    """Write the output and error files from the recorded lines and end the batch, in one transaction."""
    account = row.account_id
    with locked_write():
        output = (files.store(account, "batch_output", f"{row.id}_output.jsonl", results(row.id, True, chunk_bytes))
                  if result_count(row.id, True) else None)
        error = (files.store(account, "batch_output", f"{row.id}_error.jsonl", results(row.id, False, chunk_bytes))
                 if result_count(row.id, False) else None)
        Batch.update({"status": status, when: int(time.time()), "output_file_id": output.id if output else None,
                      "error_file_id": error.id if error else None, "lease_owner": None, "lease_until": 0.0}
                     ).where(Batch.id == row.id).execute()
        BatchLine.delete().where(BatchLine.batch_id == row.id).execute()
