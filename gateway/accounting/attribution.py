"""Who a request's spend is attributed to: its tags and its end user, read from the header and the body (pure).

Tags come from the `X-Gateway-Tags` header (comma-separated, trimmed, empty items and repeats dropped) and
from OpenAI's `metadata` object: of it, only the keys `[attribution] metadata_keys` names, each recorded as
the tag `key:value`. Every tag uses the characters [A-Za-z0-9_.:/-] only and has at most `max_tag_length`
of them, and a request carries at most `max_tags` (header and metadata together); anything else is a 400
naming the header (or `metadata.key`), raised before admission, so a refused request leaves no usage row
and costs nothing.

The end user is OpenAI's `user` string, else Anthropic's `metadata.user_id`; it is cut to the usage
column's width. Values of the wrong type are left to the face's own validation (they name no end user and
no tag here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config import AttributionSettings
from gateway.errors import InvalidRequest

TAGS_HEADER = "X-Gateway-Tags"
TAG_PATTERN = re.compile(r"[A-Za-z0-9_.:/-]+")
MAX_JOINED_TAGS = 2048  # usage_entry.tags holds the tags comma-joined in this many characters
MAX_END_USER = 256  # usage_entry.end_user's width


@dataclass(frozen=True)
class Attribution:
    """A request's tags (in the order sent) and its end user, as its usage row records them."""

    tags: tuple[str, ...] = ()
    end_user: str | None = None


def attribution_of(header_values: Iterable[str], body: Mapping[str, Any],
                   settings: AttributionSettings) -> Attribution:
    """The tags and end user of a request with these `X-Gateway-Tags` header values and this JSON body."""
    tags = unique(header_tags(header_values, settings) + metadata_tags(body, settings))
    if len(tags) > settings.max_tags:
        raise InvalidRequest(f"A request may carry at most {settings.max_tags} tags ({TAGS_HEADER} and metadata "
                             f"together); it has {len(tags)}.", param=TAGS_HEADER)
    if len(",".join(tags)) > MAX_JOINED_TAGS:
        raise InvalidRequest(f"A request's tags may have at most {MAX_JOINED_TAGS} characters together.",
                             param=TAGS_HEADER)
    return Attribution(tags, end_user_of(body))


def header_tags(header_values: Iterable[str], settings: AttributionSettings) -> tuple[str, ...]:
    """The tags of the `X-Gateway-Tags` header (all its values), checked."""
    items = (item.strip() for value in header_values for item in value.split(","))
    return tuple(checked(item, settings, TAGS_HEADER) for item in items if item)


def metadata_tags(body: Mapping[str, Any], settings: AttributionSettings) -> tuple[str, ...]:
    """The `key:value` tags of the body's `metadata` for the keys the operator listed, checked."""
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        return ()
    return tuple(checked(f"{key}:{metadata[key]}", settings, f"metadata.{key}")
                 for key in settings.metadata_keys if isinstance(metadata.get(key), str) and metadata[key])


def end_user_of(body: Mapping[str, Any]) -> str | None:
    """OpenAI's `user`, else Anthropic's `metadata.user_id` (cut to MAX_END_USER characters); None if neither."""
    user = body.get("user")
    if not isinstance(user, str) or not user:
        metadata = body.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    return user[:MAX_END_USER] if isinstance(user, str) and user else None


def checked(tag: str, settings: AttributionSettings, param: str) -> str:
    """The tag if it fits the rules (characters, length), else a 400 naming where it came from."""
    if len(tag) > settings.max_tag_length:
        raise InvalidRequest(f"A tag in {param} is longer than {settings.max_tag_length} characters: "
                             f"{tag[:40]!r}.", param=param)
    if not TAG_PATTERN.fullmatch(tag):
        raise InvalidRequest(f"Tag {tag!r} in {param} may use only letters, digits and _ . : / -.", param=param)
    return tag


def unique(tags: Iterable[str]) -> tuple[str, ...]:
    """The tags without repeats, first occurrence kept."""
    return tuple(dict.fromkeys(tags))
