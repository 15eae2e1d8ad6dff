"""The JSON-body gate every transport passes first: strict JSON, bounded in depth and in numbers.

HTTP bodies (gateway.api.http), Responses WebSocket frames (gateway.api.responses_ws) and the MCP
hub's JSON-RPC messages (gateway.mcp_hub.views) all go through `parse_body`; it sits on the
ground floor so that every face can use the one gate.

A body is accepted whatever its Content-Type, as the big APIs do. It must be UTF-8 (RFC 8259),
be a JSON object, nest at most MAX_DEPTH levels, contain no NaN or Infinity, keep every integer within 64 bits and
every float finite, and hold only valid Unicode (no lone surrogate such as "\\ud800", which no
database or UTF-8 encoder downstream accepts). Anything else is a 400 `invalid_json` before any
other code reads it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gateway.errors import InvalidRequest, MalformedJson

MAX_DEPTH = 64
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # strict UTF-8 leaves escapes as the only way in


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object within the gate's limits, or a 400 saying what is wrong."""
    try:
        text = raw.decode("utf-8-sig")  # strict UTF-8, a leading BOM ignored (RFC 8259 allows it); json.loads
        # would also take UTF-16/32 and the UTF-8 bytes of lone surrogates
    except UnicodeDecodeError:
        raise MalformedJson("The request body is not valid UTF-8.") from None
    try:
        body = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int, parse_float=_finite_float)
    except RecursionError:
        raise MalformedJson(f"The request body nests deeper than {MAX_DEPTH} levels.") from None
    except ValueError as exc:
        raise MalformedJson(_reason(exc)) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if depth(body) > MAX_DEPTH:
        raise MalformedJson(f"The request body nests deeper than {MAX_DEPTH} levels.")
    if SURROGATE_ESCAPE.search(text) and not valid_unicode(body):
        raise MalformedJson("The request body contains a lone surrogate (e.g. \\ud800), which is not valid Unicode.")
    return body


class _Refused(ValueError):
    """A JSON value the gate refuses; its message goes to the client."""


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, _Refused) else "The request body is not valid JSON."


def _no_constant(name: str) -> Any:
    raise _Refused(f"The request body contains {name}, which is not valid JSON.")


def _bounded_int(text: str) -> int:
    value = int(text)
    if not MIN_INT <= value <= MAX_INT:
        raise _Refused(f"The request body contains the integer {text[:30]}, outside 64 bits.")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"The request body contains the number {text[:30]}, too large for a float.")
    return value


def depth(value: Any) -> int:
    """How deeply containers nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        pending.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def valid_unicode(value: Any) -> bool:
    """Whether every string (keys included) of a parsed JSON value encodes as UTF-8, without recursion."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return False
    return True
