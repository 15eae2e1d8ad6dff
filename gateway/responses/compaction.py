"""Compaction: a model-written summary of a conversation, sealed into an opaque `compaction` item.

The blob is AES-GCM (`cryptography`) under a key derived from the server secret (see
gateway.server_secret; changing the secret invalidates outstanding blobs). The account id is authenticated data: a blob
only opens for the account that made it. A compaction item passed back as input becomes a user
message carrying the summary (a user message, not a system one: many chat templates reject a
system message after the first position).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway import services
from gateway.accounting.keys import Caller
from gateway.accounting.meter import Meter
from gateway.accounting.tokens import usage_from_openai
from gateway.config import Settings
from gateway.errors import InvalidRequest, UnknownParameter
from gateway.ids import new_id
from gateway.responses import store, translate
from gateway.responses.echo import priced_usage
from gateway.responses.validation import parse_create_request
from gateway.server_secret import derived_key
from gateway.upstream import routing
from gateway.upstream.prepared import prepare

BLOB_PREFIX = "gwc1."
NONCE_BYTES = 12
KEY_INFO = b"gateway/responses/compaction/v1"
SUMMARY_HEADER = "Summary of the earlier conversation:\n"
SUMMARY_REQUEST = (
    "Summarise the conversation above so that it can be continued from the summary alone. Keep every "
    "fact, decision, name, number and open question. Reply with the summary only."
)


def compaction_key(settings: Settings) -> bytes:
    """The key that seals and opens compaction items."""
    return derived_key(settings, KEY_INFO)


def _associated_data(account_id: int) -> bytes:
    return f"account:{account_id}".encode()


def seal(summary: str, account_id: int, key: bytes) -> str:
    """An opaque, authenticated blob holding the summary, bound to one account."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(
        nonce, json.dumps({"summary": summary}).encode(), _associated_data(account_id)
    )
    return BLOB_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(blob: Any, account_id: int, key: bytes, param: str) -> str:
    """The summary inside a blob; 400 if it was altered, forged or made for another account."""
    try:
        if not isinstance(blob, str) or not blob.startswith(BLOB_PREFIX):
            raise ValueError("not a compaction blob")
        raw = base64.urlsafe_b64decode(blob[len(BLOB_PREFIX) :].encode())
        plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated_data(account_id))
        summary = json.loads(plain)["summary"]
        if not isinstance(summary, str):
            raise TypeError("bad payload")
    except (ValueError, TypeError, KeyError, InvalidTag, binascii.Error):
        raise InvalidRequest(
            "The compaction item's encrypted_content is invalid: altered, or not made for this account.",
            param=param,
            code="invalid_encrypted_content",
        ) from None
    return summary


def is_compaction_item(item: Any) -> bool:
    """Whether an input item is a `compaction` item."""
    return isinstance(item, dict) and item.get("type") == "compaction"


def summary_message(summary: str) -> dict[str, Any]:
    """The input message a compaction item expands into."""
    return {"type": "message", "role": "user", "content": SUMMARY_HEADER + summary}


def expand_input(body: dict[str, Any], account_id: int, key: Callable[[], bytes]) -> dict[str, Any]:
    """The body with every compaction input item replaced by its summary message (same positions)."""
    items = body.get("input")
    if not isinstance(items, list) or not any(is_compaction_item(item) for item in items):
        return body
    secret_key = key()
    expanded = [
        summary_message(
            unseal(item.get("encrypted_content"), account_id, secret_key, f"input[{index}].encrypted_content")
        )
        if is_compaction_item(item)
        else item
        for index, item in enumerate(items)
    ]
    return {**body, "input": expanded}


def summary_request(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages asking the model to summarise the conversation in `messages`."""
    return [*messages, {"role": "user", "content": SUMMARY_REQUEST}]


def compacted_output(items: list[dict[str, Any]], blob: str) -> list[dict[str, Any]]:
    """OpenAI's compacted output: every user message of the conversation, then one compaction item."""
    kept = [item for item in items if _is_user_message(item) and not _is_summary(item)]
    return [*kept, {"type": "compaction", "id": new_id("cmp"), "encrypted_content": blob}]


def _is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") == "user"


def _is_summary(item: dict[str, Any]) -> bool:
    """A message an earlier compaction expanded into (its summary is carried by the new blob)."""
    content = item.get("content")
    first = content[0] if isinstance(content, list) and content else {}
    return isinstance(first, dict) and str(first.get("text", "")).startswith(SUMMARY_HEADER)


COMPACT_FIELDS = ("model", "input", "previous_response_id", "instructions", "prompt_cache_key")


def compact_response(body: dict[str, Any], caller: Caller, request_id: str) -> dict[str, Any]:
    """POST /v1/responses/compact: one upstream call summarises the conversation into a sealed item."""
    settings = services.settings()
    for name in body:
        if name not in COMPACT_FIELDS:
            raise UnknownParameter(f"Unknown parameter: '{name}'.", param=name)
    key = compaction_key(settings)
    body = expand_input(
        {**body, "input": [] if body.get("input") is None else body["input"]}, caller.account.id, lambda: key
    )
    req = parse_create_request(body)
    route = routing.resolve(settings, req.model)
    history = store.history_before(req.previous_response_id, caller.account.id)
    items = history.items + store.stored_input_items(req.input_items())
    messages = summary_request(translate.input_to_messages(items, req.instructions))
    sent = prepare(route, "chat/completions", {"messages": messages}, settings.providers[route.provider], False)
    meter = Meter.admit(caller, [sent.estimate()], "responses/compact", request_id, settings, services.limiter())
    with meter.closed_on_failure():
        router = services.router()
        route, answer = router.call([sent], lambda prepared: router.client.post_json(
            prepared.provider, prepared.path, prepared.body, read_timeout_s=prepared.read_timeout_s))
    summary = _answer_text(answer)
    usage = usage_from_openai(answer.get("usage")) or meter.estimate(summary)
    meter.finish(usage, 200, route)
    return {
        "id": store.new_response_id(),
        "object": "response.compaction",
        "output": compacted_output(items, seal(summary, caller.account.id, key)),
        "created_at": int(time.time()),
        "usage": priced_usage(usage, meter, route),
    }


def _answer_text(answer: dict[str, Any]) -> str:
    choices = answer.get("choices") or [{}]
    content = (choices[0].get("message") or {}).get("content")
    return content if isinstance(content, str) else ""
