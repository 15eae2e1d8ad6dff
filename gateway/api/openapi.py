"""GET /openapi.json: the OpenAPI 3.1 document of every public route, built from openapi_spec's rows.

Request bodies are the JSON Schemas of the pydantic models the views validate with, so the
document and the validation cannot drift apart. Every operation lists its errors in its base
path's dialect (OpenAI's on /v1 and the profile routes, OpenRouter's on /api/v1, Anthropic's on the
Messages routes, whose 503 is Anthropic's 529).
"""

from __future__ import annotations

import functools
import re
from importlib import metadata
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.api import API_PREFIXES
from gateway.api.openapi_spec import (
    ADMIN,
    CLIENT,
    INTEGER_PARAMS,
    NULLABLE_STRING,
    PUBLIC,
    ROOT,
    SCHEMAS,
    SHARED,
    STRING,
    Operation,
    ref,
)
from gateway.errors import ANTHROPIC, DIALECT_STATUSES, OPENAI, OPENROUTER, dialect_of
from gateway.responses.compaction import COMPACT_FIELDS
from gateway.responses.schema import CreateResponseRequest

bp = Blueprint("openapi", __name__)
PATH_PARAM = re.compile(r"{(\w+)}")
ERROR_SCHEMA = {OPENAI: "OpenAIError", OPENROUTER: "OpenRouterError", ANTHROPIC: "AnthropicError"}
STATUS_REASONS = {
    400: "Malformed JSON, a body past the gate's limits (depth 64, 64-bit integers, no NaN), or a bad field",
    401: "Missing, unknown or revoked key",
    402: "The balance or the key's spend limit cannot cover the request",
    404: "Unknown model, object, label, profile or route",
    409: "A built-in MCP server that is not available, or an object in the wrong state",
    413: "Body larger than `server.max_body_bytes`",
    422: "A request that breaks a contract rule (reserved tool names, MCP policy)",
    426: "A plain GET where a WebSocket upgrade is expected",
    429: "Rate limited, too many open streams, or too many failed authentications (see Retry-After)",
    500: "A bug, logged with the request id (no traceback is sent)",
    502: "Upstream unreachable, failed, or sent a broken stream",
    503: "The database, the MCP runtime or the rate-limit backend is unreachable",
    504: "Upstream timed out",
    529: "Overloaded: a 503 on the Messages routes, as Anthropic spells it",
    "4XX": "The upstream's own 4xx, passed through (with Retry-After on 429)",
}


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """This gateway's OpenAPI 3.1 document (no auth)."""
    return jsonify(document())


@functools.cache
def document() -> dict[str, Any]:
    """The whole document (built once per process)."""
    schemas, bodies = request_schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in SHARED:
        for prefix in API_PREFIXES.values():
            paths.setdefault(prefix + op.path, {})[op.method] = operation(op, prefix + op.path, bodies)
    for op in ROOT:
        paths.setdefault(op.path, {})[op.method] = operation(op, op.path, bodies)
    return {
        "openapi": "3.1.0",
        "info": {"title": "llm-gateway", "version": _version(),
                 "description": "An OpenAI- and OpenRouter-compatible LLM gateway with MCP tools and credits."},
        "security": [{"BearerAuth": []}, {"ApiKeyHeader": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "BearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key as a bearer token"},
                "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "AdminToken": {"type": "http", "scheme": "bearer",
                               "description": "The token in the env var named by `[admin] token_env`"},
            },
            "schemas": {**schemas, **SCHEMAS, **error_schemas()},
            "responses": error_responses(),
        },
    }


def request_schemas() -> tuple[dict[str, Any], dict[Any, dict[str, Any]]]:
    """Component schemas of every request model, and each body's schema (a $ref) by model or name."""
    models = list(dict.fromkeys(op.body for op in [*SHARED, *ROOT] if isinstance(op.body, type)))
    refs, definitions = models_json_schema([(model, "validation") for model in models],
                                           ref_template="#/components/schemas/{model}")
    schemas = definitions["$defs"]
    clash = set(schemas) & set(SCHEMAS)
    if clash:
        raise RuntimeError(f"request and answer schemas share names: {clash}")
    bodies: dict[Any, dict[str, Any]] = {model: refs[(model, "validation")] for model in models}
    create = schemas[_name(bodies[CreateResponseRequest])]
    schemas["CompactRequest"] = {
        "type": "object", "required": ["model"], "additionalProperties": False,
        "properties": {name: create["properties"][name] for name in COMPACT_FIELDS},
    }
    bodies["CompactRequest"] = ref("CompactRequest")
    bodies.update({op.body: ref(op.body) for op in [*SHARED, *ROOT] if isinstance(op.body, str) and op.body in SCHEMAS})
    return schemas, bodies


def operation(op: Operation, path: str, bodies: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """One operation object."""
    described: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method}{re.sub(r'[^A-Za-z0-9]+', '_', path)}".rstrip("_"),
    }
    parameters = [*path_parameters(path), *query_parameters(op.query)]
    if parameters:
        described["parameters"] = parameters
    if op.body is not None:
        described["requestBody"] = {
            "required": True,
            "description": "Any Content-Type is read as JSON; a body past the gate's limits is a 400."
            if op.body_type == "application/json" else f"A {op.body_type} body.",
            "content": {op.body_type: {"schema": bodies[op.body]}},
        }
    if op.auth == PUBLIC:
        described["security"] = []
    elif op.auth == ADMIN:
        described["security"] = [{"AdminToken": []}]
    described["responses"] = responses(op, dialect_of(path))
    return described


def responses(op: Operation, dialect: str) -> dict[str, Any]:
    """The answers: the success object(s), then every error status the operation can give."""
    answers: dict[str, Any] = {str(status): success(op, dialect) for status in op.ok_statuses}
    errors = (*(CLIENT if op.auth != PUBLIC else (500,)), *op.errors)
    errors = tuple(DIALECT_STATUSES.get(dialect, {}).get(status, status) for status in errors)
    for status in sorted({status for status in errors if status not in op.ok_statuses}, key=str):
        answers[str(status)] = {"$ref": f"#/components/responses/{ERROR_SCHEMA[dialect]}{status}"}
    return answers


def success(op: Operation, dialect: str) -> dict[str, Any]:
    """A success answer: its JSON object, an SSE stream where the request may ask for one, and its other forms."""
    if op.ok is None:
        return {"description": op.summary}
    name = op.ok if isinstance(op.ok, str) else op.ok[dialect]
    content: dict[str, Any] = {"application/json": {"schema": ref(name)}}
    if op.streams:
        content["text/event-stream"] = {}
    content.update((media_type, {"schema": {"type": "string"}}) for media_type in op.also_as)
    return {"description": op.summary, "content": content}


def path_parameters(path: str) -> list[dict[str, Any]]:
    """Each `{name}` of a path: an integer for `<int:...>` rules, else a non-empty segment without `/`."""
    return [{"name": name, "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 0} if name in INTEGER_PARAMS
             else {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}
            for name in PATH_PARAM.findall(path)]


def query_parameters(query: type[BaseModel] | dict[str, Any] | None) -> list[dict[str, Any]]:
    """Query parameters from a query model (its JSON Schema) or a {name: schema} table."""
    if query is None:
        return []
    if isinstance(query, dict):
        return [{"name": name, "in": "query", "schema": schema} for name, schema in query.items()]
    properties = query.model_json_schema()["properties"]
    return [{"name": name, "in": "query", "schema": _not_null(schema)} for name, schema in properties.items()]


def error_schemas() -> dict[str, Any]:
    """The error bodies: OpenAI's, OpenRouter's (integer `code`, optional `metadata`), Anthropic's."""
    openai = {"type": "object", "additionalProperties": False, "required": ["message", "type", "param", "code"],
              "properties": {"message": {"type": "string", "minLength": 1}, "type": STRING,
                             "param": NULLABLE_STRING, "code": NULLABLE_STRING}}
    openrouter = {"type": "object", "additionalProperties": False, "required": ["code", "message", "type", "param"],
                  "properties": {"code": {"type": "integer"}, "message": {"type": "string", "minLength": 1},
                                 "type": STRING, "param": NULLABLE_STRING, "metadata": {"type": "object"}}}
    anthropic = {"type": "object", "additionalProperties": False, "required": ["type", "message"],
                 "properties": {"type": STRING, "message": {"type": "string", "minLength": 1}}}
    schemas = {name: {"type": "object", "additionalProperties": False, "required": ["error"],
                      "properties": {"error": error}}
               for name, error in ((ERROR_SCHEMA[OPENAI], openai), (ERROR_SCHEMA[OPENROUTER], openrouter))}
    schemas[ERROR_SCHEMA[ANTHROPIC]] = {"type": "object", "additionalProperties": False, "required": ["type", "error"],
                                        "properties": {"type": {"const": "error"}, "error": anthropic}}
    return schemas


def error_responses() -> dict[str, Any]:
    """One response object per dialect and status, referenced by the operations."""
    answers = {}
    for schema in ERROR_SCHEMA.values():
        for status, reason in STATUS_REASONS.items():
            answer: dict[str, Any] = {"description": reason,
                                      "content": {"application/json": {"schema": ref(schema)}}}
            if status in (429, "4XX"):
                answer["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
            answers[f"{schema}{status}"] = answer
    return answers


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic `X | None` schema without its null branch (a query string is never null)."""
    branches = [branch for branch in schema.get("anyOf", []) if branch.get("type") != "null"]
    if len(branches) == 1:
        return {**{key: value for key, value in schema.items() if key != "anyOf"}, **branches[0]}
    return schema


def _name(reference: dict[str, str]) -> str:
    return reference["$ref"].rsplit("/", 1)[-1]


def _version() -> str:
    try:
        return metadata.version("llm-gateway")
    except metadata.PackageNotFoundError:
        return "0"
