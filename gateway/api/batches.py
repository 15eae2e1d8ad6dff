"""The Batch API: create a batch from an uploaded file, retrieve, list and cancel it (run by gateway.batches)."""

from __future__ import annotations

from typing import Any, Literal

from flask import Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from gateway.accounting.keys import current_caller
from gateway.api.http import authenticated_blueprint, json_object, parse_model
from gateway.api.openai_requests import ChatRequest, CompletionRequest, EmbeddingRequest
from gateway.batches import files, store
from gateway.errors import InvalidRequest
from gateway.responses.schema import Metadata

bp = authenticated_blueprint("batches", __name__)
SCHEMAS = {"chat/completions": ChatRequest, "completions": CompletionRequest, "embeddings": EmbeddingRequest}


class CreateBody(BaseModel):
    """POST /batches."""

    model_config = ConfigDict(extra="forbid")
    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    completion_window: Literal["24h"]
    metadata: Metadata | None = None  # OpenAI's: at most 16 pairs, keys up to 64 characters, values up to 512
    output_expires_after: dict[str, Any] | None = None  # accepted; files here do not expire


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    limit: int = Field(20, ge=1, le=100)
    after: str | None = None


def check_line(path: str, body: dict[str, Any]) -> None:
    """A line's body checked as the live endpoint checks it (400 naming the field); the runner calls it."""
    parse_model(SCHEMAS[path], body)


@bp.post("/batches")
def create() -> Response:
    """A new batch (`validating`) from a file of the account with purpose `batch`."""
    body = parse_model(CreateBody, json_object())
    caller = current_caller()
    source = files.load(body.input_file_id, caller.account.id)
    if source.purpose != "batch":
        raise InvalidRequest("The input file must have been uploaded with purpose \"batch\".",
                             param="input_file_id")
    row = store.create(caller.account.id, caller.key.id, body.endpoint, source.id,
                       body.completion_window, body.metadata)
    return jsonify(store.batch_object(row))


@bp.get("/batches")
def list_batches() -> Response:
    """The account's batches, newest first."""
    query = parse_model(ListQuery, request.args.to_dict())
    return jsonify(store.page(current_caller().account.id, query.limit, query.after))


@bp.get("/batches/<batch_id>")
def retrieve(batch_id: str) -> Response:
    """One batch."""
    return jsonify(store.batch_object(store.load(batch_id, current_caller().account.id)))


@bp.post("/batches/<batch_id>/cancel")
def cancel(batch_id: str) -> Response:
    """Cancel: `cancelling` until its runner stops it (`cancelled`, with the lines done so far)."""
    return jsonify(store.batch_object(store.cancel(batch_id, current_caller().account.id)))
