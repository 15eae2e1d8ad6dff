"""Files of the Files API, stored in the database in chunks (neither upload nor download holds a whole file).

A file is one `batch_file` row and its `file_chunk` rows ([batches] chunk_bytes each, in order), on every
host that shares the database; an upload is seen once it is whole (see `store`). Files belong to an account: another account's file is a 404.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from gateway.accounting.writelock import locked_write
from gateway.db import own_connection
from gateway.errors import NotFound
from gateway.ids import ordered_id
from gateway.tables import BatchFile, FileChunk

PURPOSES = ("batch",)  # what a client may upload; a batch writes `batch_output` files
UPLOADING, PROCESSED = "uploading", "processed"  # a file's status: only processed files are seen


def file_object(row: BatchFile) -> dict[str, Any]:
    """OpenAI's file object."""
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": row.created_at,
            "filename": row.filename, "purpose": row.purpose, "status": row.status, "status_details": None,
            "expires_at": None}


def pieces(stream: BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    """A stream read `chunk_bytes` at a time."""
    while True:
        piece = stream.read(chunk_bytes)
        if not piece:
            return
        yield piece


def store(account_id: int, purpose: str, filename: str, contents: Iterable[bytes]) -> BatchFile:
    """Write a file from its pieces, one chunk row each; answers its row.

    Outside a transaction (an upload) each chunk commits on its own, so a long upload never holds the
    database's write lock for long (SQLite has one for every worker); the file stays `uploading`, which no
    view shows, until its last chunk is in. Inside one (a batch's output files) it is part of it.
    """
    row = BatchFile(id=ordered_id("file", "-"), account=account_id, purpose=purpose, filename=filename[:255],
                    bytes=0, created_at=int(time.time()), status=UPLOADING)
    with locked_write():
        row.save(force_insert=True)
    try:
        for seq, piece in enumerate(contents):
            with locked_write():
                FileChunk.insert(file=row.id, seq=seq, data=piece).execute()
            row.bytes += len(piece)
        with locked_write():
            BatchFile.update(bytes=row.bytes, status=PROCESSED).where(BatchFile.id == row.id).execute()
    except BaseException:
        with locked_write():
            BatchFile.delete().where(BatchFile.id == row.id).execute()  # its chunks cascade
        raise
    row.status = PROCESSED
    return row


def load(file_id: str, account_id: int) -> BatchFile:
    """The account's file, or 404."""
    row = BatchFile.get_or_none((BatchFile.id == file_id) & (BatchFile.account == account_id)
                                & (BatchFile.status == PROCESSED))
    if row is None:
        raise NotFound(f"No such File object: {file_id}", param="file_id")
    return row


def page(account_id: int, limit: int, after: str | None, order: str, purpose: str | None) -> dict[str, Any]:
    """GET /v1/files: a page of the account's files by creation time (ids are time-ordered), OpenAI's list object."""
    query = BatchFile.select().where((BatchFile.account == account_id) & (BatchFile.status == PROCESSED))
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
    with locked_write():
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
