"""The Files API: upload a JSONL file for a batch, list, retrieve, download (streamed) and delete, per account."""

from __future__ import annotations

from typing import Literal

from flask import Response, jsonify, request, stream_with_context
from pydantic import BaseModel, ConfigDict, Field

from gateway import services
from gateway.accounting.keys import current_caller
from gateway.api.http import authenticated_blueprint, parse_model
from gateway.batches import files
from gateway.errors import InvalidRequest

bp = authenticated_blueprint("files", __name__)


class ListQuery(BaseModel):
    """Query of GET /files (OpenAI's: newest first unless `order=asc`)."""

    model_config = ConfigDict(extra="ignore")
    limit: int = Field(10_000, ge=1, le=10_000)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    purpose: str | None = None


def account_id() -> int:
    return current_caller().account.id


@bp.post("/files")
def upload() -> Response:
    """multipart/form-data with `file` and `purpose: batch`; the file is read and stored a chunk at a time."""
    form_purpose = request.form.get("purpose") if request.mimetype == "multipart/form-data" else None
    upload = request.files.get("file") if request.mimetype == "multipart/form-data" else None
    if upload is None:
        raise InvalidRequest("Send multipart/form-data with a `file` field and `purpose`.", param="file")
    if form_purpose not in files.PURPOSES:
        raise InvalidRequest("purpose must be \"batch\" (the only purpose this gateway keeps files for).",
                             param="purpose")
    chunk_bytes = services.settings().batches.chunk_bytes
    row = files.store(account_id(), form_purpose, upload.filename or "file.jsonl",
                      files.pieces(upload.stream, chunk_bytes))
    return jsonify(files.file_object(row))


@bp.get("/files")
def list_files() -> Response:
    """The account's files, OpenAI's cursor page."""
    query = parse_model(ListQuery, request.args.to_dict())
    return jsonify(files.page(account_id(), query.limit, query.after, query.order, query.purpose))


@bp.get("/files/<file_id>")
def retrieve(file_id: str) -> Response:
    """One file's object."""
    return jsonify(files.file_object(files.load(file_id, account_id())))


@bp.get("/files/<file_id>/content")
def content(file_id: str) -> Response:
    """The file's bytes, streamed a chunk at a time."""
    row = files.load(file_id, account_id())
    response = Response(stream_with_context(files.chunks(row.id)), mimetype="application/octet-stream")
    response.headers["Content-Length"] = str(row.bytes)
    return response


@bp.delete("/files/<file_id>")
def delete(file_id: str) -> Response:
    """Delete the file and its contents."""
    return jsonify(files.delete(file_id, account_id()))
