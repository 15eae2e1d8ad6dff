"""What a cached answer is filed under: a hash of the scope, the public model, the endpoint and the normalized body.

Pure: no I/O, no settings beyond what the caller passes. Two requests share a key only when they ask the
same model the same question in the same scope; fields that change how the answer is delivered or who it
is attributed to (stream, stream_options, user, metadata) and the gateway's own routing fields (models)
are not part of the question.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gateway.config import CacheSettings

CACHED_ENDPOINTS = frozenset({"chat/completions", "completions", "embeddings", "messages"})
# Not part of the question: how the answer is delivered, who it is attributed to, the gateway's fallbacks,
# and the model (the key names the public model itself).
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "models", "model"})


def normalized(value: Any) -> Any:
    """A JSON value with integral floats as integers (1.0 asks what 1 asks); dict keys are sorted when dumped."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(key): normalized(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [normalized(item) for item in value]
    return value


def cache_key(scope: str, model: str, endpoint: str, body: Mapping[str, Any]) -> str:
    """sha256 hex of the scope, the public model, the endpoint and the body without IGNORED_FIELDS, keys sorted."""
    question = {key: value for key, value in body.items() if key not in IGNORED_FIELDS}
    text = json.dumps([scope, model, endpoint, normalized(question)], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def cacheable(endpoint: str, body: Mapping[str, Any]) -> bool:
    """Whether an answer to `body` may be stored and reused.

    Never: other endpoints; `store: true` (the client asked the provider to keep this exchange); several
    samples (`n` > 1: the client wants variety); `tools: "auto"` and `mcp_servers` (the gateway or the
    provider runs tools, whose results may change and which may act on the world).
    """
    if endpoint not in CACHED_ENDPOINTS or body.get("store") or body.get("mcp_servers"):
        return False
    if body.get("tools") == "auto":
        return False
    samples = body.get("n")
    return samples is None or (isinstance(samples, int) and samples <= 1)


def cache_scope(account_id: int, settings: CacheSettings) -> str:
    """The account's own scope, or the operator's shared scope (a name no account scope can take)."""
    if settings.shared_scope:
        return f"shared:{settings.shared_scope}"
    return f"account:{account_id}"
