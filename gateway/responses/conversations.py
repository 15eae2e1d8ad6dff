"""Conversations: durable item lists that the Responses `conversation` parameter reads and extends.

A conversation is one row (its metadata) plus one row per item, ordered by an auto-increment
`seq`; a response bound to a conversation appends only its own input and output items when it
completes (or is incomplete), so storage grows linearly with the turns, as chains do. Reading the
history is one indexed range scan, refused past MAX_HISTORY_ITEMS. Item ids are unique within a
conversation: an added item whose id is already there (or longer than 64 characters) gets a
fresh one. Every read and write is scoped to the caller's account; another account's id is 404.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

from peewee import IntegrityError

from gateway.db import database
from gateway.errors import InvalidRequest, NotFound
from gateway.ids import new_id
from gateway.responses import store
from gateway.responses.translate import output_items_to_input
from gateway.tables import Conversation, ConversationItem

log = logging.getLogger(__name__)
MAX_ITEMS_PER_CALL = 20
MAX_HISTORY_ITEMS = 10_000
APPENDED_STATUSES = ("completed", "incomplete")
ITEM_ID_LENGTH = 64


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _existing(conversation_id: str, account_id: int, param: str | None = None) -> Conversation:
    row = Conversation.get_or_none(Conversation.id == conversation_id, Conversation.account == account_id)
    if row is None:
        raise NotFound(f"Conversation with id {conversation_id!r} not found.", param=param)
    return row


def _as_conversation(row: Conversation) -> dict[str, Any]:
    created = row.created_at.replace(tzinfo=datetime.UTC).timestamp()
    return {"id": row.id, "object": "conversation", "created_at": int(created),
            "metadata": json.loads(row.metadata)}


def create(account_id: int, items: list[dict[str, Any]], metadata: dict[str, str]) -> dict[str, Any]:
    """A new conversation of the account, with its first items."""
    with database.atomic():
        row = Conversation.create(id=new_id("conv"), account=account_id, metadata=_json(metadata))
        _insert(row.id, store.stored_input_items(items))
    return _as_conversation(row)


def load(conversation_id: str, account_id: int) -> dict[str, Any]:
    """A conversation object, or 404."""
    return _as_conversation(_existing(conversation_id, account_id))


def update(conversation_id: str, account_id: int, metadata: dict[str, str]) -> dict[str, Any]:
    """Replace a conversation's metadata."""
    row = _existing(conversation_id, account_id)
    row.metadata = _json(metadata)
    row.save(only=[Conversation.metadata])
    return _as_conversation(row)


def delete(conversation_id: str, account_id: int) -> dict[str, Any]:
    """Delete a conversation and its items (responses made with it are kept)."""
    deleted = (
        Conversation.delete()
        .where(Conversation.id == conversation_id, Conversation.account == account_id)
        .execute()
    )
    if not deleted:
        raise NotFound(f"Conversation with id {conversation_id!r} not found.")
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


def add_items(conversation_id: str, account_id: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Append up to MAX_ITEMS_PER_CALL items; the added items as a list."""
    _existing(conversation_id, account_id)
    with database.atomic():
        added = _insert(conversation_id, store.stored_input_items(items))
    return _page(added, has_more=False)


def _insert(conversation_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert items in order, renaming ids already used in the conversation."""
    if not items:
        return []
    wanted = [item["id"] for item in items]
    taken = {
        row.item_id
        for row in ConversationItem.select(ConversationItem.item_id).where(
            ConversationItem.conversation == conversation_id, ConversationItem.item_id.in_(wanted)
        )
    }
    added = []
    for item in items:
        fresh = item["id"] in taken or len(item["id"]) > ITEM_ID_LENGTH
        kept = {**item, "id": new_id(store.ITEM_ID_PREFIXES.get(item["type"], "item"))} if fresh else item
        taken.add(kept["id"])
        added.append(kept)
    rows = [{"conversation": conversation_id, "item_id": item["id"], "body": _json(item)} for item in added]
    ConversationItem.insert_many(rows).execute()
    return added


def _item_row(conversation_id: str, account_id: int, item_id: str) -> ConversationItem:
    _existing(conversation_id, account_id)
    row = ConversationItem.get_or_none(
        ConversationItem.conversation == conversation_id, ConversationItem.item_id == item_id
    )
    if row is None:
        raise NotFound(f"Item with id {item_id!r} not found in conversation {conversation_id!r}.")
    return row


def get_item(conversation_id: str, account_id: int, item_id: str) -> dict[str, Any]:
    """One item of a conversation, or 404."""
    return json.loads(_item_row(conversation_id, account_id, item_id).body)


def delete_item(conversation_id: str, account_id: int, item_id: str) -> dict[str, Any]:
    """Delete one item; the conversation object (as OpenAI answers)."""
    _item_row(conversation_id, account_id, item_id).delete_instance()
    return load(conversation_id, account_id)


def item_page(
    conversation_id: str, account_id: int, limit: int, order: str, after: str | None
) -> dict[str, Any]:
    """One page of a conversation's items, in OpenAI's list shape (`desc`: newest first)."""
    _existing(conversation_id, account_id)
    query = ConversationItem.select(ConversationItem.body).where(
        ConversationItem.conversation == conversation_id
    )
    if after is not None:
        anchor = ConversationItem.get_or_none(
            ConversationItem.conversation == conversation_id, ConversationItem.item_id == after
        )
        if anchor is None:
            raise InvalidRequest(f"No item with id {after!r} in this conversation.", param="after")
        newer = order == "asc"
        query = query.where(ConversationItem.seq > anchor.seq if newer else ConversationItem.seq < anchor.seq)
    ordering = ConversationItem.seq.desc() if order == "desc" else ConversationItem.seq.asc()
    rows = list(query.order_by(ordering).limit(limit + 1))
    items = [json.loads(row.body) for row in rows[:limit]]
    return _page(items, has_more=len(rows) > limit)


def _page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def history(conversation_id: str, account_id: int) -> store.History:
    """Every item of the conversation as input for a new turn, oldest first (404 for a foreign id)."""
    _existing(conversation_id, account_id, param="conversation")
    rows = list(
        ConversationItem.select(ConversationItem.body)
        .where(ConversationItem.conversation == conversation_id)
        .order_by(ConversationItem.seq)
        .limit(MAX_HISTORY_ITEMS + 1)
    )
    if len(rows) > MAX_HISTORY_ITEMS:
        raise InvalidRequest(
            f"The conversation has more than {MAX_HISTORY_ITEMS} items; compact it or start a new one.",
            param="conversation",
            code="conversation_too_long",
        )
    items = [json.loads(row.body) for row in rows]
    listed = {item["server_label"] for item in items if item.get("type") == "mcp_list_tools"}
    return store.History([replayed for item in items for replayed in _replay(item)], listed)


def _replay(item: dict[str, Any]) -> list[dict[str, Any]]:
    """An item as the next turn's input: assistant messages keep their text parts, tool lists drop."""
    if item.get("type") == "message" and item.get("role") != "assistant":
        return [item]
    return output_items_to_input([item])


def append_turn(conversation_id: str, input_items: list[dict[str, Any]], output: list[dict[str, Any]]) -> None:
    """Append a finished turn's own input and output items (a conversation deleted meanwhile is skipped)."""
    try:
        with database.atomic():
            _insert(conversation_id, [*input_items, *output])
    except IntegrityError:
        log.info("conversation %s was deleted before its turn could be appended", conversation_id)
