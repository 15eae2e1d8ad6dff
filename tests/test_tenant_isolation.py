"""No way across tenants: every route that takes an id refuses another account's object with 404.

The test walks the app's url_map, so a route added later with an id in its path must be listed
here (or the walk fails): ids of stored responses, conversations and their items, profiles and
built-in MCP servers of another scope. Ids that travel in a query or a body (a generation,
`previous_response_id`, `conversation`, WebSocket mode's `response.create`) have their own
tests. The intruder's 404 says exactly what an unknown id says, and the owner's objects are
unchanged afterwards.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from websockets.sync.client import connect

ADMIN_TOKEN = "isolation-admin-token"
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
ITEM = {"type": "message", "role": "user", "content": "hello"}
RPC = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
# A body for each method and route that needs one; the id is what is under test, not the body.
BODIES: dict[str, Any] = {
    "update_conversation": {"metadata": {"x": "y"}},
    "add_items": {"items": [ITEM]},
    "chat_completions": CHAT,
    "profile_hub": RPC,
}
# Path arguments naming tenant data, and where the owner's value comes from.
ID_ARGUMENTS = {"response_id", "conversation_id", "item_id", "scope", "profile", "label", "file_id", "batch_id"}
BATCH_LINE = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": CHAT}
# Routes with path arguments that are not tenant data, and why.
NOT_TENANT_DATA = {
    "/admin/": "the admin API: admin token only, an API key is a 401 (checked below)",
    "/dashboard/": "browser sessions; the dashboard's own tests check a member sees only their account",
    "/static/": "packaged files",
    "/dashboard/static/": "packaged files",
    "/.well-known/": "OAuth resource metadata, the same for everyone",
}


@pytest.fixture
def settings(make_settings, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    return make_settings(
        profiles={"alpha/p": {"mcp_servers": ["alpha-docs"]}, "beta/p": {}},
        mcpServers={"alpha-docs": {"url": "http://127.0.0.1:9/mcp", "scopes": ["alpha"]}},
    )


@pytest.fixture
def tenants(client, make_key) -> dict[str, Any]:
    """The owner's objects (account scope "alpha") and both tenants' headers (the intruder: "beta")."""
    owner = {"Authorization": f"Bearer {make_key('owner', scope='alpha')}"}
    intruder = {"Authorization": f"Bearer {make_key('intruder', scope='beta')}"}
    response = client.post("/v1/responses", json={"model": "test-model", "input": "hi"}, headers=owner).json
    conversation = client.post("/v1/conversations", json={"items": [ITEM]}, headers=owner).json
    items = client.get(f"/v1/conversations/{conversation['id']}/items", headers=owner).json["data"]
    chat = client.post("/v1/chat/completions", json=CHAT, headers=owner)
    upload = client.post("/v1/files", headers=owner, content_type="multipart/form-data", data={
        "purpose": "batch", "file": (io.BytesIO(json.dumps(BATCH_LINE).encode() + b"\n"), "in.jsonl")}).json
    batch = client.post("/v1/batches", headers=owner, json={
        "input_file_id": upload["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}).json
    ids = {"response_id": response["id"], "conversation_id": conversation["id"], "item_id": items[0]["id"],
           "scope": "alpha", "profile": "p", "label": "alpha-docs", "file_id": upload["id"], "batch_id": batch["id"],
           "generation": chat.headers.get("X-Generation-Id", chat.json["id"])}
    return {"owner": owner, "intruder": intruder, "ids": ids}


def tenant_routes(app) -> list[tuple[str, str, str]]:
    """(method, rule, endpoint) of every route whose path names tenant data."""
    found, unclassified = [], []
    for rule in app.url_map.iter_rules():
        if not rule.arguments or rule.rule.startswith(tuple(NOT_TENANT_DATA)):
            continue
        if rule.arguments <= ID_ARGUMENTS:
            found += [(method, rule.rule, rule.endpoint) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
        else:
            unclassified.append(rule.rule)
    assert not unclassified, f"routes with ids this test does not know (add them): {unclassified}"
    return found


def fill(rule: str, ids: dict[str, str]) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda match: ids[match.group(1)], rule)


def assert_refused_like_unknown(client, method: str, path: str, unknown_path: str, headers, body) -> None:
    refused = client.open(path, method=method, json=body, headers=headers)
    assert refused.status_code == 404, (method, path, refused.status_code, refused.get_data(as_text=True))
    unknown = client.open(unknown_path, method=method, json=body, headers=headers)
    assert unknown.status_code == 404, (method, unknown_path)
    error, expected = refused.json["error"], unknown.json["error"]
    if path.startswith("/mcp"):  # the hub's JSON-RPC dialect: the tree's type and code in `data`
        assert refused.json["jsonrpc"] == "2.0" and error["data"] == expected["data"], (method, path)
        assert (error["data"]["type"], error["data"]["status"]) == ("invalid_request_error", 404)
        return
    assert (error["type"], error["code"]) == (expected["type"], expected["code"]), (method, path)
    if path.startswith("/api/v1/") and not path.startswith("/api/v1/openai/"):
        assert error["code"] == 404  # OpenRouter's dialect
    else:
        assert set(error) == {"message", "type", "param", "code"} and isinstance(error["code"], str)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_every_route_with_an_id_refuses_another_accounts_object(app, client, tenants):
    routes = tenant_routes(app)
    covered = {rule for _, rule, _ in routes}
    for expected in ("/v1/responses/<response_id>", "/v1/responses/<response_id>/cancel",
                     "/v1/responses/<response_id>/input_items", "/api/v1/responses/<response_id>",
                     "/v1/conversations/<conversation_id>/items/<item_id>",
                     "/api/v1/openai/<scope>/<profile>/chat/completions", "/v1/mcp/servers/<label>/tools"):
        assert expected in covered
    ids = tenants["ids"]
    unknown = {name: "p" if name == "profile" else f"{value}-unknown" for name, value in ids.items()}
    for method, rule, endpoint in routes:
        body = BODIES.get(endpoint.rsplit(".", 1)[-1]) if method in ("POST", "PATCH") else None
        assert_refused_like_unknown(client, method, fill(rule, ids), fill(rule, unknown), tenants["intruder"], body)
    assert_untouched(client, tenants)


def body_id_cases(ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]]:
    """(method, path, body, the same request with an unknown id) for ids carried outside the path."""
    responses = {"model": "test-model", "input": "hi"}
    return [
        ("POST", "/v1/responses", {**responses, "previous_response_id": ids["response_id"]},
         {**responses, "previous_response_id": "resp_unknown"}),
        ("POST", "/api/v1/responses", {**responses, "previous_response_id": ids["response_id"]},
         {**responses, "previous_response_id": "resp_unknown"}),
        ("POST", "/v1/responses", {**responses, "conversation": ids["conversation_id"]},
         {**responses, "conversation": "conv_unknown"}),
        ("POST", "/v1/responses", {**responses, "conversation": {"id": ids["conversation_id"]}},
         {**responses, "conversation": {"id": "conv_unknown"}}),
        ("POST", "/v1/responses/compact", {**responses, "previous_response_id": ids["response_id"]},
         {**responses, "previous_response_id": "resp_unknown"}),
    ]


def test_ids_in_bodies_and_queries_are_scoped_to_the_account(app, client, tenants):
    ids, intruder = tenants["ids"], tenants["intruder"]
    for method, path, body, unknown in body_id_cases(ids):
        refused = client.open(path, method=method, json=body, headers=intruder)
        assert refused.status_code == 404, (path, body, refused.get_data(as_text=True))
        assert refused.json["error"]["code"] == client.open(path, method=method, json=unknown,
                                                            headers=intruder).json["error"]["code"]
    if any(rule.rule == "/api/v1/generation" for rule in app.url_map.iter_rules()):
        assert client.get(f"/api/v1/generation?id={ids['generation']}", headers=tenants["owner"]).status_code == 200
        refused = client.get(f"/api/v1/generation?id={ids['generation']}", headers=intruder)
        assert refused.status_code == 404 and refused.json["error"]["code"] == 404
    assert_untouched(client, tenants)


def test_an_api_key_never_opens_the_admin_api(app, client, tenants):
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", "1", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            answer = client.open(path, method=method, json={}, headers=tenants["owner"])
            assert answer.status_code == 401, (method, path, answer.status_code)


def assert_untouched(client, tenants: dict[str, Any]) -> None:
    """The owner still sees every object as it was."""
    owner, ids = tenants["owner"], tenants["ids"]
    response = client.get(f"/v1/responses/{ids['response_id']}", headers=owner)
    assert response.status_code == 200 and response.json["status"] == "completed"
    conversation = client.get(f"/v1/conversations/{ids['conversation_id']}", headers=owner)
    assert conversation.status_code == 200 and conversation.json["metadata"] == {}
    items = client.get(f"/v1/conversations/{ids['conversation_id']}/items", headers=owner).json["data"]
    assert [item["id"] for item in items] == [ids["item_id"]]


def test_websocket_mode_scopes_previous_response_id(live_server, tenants):
    url = live_server.replace("http://", "ws://") + "/v1/responses"
    create = {"type": "response.create", "model": "test-model", "input": "hi",
              "previous_response_id": tenants["ids"]["response_id"]}
    with connect(url, additional_headers=tenants["intruder"], open_timeout=5, close_timeout=2) as socket:
        socket.send(json.dumps(create))
        error = json.loads(socket.recv(timeout=10))
    assert error["type"] == "error" and error["status"] == 404
    assert error["error"]["code"] == "previous_response_not_found"
