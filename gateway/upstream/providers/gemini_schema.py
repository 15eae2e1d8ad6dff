"""JSON Schema as the Gemini API's `Schema` subset (function parameters and `responseSchema`).

Kept: type, format, title, description, nullable, enum, items, properties, required, anyOf,
minItems, maxItems, minProperties, maxProperties, minLength, maxLength, pattern, minimum, maximum,
default, example, propertyOrdering. Translated: `type: [T, "null"]` -> `type: T, nullable: true`;
`const` -> a one-value `enum`; local `$ref`s into `$defs` / `definitions` are inlined. Dropped
(the API rejects them): every other keyword, e.g. `$schema`, `additionalProperties`,
`exclusiveMinimum`, `examples`, `oneOf`/`allOf`, `not`, `if`/`then`. A `$ref` that points elsewhere,
or a recursive one, is a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

from gateway.upstream.providers.base import refuse

KEPT = {"type", "format", "title", "description", "nullable", "enum", "minItems", "maxItems", "minProperties",
        "maxProperties", "minLength", "maxLength", "pattern", "minimum", "maximum", "default", "example",
        "propertyOrdering", "required"}
MAX_REF_DEPTH = 16


def gemini_schema(schema: Any, param: str) -> dict[str, Any]:
    """The schema in Gemini's subset; `param` names the field in a 400."""
    if not isinstance(schema, dict):
        raise refuse(param, "a JSON schema object is required.")
    return _convert(schema, {**schema.get("definitions", {}), **schema.get("$defs", {})}, param, 0)


def _convert(schema: dict[str, Any], defs: dict[str, Any], param: str, depth: int) -> dict[str, Any]:
    if "$ref" in schema:
        return _convert(_resolve(schema["$ref"], defs, param, depth), defs, param, depth + 1)
    out = {key: value for key, value in schema.items() if key in KEPT}
    kind = schema.get("type")
    if isinstance(kind, list):
        types = [item for item in kind if item != "null"]
        out["type"] = types[0] if len(types) == 1 else "string"
        if "null" in kind:
            out["nullable"] = True
    if "const" in schema:
        out["enum"] = [schema["const"]]
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {name: _convert(value, defs, param, depth) for name, value in schema["properties"].items()
                             if isinstance(value, dict)}
    if isinstance(schema.get("items"), dict):
        out["items"] = _convert(schema["items"], defs, param, depth)
    if isinstance(schema.get("anyOf"), list):
        out["anyOf"] = [_convert(item, defs, param, depth) for item in schema["anyOf"] if isinstance(item, dict)]
    return out


def _resolve(ref: Any, defs: dict[str, Any], param: str, depth: int) -> dict[str, Any]:
    name = str(ref).rsplit("/", 1)[-1]
    if depth >= MAX_REF_DEPTH or not str(ref).startswith(("#/$defs/", "#/definitions/")) or name not in defs:
        raise refuse(param, f"Gemini's schema subset cannot take the $ref {ref!r} (recursive or not local).")
    return defs[name]
