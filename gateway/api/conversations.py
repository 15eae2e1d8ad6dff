"""The Conversations API: conversations with metadata, and their items (add, list, retrieve, delete)."""

from __future__ import annotations

from typing import Any, Literal

from flask import Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from gateway.accounting.keys import current_caller
from gateway.api.http import authenticated_blueprint, json_object, parse_model
from gateway.errors import InvalidRequest
from gateway.responses import conversations
from gateway.responses.schema import InputItem, ItemReference, Metadata

bp = authenticated_blueprint("conversations", __name__)


Items = list[InputItem]
MAX_ITEMS = conversations.MAX_ITEMS_PER_CALL


class ItemsBody(BaseModel):
    """Items to add: the input items of POST /v1/responses, at most 20 per call."""

    model_config = ConfigDict(extra="forbid")
    items: Items = Field(min_length=1, max_length=MAX_ITEMS)


class CreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: Items | None = Field(default=None, max_length=MAX_ITEMS)
    metadata: Metadata | None = None


class UpdateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metadata: Metadata | None


class ItemsQuery(BaseModel):
    """Query parameters of GET .../items (`include` is accepted and has nothing to add here)."""

    model_config = ConfigDict(extra="ignore")
    limit: int = Field(20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None


def account_id() -> int:
    return current_caller().account.id


def item_dicts(items: Items) -> list[dict[str, Any]]:
    """Parsed items as plain dicts (item references are refused: send the item itself)."""
    for index, item in enumerate(items):
        if isinstance(item, ItemReference):
            raise InvalidRequest("item_reference items cannot be added to a conversation.",
                                 param=f"items[{index}].type")
    return [item.model_dump(exclude_none=True, by_alias=True) for item in items]


@bp.post("/conversations")
def create_conversation() -> Response:
    """Create a conversation, optionally with its first items and metadata."""
    body = parse_model(CreateBody, json_object())
    return jsonify(conversations.create(account_id(), item_dicts(body.items or []), body.metadata or {}))


@bp.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str) -> Response:
    """A conversation of the caller's account."""
    return jsonify(conversations.load(conversation_id, account_id()))


@bp.post("/conversations/<conversation_id>")
def update_conversation(conversation_id: str) -> Response:
    """Replace a conversation's metadata."""
    body = parse_model(UpdateBody, json_object())
    return jsonify(conversations.update(conversation_id, account_id(), body.metadata or {}))


@bp.delete("/conversations/<conversation_id>")
def delete_conversation(conversation_id: str) -> Response:
    """Delete a conversation and its items."""
    return jsonify(conversations.delete(conversation_id, account_id()))


@bp.post("/conversations/<conversation_id>/items")
def add_items(conversation_id: str) -> Response:
    """Append up to 20 items."""
    items = item_dicts(parse_model(ItemsBody, json_object()).items)
    return jsonify(conversations.add_items(conversation_id, account_id(), items))


@bp.get("/conversations/<conversation_id>/items")
def list_items(conversation_id: str) -> Response:
    """One page of a conversation's items."""
    query = parse_model(ItemsQuery, request.args.to_dict())
    return jsonify(conversations.item_page(conversation_id, account_id(), query.limit, query.order, query.after))


@bp.get("/conversations/<conversation_id>/items/<item_id>")
def get_item(conversation_id: str, item_id: str) -> Response:
    """One item of a conversation."""
    return jsonify(conversations.get_item(conversation_id, account_id(), item_id))


@bp.delete("/conversations/<conversation_id>/items/<item_id>")
def delete_item(conversation_id: str, item_id: str) -> Response:
    """Delete one item; answers the conversation."""
    return jsonify(conversations.delete_item(conversation_id, account_id(), item_id))
