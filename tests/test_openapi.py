"""GET /openapi.json: valid OpenAPI 3.1, every public route in it and nothing else, errors in dialect."""

from __future__ import annotations

import re
from typing import Any

import schemathesis

from gateway.errors import ANTHROPIC, OPENROUTER, dialect_of

# Routes on purpose not in the document, each with the reason.
PRIVATE = {
    "/metrics": "Prometheus text for the scraper; nginx lets only localhost reach it",
    "/static/<path:filename>": "Flask's static files",
}
NOT_OPENAPI = {
    "/dashboard": "the HTML dashboard (sessions and forms, not a JSON API)",
    "/mcp": "MCP Streamable HTTP: JSON-RPC, specified by MCP itself",
}
METHODS = {"get", "post", "put", "patch", "delete"}


def served_routes(app) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every rule in the url_map that the document must describe."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule in PRIVATE or rule.rule.startswith(tuple(NOT_OPENAPI)):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes |= {(method.lower(), path) for method in rule.methods if method.lower() in METHODS}
    return routes


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item if method in METHODS}


def test_the_document_is_valid_openapi_3_1_and_needs_no_key(client):
    answer = client.get("/openapi.json")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    document = answer.json
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema
    assert dangling_refs(document, document) == []


def test_every_public_route_is_documented_and_every_documented_route_exists(app, client):
    documented, served = documented_routes(client.get("/openapi.json").json), served_routes(app)
    assert served - documented == set(), "routes missing from the document"
    assert documented - served == set(), "documented routes that do not exist"


def test_errors_are_documented_in_each_base_paths_dialect(client):
    document = client.get("/openapi.json").json
    for path, item in document["paths"].items():
        expected = {OPENROUTER: "OpenRouterError", ANTHROPIC: "AnthropicError"}.get(dialect_of(path), "OpenAIError")
        for method, operation in item.items():
            errors = {status: answer["$ref"] for status, answer in operation["responses"].items()
                      if status.startswith(("4", "5")) and "$ref" in answer}
            assert errors, (method, path)
            assert all(ref.rsplit("/", 1)[-1].startswith(expected) for ref in errors.values()), (method, path)
    openrouter_error = document["components"]["schemas"]["OpenRouterError"]["properties"]["error"]
    assert openrouter_error["properties"]["code"] == {"type": "integer"}


def test_request_bodies_are_the_models_the_views_validate_with(client):
    document = client.get("/openapi.json").json
    schemas = document["components"]["schemas"]
    chat = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert chat["schema"] == {"$ref": "#/components/schemas/ChatRequest"}
    assert schemas["ChatRequest"]["additionalProperties"] is True  # extras are forwarded upstream
    assert schemas["CreateResponseRequest"]["additionalProperties"] is False  # unknown fields are a 400
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert document["paths"]["/admin/keys"]["post"]["security"] == [{"AdminToken": []}]


def dangling_refs(node: Any, document: dict[str, Any]) -> list[str]:
    """Every local `$ref` under `node` that points at nothing."""
    if isinstance(node, list):
        return [ref for child in node for ref in dangling_refs(child, document)]
    if not isinstance(node, dict):
        return []
    found = [ref for child in node.values() for ref in dangling_refs(child, document)]
    reference = node.get("$ref")
    if isinstance(reference, str):
        target: Any = document
        for part in reference.removeprefix("#/").split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        if target is None:
            found.append(reference)
    return found
