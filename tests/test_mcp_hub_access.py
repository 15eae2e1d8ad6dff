"""Pure parts of the hub: who may use which server, tool names, the allow-list's forms, the ASGI scope."""

from __future__ import annotations

import pytest

from gateway.accounting.mcp_allow_list import decode_allow_list, encode_allow_list, parse_labels
from gateway.config import build_settings
from gateway.errors import InvalidRequest, NotFound
from gateway.mcp.access import hub_servers, profile_allowed, profile_for, usable
from gateway.mcp.naming import hub_tool_name, tool_function_name
from gateway.mcp_hub.asgi import http_scope

SETTINGS = build_settings({
    "mcpServers": {
        "time": {"command": "t"},
        "docs": {"url": "https://docs.example/mcp", "scopes": ["acme"]},
        "search": {"url": "https://search.example/mcp"},
    },
    "profiles": {
        "acme/default": {"mcp_servers": ["time", "docs"]},
        "acme/research": {"mcp_servers": ["search", "time"]},
        "beta/default": {"mcp_servers": ["docs", "time"]},
    },
})


@pytest.mark.parametrize(("scope", "allow_list", "expected"), [
    ("acme", None, ["time", "docs", "search"]),  # every acme profile, each server once, config order
    ("beta", None, ["time"]),  # docs is listed in beta's profile, but its scopes exclude beta
    ("*", None, ["time", "docs", "search"]),
    (None, None, []),  # no scope: no profile
    ("gamma", None, []),
    ("acme", ["docs"], ["docs"]),
    ("acme", [], []),
    ("beta", ["docs", "time"], ["time"]),  # an allow-list never widens the scope
])
def test_hub_servers(scope, allow_list, expected):
    assert hub_servers(SETTINGS, scope, allow_list) == expected


def test_a_profiles_servers_are_narrowed_the_same_way():
    assert usable(SETTINGS, ["docs", "time", "gone"], "beta", None) == ["time"]
    assert usable(SETTINGS, ["search", "time"], "acme", ["time"]) == ["time"]


@pytest.mark.parametrize(("profile", "scope", "allowed"), [
    ("acme/default", "acme", True), ("acme/default", "*", True), ("acme/default", "beta", False),
    ("acme/default", None, False), ("acme/default", "acme/default", False),
])
def test_profile_allowed(profile, scope, allowed):
    assert profile_allowed(profile, scope) is allowed


@pytest.mark.parametrize(("profile", "scope"), [("acme/default", "beta"), ("acme/default", None), ("acme/gone", "acme")])
def test_profile_for_is_a_404_for_a_profile_the_scope_may_not_use(profile, scope):
    with pytest.raises(NotFound) as refused:
        profile_for(SETTINGS, profile, scope)
    assert refused.value.code == "profile_not_found"


def test_profile_for_gives_a_usable_profile():
    assert profile_for(SETTINGS, "acme/research", "acme").mcp_servers == ["search", "time"]
    assert profile_for(SETTINGS, "beta/default", "*").mcp_servers == ["docs", "time"]


@pytest.mark.parametrize(("text", "labels"), [
    ("time,docs", ["time", "docs"]), (" time , docs ,", ["time", "docs"]), ("", []), ("none", None), ("NONE", None),
])
def test_parse_labels(text, labels):
    assert parse_labels(text) == labels


def test_the_allow_list_is_checked_and_stored_as_json():
    stored = encode_allow_list(SETTINGS, ["time", "docs", "time"])
    assert stored == '["time", "docs"]' and decode_allow_list(stored) == ["time", "docs"]
    assert encode_allow_list(SETTINGS, None) is None and decode_allow_list(None) is None
    with pytest.raises(InvalidRequest, match="'nope'") as refused:
        encode_allow_list(SETTINGS, ["time", "nope"], param="--mcp-servers")
    assert refused.value.param == "--mcp-servers"


@pytest.mark.parametrize(("label", "tool"), [("time", "get_current_time"), ("tools", "get.time"), ("x" * 40, "y" * 40)])
def test_hub_names_are_the_loops_names_without_the_reserved_prefix(label, tool):
    name = hub_tool_name(label, tool)
    assert f"mcp__{name}" == tool_function_name(label, tool) and not name.startswith("mcp__")
    assert hub_tool_name("time", "get_current_time") == "time__get_current_time"


def test_the_asgi_scope_carries_no_credentials():
    environ = {"REQUEST_METHOD": "POST", "wsgi.url_scheme": "http", "QUERY_STRING": "", "SERVER_NAME": "gw",
               "SERVER_PORT": "8080", "CONTENT_TYPE": "application/json", "HTTP_AUTHORIZATION": "Bearer sk-gw-x",
               "HTTP_X_API_KEY": "sk-gw-y", "HTTP_COOKIE": "s=1", "HTTP_MCP_PROTOCOL_VERSION": "2025-11-25"}
    scope = http_scope(environ, "/mcp", {"extra": 1})
    assert dict(scope["headers"]) == {b"mcp-protocol-version": b"2025-11-25", b"content-type": b"application/json"}
    assert (scope["method"], scope["path"], scope["server"], scope["extra"]) == ("POST", "/mcp", ("gw", 8080), 1)
