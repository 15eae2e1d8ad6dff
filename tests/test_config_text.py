"""`gateway config show`'s text: TOML that loads back to the same settings, with secrets masked."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.config import build_settings, load_settings
from gateway.config_text import masked_argv, masked_url, settings_as_toml

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


@pytest.mark.parametrize("url,shown", [
    ("sqlite:///gateway.db", "sqlite:///gateway.db"),
    ("postgresql://gw:hunter2@db:5432/gateway", "postgresql://gw:***@db:5432/gateway"),
    ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("https://mcp.example.com/mcp?api_key=hunter2&tenant=acme", "https://mcp.example.com/mcp?api_key=***&tenant=***"),
    ("http://127.0.0.1:18081/v1", "http://127.0.0.1:18081/v1"),
])
def test_urls_lose_their_passwords_and_query_values(url, shown):
    assert masked_url(url) == shown


@pytest.mark.parametrize("argv,shown", [
    (["--api_key", "hunter2", "--port", "1"], ["--api_key", "***", "--port", "1"]),
    (["--token=hunter2", "--model", "m.gguf"], ["--token=***", "--model", "m.gguf"]),
    (["--secret-file", "--verbose"], ["--secret-file", "--verbose"]),  # a flag followed by a flag
])
def test_secret_options_lose_their_values(argv, shown):
    assert masked_argv(argv) == shown


@pytest.mark.parametrize("source", ["embedded", "example"])
def test_the_text_loads_back_to_the_same_settings(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(str(EXAMPLE) if source == "example" else None, environ={})
    text = settings_as_toml(settings)
    assert build_settings(tomllib.loads(text)).model_dump() == settings.model_dump()


def test_secrets_are_masked():
    settings = build_settings({
        "database": {"url": "postgresql://gw:hunter2@db/gateway"},
        "providers": {"p": {"base_url": "http://x/v1", "command": ["server", "--api_key", "hunter2"]}},
        "models": {"m": {"provider": "p"}},
        "mcpServers": {"docs": {"url": "https://docs/mcp", "headers": {"Authorization": "Bearer hunter2"}},
                       "tool": {"command": "tool", "env": {"TOKEN": "hunter2"}, "args": ["--password=hunter2"]}},
    })
    text = settings_as_toml(settings)
    assert "hunter2" not in text
    shown = tomllib.loads(text)
    assert shown["mcpServers"]["docs"]["headers"] == {"Authorization": "***"}
    assert shown["mcpServers"]["tool"]["env"] == {"TOKEN": "***"}
    assert shown["providers"]["p"]["command"] == ["server", "--api_key", "***"]
