"""Config loading: embedded defaults, TOML, env overrides, one-line errors, the example file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.config import EMBEDDED_PROFILE, ConfigError, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_embedded_defaults_serve_the_local_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.embedded
    assert settings.models["smollm2"].provider == "local"
    assert settings.providers["local"].empty_tool_call_content


def test_embedded_defaults_show_the_whole_product(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.mcpServers["time"].args == ["-m", "mcp_server_time", "--local-timezone", "UTC"]
    assert settings.profiles[EMBEDDED_PROFILE].mcp_servers == ["time"]
    assert (settings.mcp.default_profile, settings.mcp.max_loop_turns) == (EMBEDDED_PROFILE, 2)
    local = settings.providers["local"]
    assert not local.streams_tool_calls and not local.tool_choice_required


def test_a_file_without_models_is_merged_over_the_embedded_defaults(tmp_path):
    text = ('[server]\nport = 9000\n[providers.local]\ntimeout_s = 30.0\n'
            '[mcpServers.docs]\nurl = "https://mcp.example.com/mcp"\n'
            '[profiles."acme/default"]\nmcp_servers = ["time", "docs"]\n')
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.embedded and settings.server.port == 9000
    assert list(settings.models) == ["smollm2"] and set(settings.mcpServers) == {"time", "docs"}
    assert settings.providers["local"].timeout_s == 30.0 and settings.providers["local"].empty_tool_call_content
    assert set(settings.profiles) == {EMBEDDED_PROFILE, "acme/default"}


def test_a_file_with_models_is_the_whole_configuration(tmp_path):
    settings = load_settings(write(tmp_path, '[providers.p]\nbase_url = "http://x/v1"\n[models.m]\nprovider = "p"\n'),
                             environ={})
    assert not settings.embedded and list(settings.models) == ["m"] and list(settings.providers) == ["p"]
    assert (settings.mcpServers, settings.profiles, settings.mcp.default_profile) == ({}, {}, None)


def test_example_file_loads(monkeypatch):
    settings = load_settings(str(EXAMPLE), environ={})
    assert not settings.embedded
    assert settings.profiles["acme/default"].mcp_servers == ["time"]


def setting_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += setting_names(annotation, f"{prefix}{name}.")
        elif prefix:
            names.append(f"{prefix}{name}")
    return names


def test_every_setting_is_documented_in_the_example():
    text = EXAMPLE.read_text()
    from gateway.config import (
        GuardrailSettings,
        McpServerSettings,
        ModelSettings,
        ProfileSettings,
        ProviderSettings,
    )

    tables = setting_names(Settings) + [
        f"{table}.{name}"
        for table, model in (("providers", ProviderSettings), ("models", ModelSettings),
                             ("mcpServers", McpServerSettings), ("profiles", ProfileSettings),
                             ("guardrails", GuardrailSettings))
        for name in model.model_fields
    ]
    for dotted in tables:
        key = dotted.rsplit(".", 1)[1]
        assert f"\n{key} =" in text or f"# {key} =" in text, f"{dotted} is not in config.example.toml"
    assert tomllib.loads(text)


@pytest.mark.parametrize(
    "text,message",
    [
        ("[server]\nprot = 1\n", "server.prot: unknown setting"),
        ("[server]\nport = \"high\"\n", "server.port:"),
        ("[server]\nport = 70000\n", "server.port:"),
        ("[nonsense]\n", "nonsense: unknown setting"),
        ("[database]\nurl = \"mysql://x\"\n", "database.url:"),
        ("[models.m]\nprovider = \"ghost\"\n", "models.m.provider: no provider named 'ghost'"),
        ("[providers.p]\nbase_url = \"http://x/v1\"\nmystery = 1\n", "providers.p.mystery: unknown setting"),
        ("[mcpServers.t]\nargs = []\n", "mcpServers.t: set exactly one of command or url"),
        ("[mcpServers.t]\ncommand = \"x\"\n[profiles.bad]\nmcp_servers = [\"t\"]\n", "profiles.bad:"),
        ("[profiles.\"a/b\"]\nmcp_servers = [\"ghost\"]\n", "profiles.a/b.mcp_servers: no mcpServers.ghost"),
        ("[mcp]\ndefault_profile = \"x\"\n", "mcp.default_profile: no profile named 'x'"),
        ("[limits]\nbackend = \"redis\"\n", "limits.url: required when backend = \"redis\""),
        ("[responses]\nbackground_workers = 0\n", "responses.background_workers:"),
        ("[mcp]\nhttp_timeout_s = 0\n", "mcp.http_timeout_s:"),
        ("not toml = = 1", "config.toml"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        load_settings(str(tmp_path / "absent.toml"), environ={})


def test_environment_overrides(tmp_path):
    path = write(tmp_path, "[server]\nport = 9000\n")
    environ = {
        "GATEWAY_SERVER_PORT": "9100",
        "GATEWAY_DATABASE_URL": "postgresql://u@h/db",
        "VR_MCP_REQUEST_REMOTE_ENABLED": "false",
        "VR_MCP_REQUEST_REMOTE_URL_CHECKS": "0",
    }
    settings = load_settings(path, environ=environ)
    assert settings.server.port == 9100
    assert settings.database.url == "postgresql://u@h/db"
    assert settings.mcp.remote_enabled is False and settings.mcp.remote_url_checks is False


def test_bad_environment_value_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"limits\.rpm"):
        load_settings(write(tmp_path, ""), environ={"GATEWAY_LIMITS_RPM": "lots"})


def test_config_file_lookup_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text("[server]\nport = 1111\n")
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 2222\n")
    assert load_settings(environ={}).server.port == 1111
    assert load_settings(environ={"GATEWAY_CONFIG": str(other)}).server.port == 2222
    assert load_settings(str(other), environ={"GATEWAY_CONFIG": "/nonexistent"}).server.port == 2222


@pytest.mark.parametrize(
    "value,expected",
    [("false", False), ("0", False), ("no", False), ("TRUE", True), ("1", True), ("yes", True), ("", None)],
)
def test_vr_mcp_switches(tmp_path, value, expected):
    environ = {"VR_MCP_REQUEST_REMOTE_ENABLED": value, "VR_MCP_REQUEST_REMOTE_URL_CHECKS": value}
    settings = load_settings(write(tmp_path, "[mcp]\nremote_enabled = true\nremote_url_checks = true\n"), environ)
    want = True if expected is None else expected
    assert (settings.mcp.remote_enabled, settings.mcp.remote_url_checks) == (want, want)


@pytest.mark.parametrize("name", ["VR_MCP_REQUEST_REMOTE_ENABLED", "VR_MCP_REQUEST_REMOTE_URL_CHECKS"])
def test_vr_mcp_switch_garbage_names_the_variable(tmp_path, name):
    with pytest.raises(ConfigError, match=name):
        load_settings(write(tmp_path, ""), environ={name: "maybe"})


def test_default_profile_must_name_a_profile_of_the_merged_config(tmp_path):
    text = '[mcpServers.t]\ncommand = "x"\n[profiles."acme/default"]\nmcp_servers = ["t"]\n'
    settings = load_settings(write(tmp_path, text), environ={"GATEWAY_MCP_DEFAULT_PROFILE": "acme/default"})
    assert settings.mcp.default_profile == "acme/default"
    with pytest.raises(ConfigError, match=r"^mcp\.default_profile: no profile named 'acme/other'$"):
        load_settings(write(tmp_path, text), environ={"GATEWAY_MCP_DEFAULT_PROFILE": "acme/other"})


def test_knobs_have_defaults_and_env_overrides(tmp_path):
    defaults = load_settings(write(tmp_path, ""), environ={})
    assert defaults.responses.background_workers == 8
    assert (defaults.mcp.http_timeout_s, defaults.mcp.http_read_timeout_s) == (30.0, 300.0)
    environ = {"GATEWAY_RESPONSES_BACKGROUND_WORKERS": "3", "GATEWAY_MCP_HTTP_TIMEOUT_S": "4.5"}
    changed = load_settings(write(tmp_path, ""), environ=environ)
    assert changed.responses.background_workers == 3 and changed.mcp.http_timeout_s == 4.5


def test_the_spool_folder_must_be_a_writable_folder(tmp_path):
    spool = tmp_path / "spool"
    with pytest.raises(ConfigError, match=r"^uploads\.spool_dir: .* is not a folder this process can write to$"):
        load_settings(write(tmp_path, ""), environ={"GATEWAY_UPLOADS_SPOOL_DIR": str(spool)})
    spool.mkdir()
    settings = load_settings(write(tmp_path, ""), environ={"GATEWAY_UPLOADS_SPOOL_DIR": str(spool)})
    assert settings.uploads.spool_dir == str(spool)
    with pytest.raises(ConfigError, match=r"uploads\.spool_threshold_bytes"):
        load_settings(write(tmp_path, "[uploads]\nspool_threshold_bytes = 10\n"), environ={})
