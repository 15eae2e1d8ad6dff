"""Files of the Files API, stored in the database in chunks (neither upload nor download holds a whole file).

A file is one `batch_file` row and its `file_chunk` rows ([batches] chunk_bytes each, in order); an upload
is written in one transaction, so a file exists whole or not at all, on every host that shares the
database. Files belong to an account: another account's file is a 404.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from gateway.db import database, own_connection
from gateway.errors import NotFound
from gateway.ids import ordered_id
from gateway.tables import BatchFile, FileChunk

PURPOSES = ("batch",)  # what a client may upload; a batch writes `batch_output` files


def file_object(row: BatchFile) -> dict[str, Any]:
    """OpenAI's file object."""
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": row.created_at,
            "filename": row.filename, "purpose": row.purpose, "status": "processed", "status_details": None,
            "expires_at": None}


def pieces(stream: BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    """A stream read `chunk_bytes` at a time."""
    while True:
        piece = stream.read(chunk_bytes)
        if not piece:
            return
        yield piece


def store(account_id: int, purpose: str, filename: str, contents: Iterable[bytes]) -> BatchFile:
    """Write a file from its pieces (each one chunk row) in one transaction; answers its row."""
    row = BatchFile(id=ordered_id("file", "-"), account=account_id, purpose=purpose, filename=filename[:255],
                    bytes=0, created_at=int(time.time()))
    with database.atomic():
        row.save(force_insert=True)
        for seq, piece in enumerate(contents):
            FileChunk.insert(file=row.id, seq=seq, data=piece).execute()
            row.bytes += len(piece)
        BatchFile.update(bytes=row.bytes).where(BatchFile.id == row.id).execute()
    return row


def load(file_id: str, account_id: int) -> BatchFile:
    """The account's file, or 404."""
    row = BatchFile.get_or_none((BatchFile.id == file_id) & (BatchFile.account == account_id))
    if row is None:
        raise NotFound(f"No such File object: {file_id}", param="file_id")
    return row


def page(account_id: int, limit: int, after: str | None, order: str, purpose: str | None) -> dict[str, Any]:
    """GET /v1/files: a page of the account's files by creation time (ids are time-ordered), OpenAI's list object."""
    query = BatchFile.select().where(BatchFile.account == account_id)
    if purpose:
        query = query.where(BatchFile.purpose == purpose)
    newest_first = order == "desc"
    if after:
        query = query.where(BatchFile.id < after if newest_first else BatchFile.id > after)
    rows = list(query.order_by(BatchFile.id.desc() if newest_first else BatchFile.id).limit(limit + 1))
    return list_object([file_object(row) for row in rows[:limit]], len(rows) > limit)


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's cursor page: `data`, `first_id`, `last_id`, `has_more`."""
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def delete(file_id: str, account_id: int) -> dict[str, Any]:
    """DELETE /v1/files/{id}: the file and its chunks."""
    load(file_id, account_id)
    with database.atomic():
        FileChunk.delete().where(FileChunk.file == file_id).execute()
        BatchFile.delete().where(BatchFile.id == file_id).execute()
    return {"id": file_id, "object": "file", "deleted": True}


def chunks(file_id: str) -> Iterator[bytes]:
    """A file's contents, one chunk row per query (so a stream holds one chunk at a time); own connection."""
    seq = 0
    while True:
        with own_connection():
            row = FileChunk.get_or_none((FileChunk.file == file_id) & (FileChunk.seq == seq))
        if row is None:
            return
        yield bytes(row.data)
        seq += 1


def lines(file_id: str) -> Iterator[bytes]:
    """A file's lines (without their newline; a last line without one too), read chunk by chunk."""
    rest = b""
    for piece in chunks(file_id):
        rest += piece
        *whole, rest = rest.split(b"\n")
        yield from whole
    if rest:
        yield rest
