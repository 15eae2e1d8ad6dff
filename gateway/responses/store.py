"""Stored responses: one row per response with its own input and output items and its parent's id.

A chain is never copied: each row holds only its turn, so storage grows linearly with the chain.
Reading a chain walks `previous_response_id` links one primary-key lookup at a time, oldest turn
first, and refuses chains deeper than MAX_CHAIN_DEPTH (so one request costs at most that many
lookups). A deleted ancestor ends the history there: the turns before it are gone with it.
Every read and write is scoped to the caller's account; another account's id is simply not found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting.keys import Caller
from gateway.errors import InvalidRequest, ResponseNotFound
from gateway.ids import new_id
from gateway.responses.translate import output_items_to_input
from gateway.tables import StoredResponse, utcnow

MAX_CHAIN_DEPTH = 1000
ACTIVE_STATUSES = ("queued", "in_progress")
ITEM_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
INPUT_PART_TYPES = {"assistant": "output_text"}


def new_response_id() -> str:
    """A fresh response id (`resp_` + 32 hex digits)."""
    return new_id("resp")


def stored_input_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as stored and listed: every item has an id; message content is a list of parts."""
    return [_stored_item(item) for item in items]


def _stored_item(item: dict[str, Any]) -> dict[str, Any]:
    item = dict(item)
    kind = item.get("type", "message")
    if kind == "message":
        item["type"] = "message"
        if isinstance(item["content"], str):
            part_type = INPUT_PART_TYPES.get(item["role"], "input_text")
            part = {"type": part_type, "text": item["content"]}
            item["content"] = [{**part, "annotations": []} if part_type == "output_text" else part]
        item.setdefault("status", "completed")
    item.setdefault("id", new_id(ITEM_ID_PREFIXES.get(kind, "item")))
    return item


def save(response: dict[str, Any], input_items: list[dict[str, Any]], caller: Caller) -> None:
    """Store a new response: its own input items, its output items and the rest of the object."""
    StoredResponse.create(
        id=response["id"],
        account=caller.account.id,
        api_key=caller.key.id,
        previous_response_id=response.get("previous_response_id"),
        status=response["status"],
        background=bool(response.get("background")),
        input_items=_json(input_items),
        **_result_columns(response),
    )


def _result_columns(response: dict[str, Any]) -> dict[str, str]:
    """The `body` (the object without its output) and `output_items` columns of a response."""
    body = {key: value for key, value in response.items() if key != "output"}
    return {"body": _json(body), "output_items": _json(response["output"])}


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _row(response_id: str, account_id: int, *columns: Any) -> StoredResponse | None:
    query = StoredResponse.select(*columns) if columns else StoredResponse.select()
    return query.where(StoredResponse.id == response_id, StoredResponse.account == account_id).first()


def _existing_row(response_id: str, account_id: int, *columns: Any) -> StoredResponse:
    row = _row(response_id, account_id, *columns)
    if row is None:
        raise ResponseNotFound(f"Response with id {response_id!r} not found.")
    return row


def _as_response(row: StoredResponse) -> dict[str, Any]:
    response = json.loads(row.body)
    response["status"] = row.status
    response["output"] = json.loads(row.output_items)
    keys = list(response)  # keep `output` where the spec puts it: right after `model`
    if "model" in keys:
        keys.remove("output")
        keys.insert(keys.index("model") + 1, "output")
    return {key: response[key] for key in keys}


def load(response_id: str, account_id: int) -> dict[str, Any]:
    """A stored response object, or 404."""
    return _as_response(_existing_row(response_id, account_id))


def status_of(response_id: str, account_id: int) -> tuple[str, bool]:
    """(status, background) of a stored response, or 404."""
    row = _existing_row(response_id, account_id, StoredResponse.status, StoredResponse.background)
    return row.status, row.background


def delete(response_id: str, account_id: int) -> None:
    """Delete a stored response, or 404."""
    deleted = (
        StoredResponse.delete()
        .where(StoredResponse.id == response_id, StoredResponse.account == account_id)
        .execute()
    )
    if not deleted:
        raise ResponseNotFound(f"Response with id {response_id!r} not found.")


@dataclass
class History:
    """What a new turn inherits from its chain: earlier turns' items and the MCP servers listed."""

    items: list[dict[str, Any]] = field(default_factory=list)
    listed_servers: set[str] = field(default_factory=set)


def history_before(previous_response_id: str | None, account_id: int) -> History:
    """The chain's history, or an empty one for a request that continues no response."""
    return chain_history(previous_response_id, account_id) if previous_response_id else History()


def chain_history(previous_response_id: str, account_id: int) -> History:
    """Every earlier turn's input and output items, oldest first (instructions are never stored here)."""
    turns: list[list[dict[str, Any]]] = []
    history = History()
    columns = (
        StoredResponse.previous_response_id,
        StoredResponse.status,
        StoredResponse.input_items,
        StoredResponse.output_items,
    )
    current: str | None = previous_response_id
    while current is not None:
        if len(turns) == MAX_CHAIN_DEPTH:
            raise InvalidRequest(
                f"The conversation is longer than {MAX_CHAIN_DEPTH} responses; compact it or start anew.",
                param="previous_response_id",
                code="conversation_too_long",
            )
        row = _row(current, account_id, *columns)
        if row is None:
            if not turns:
                raise ResponseNotFound(
                    f"Previous response with id {current!r} not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            break
        if not turns and row.status in ACTIVE_STATUSES:
            raise InvalidRequest(
                f"Previous response with id {current!r} is still {row.status}.", param="previous_response_id"
            )
        output = json.loads(row.output_items)
        history.listed_servers |= {
            item["server_label"] for item in output if item["type"] == "mcp_list_tools"
        }
        turns.append(json.loads(row.input_items) + output_items_to_input(output))
        current = row.previous_response_id
    history.items = [item for turn in reversed(turns) for item in turn]
    return history


def input_page(
    response_id: str, account_id: int, limit: int, order: str, after: str | None
) -> dict[str, Any]:
    """One page of a response's own input items, in OpenAI's list shape."""
    items = json.loads(_existing_row(response_id, account_id, StoredResponse.input_items).input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise InvalidRequest(f"No input item with id {after!r} in this response.", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


def move_status(response_id: str, new_status: str, from_statuses: tuple[str, ...]) -> bool:
    """Change a row's status only if it is currently one of `from_statuses`; True if it changed."""
    return bool(
        StoredResponse.update(status=new_status, updated_at=utcnow())
        .where(StoredResponse.id == response_id, StoredResponse.status.in_(from_statuses))
        .execute()
    )


def current_status(response_id: str) -> str | None:
    """A row's status (None once deleted); used by background runs to notice a cancel."""
    row = StoredResponse.select(StoredResponse.status).where(StoredResponse.id == response_id).first()
    return None if row is None else row.status


def finish_background(response: dict[str, Any]) -> bool:
    """Write a background run's result unless it was cancelled or deleted meanwhile; True if written."""
    fields = {**_result_columns(response), "updated_at": utcnow()}
    allowed = ("cancelled",) if response["status"] == "cancelled" else ACTIVE_STATUSES
    return bool(
        StoredResponse.update(status=response["status"], **fields)
        .where(StoredResponse.id == response["id"], StoredResponse.status.in_(allowed))
        .execute()
    )
