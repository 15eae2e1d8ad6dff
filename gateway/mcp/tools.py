"""MCP tool results as the tool loop sees them: tool inventory entries, rendered outcomes, redaction."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import mcp_types as types

from gateway.mcp.policy import strip_bearer


@dataclass(frozen=True)
class ToolInfo:
    """One tool of a server's inventory, as the loop and the discovery API need it."""

    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one tool call: exactly one of `output` / `error` is set."""

    output: str | None = None
    error: str | None = None


def tool_info(tool: types.Tool) -> ToolInfo:
    """Project an SDK tool onto ToolInfo."""
    annotations = tool.annotations
    return ToolInfo(
        name=tool.name,
        description=tool.description or "",
        input_schema=dict(tool.input_schema or {"type": "object", "properties": {}}),
        read_only=bool(annotations and annotations.read_only_hint),
    )


def render_content(blocks: Iterable[Any], structured: Any = None) -> str:
    """Render MCP content for a model: one line per block; structured content when there is no text.

    Servers are asked to mirror structured content in a text block, so it is shown as
    compact JSON only when no text block carries it already.
    """
    parts = [_render_block(block) for block in blocks]
    has_text = any(getattr(block, "type", None) == "text" for block in blocks)
    if structured is not None and not has_text:
        parts.append(json.dumps(structured, separators=(",", ":"), ensure_ascii=False))
    return "\n".join(parts)


def _render_block(block: Any) -> str:
    """One content block as text; binary payloads are described, not inlined."""
    kind = getattr(block, "type", None)
    if kind == "text":
        return block.text
    if kind in ("image", "audio"):
        return f"[{kind}: {block.mime_type}, {_base64_size(block.data)} bytes]"
    if kind == "resource_link":
        return f"[resource: {block.uri}]"
    if kind == "resource":
        resource = block.resource
        if getattr(resource, "text", None) is not None:
            return resource.text
        mime = resource.mime_type or "application/octet-stream"
        return f"[resource: {resource.uri}, {mime}, {_base64_size(resource.blob)} bytes]"
    return f"[{kind or 'unknown'} content]"


def _base64_size(data: str) -> int:
    """Decoded size of a base64 string, without decoding it."""
    return len(data.strip().rstrip("=")) * 3 // 4


def outcome_from_result(result: types.CallToolResult) -> ToolOutcome:
    """Turn a tool result into an outcome; `is_error` results become errors."""
    text = render_content(result.content, result.structured_content)
    if result.is_error:
        return ToolOutcome(error=text or "the tool reported an error")
    return ToolOutcome(output=text)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove secret values (also a bearer token's bare form), bearer tokens and URL credentials."""
    values = {form for secret in secrets if secret for form in (secret.strip(), strip_bearer(secret))}
    for secret in sorted((s for s in values if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    text = re.sub(r"(?i)\bbearer\s+\S+", "Bearer [redacted]", text)
    return re.sub(r"//[^/\s@]+@", "//[redacted]@", text)
