"""The `gateway` command: keys, db upgrade, config errors."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

from gateway import db
from gateway.accounting import keys
from gateway.cli import main
from gateway.config import load_settings
from gateway.server import GatewayServer, gunicorn_options
from gateway.tables import ApiKey


def config_file(tmp_path) -> str:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "cli.db"}"\n'
        '[providers.p]\nbase_url = "http://127.0.0.1:9/v1"\n[models.m]\nprovider = "p"\n'
    )
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_keys_create_list_revoke(tmp_path, capsys):
    config = config_file(tmp_path)
    code, out = run(capsys, "keys", "create", "--name", "alice", "--json", "--config", config)
    assert code == 0
    created = json.loads(out)
    assert {"id", "account_id", "key"} <= set(created) and created["key"].startswith("sk-gw-")
    _, out = run(capsys, "keys", "create", "--name", "bot", "--account", str(created["account_id"]),
                 "--json", "--config", config)
    assert json.loads(out)["account_id"] == created["account_id"]
    _, out = run(capsys, "keys", "create", "--name", "bob", "--json", "--config", config)
    assert json.loads(out)["account_id"] != created["account_id"]
    _, out = run(capsys, "keys", "list", "--json", "--config", config)
    assert [key["name"] for key in json.loads(out)] == ["alice", "bot", "bob"]
    assert created["key"] not in out
    code, out = run(capsys, "keys", "revoke", str(created["id"]), "--config", config)
    assert code == 0
    db.bind(f"sqlite:///{tmp_path / 'cli.db'}")
    with db.database.connection_context():
        assert ApiKey.get_by_id(created["id"]).revoked
        assert ApiKey.get_by_id(created["id"]).digest == keys.digest(created["key"])


def test_db_upgrade_is_idempotent(tmp_path, capsys):
    config = config_file(tmp_path)
    code, out = run(capsys, "db", "upgrade", "--config", config)
    assert code == 0 and out.startswith("applied: 0001_initial, 0002_billing")
    assert run(capsys, "--config", config, "db", "upgrade")[1] == "database is up to date\n"


def test_the_documented_admin_token_and_secret_do_not_break_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "admin-token-value")
    monkeypatch.setenv("GATEWAY_SECRET", "sealing-secret-value")
    code, out = run(capsys, "db", "upgrade", "--config", config_file(tmp_path))
    assert code == 0 and out.startswith("applied: 0001_initial")
    assert load_settings(config_file(tmp_path)).admin.token_env == "GATEWAY_ADMIN_TOKEN"


def test_config_error_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = \"x\"\n")
    assert main(["keys", "list", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway: config error: server.port:") and err.count("\n") == 1


def record_gunicorn_runs(monkeypatch, database) -> list[tuple[dict, set[str]]]:
    """Replace gunicorn's main loop; each run records its options and the tables present then."""
    runs: list[tuple[dict, set[str]]] = []

    def run(server: GatewayServer) -> None:
        with sqlite3.connect(database) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        runs.append((server.options, tables))

    monkeypatch.setattr(GatewayServer, "run", run)
    return runs


def test_serve_migrates_before_gunicorn_starts(tmp_path, capsys, monkeypatch):
    config = config_file(tmp_path)
    runs = record_gunicorn_runs(monkeypatch, tmp_path / "cli.db")
    code, out = run(capsys, "serve", "--config", config, "--port", "9123", "--threads", "3")
    assert code == 0 and "first API key" not in out
    [(options, tables)] = runs
    assert {"account", "api_key"} <= tables
    assert os.environ["GATEWAY_CONFIG"] == str(tmp_path / "config.toml")
    assert os.environ["GATEWAY_SERVER_PORT"] == "9123"  # workers load the same settings
    assert options == gunicorn_options(load_settings())
    assert (options["bind"], options["threads"]) == ("127.0.0.1:9123", 3)


def test_serve_shows_a_first_key_once_on_embedded_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path / 'embedded.db'}")
    record_gunicorn_runs(monkeypatch, tmp_path / "embedded.db")
    code, out = run(capsys, "serve")
    assert code == 0 and out.startswith("gateway: created your first API key (shown once): sk-gw-")
    assert run(capsys, "serve") == (0, "")


def test_serve_flag_out_of_range_is_a_config_error(tmp_path, capsys, monkeypatch):
    record_gunicorn_runs(monkeypatch, tmp_path / "cli.db")
    assert main(["serve", "--config", config_file(tmp_path), "--port", "70000"]) == 2
    assert capsys.readouterr().err.startswith("gateway: config error: server.port:")


def test_config_show_prints_the_effective_config_secrets_masked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEWAY_DATABASE_URL", "postgresql://gw:hunter2@db:5432/gateway")
    (tmp_path / "config.toml").write_text('[mcpServers.docs]\nurl = "https://mcp.example.com/mcp"\n'
                                          'headers = { Authorization = "Bearer s3cret" }\n')
    code, out = run(capsys, "config", "show")
    assert code == 0
    assert out.startswith("# Effective configuration: config.toml over the embedded defaults")
    assert "hunter2" not in out and "s3cret" not in out
    shown = tomllib.loads(out)
    assert shown["database"]["url"] == "postgresql://gw:***@db:5432/gateway"
    assert shown["mcpServers"]["docs"]["headers"] == {"Authorization": "***"}
    assert "smollm2" in shown["models"] and shown["mcp"]["default_profile"] == "default/default"
    (tmp_path / "shown.toml").write_text(out)
    code, again = run(capsys, "config", "show", "--config", str(tmp_path / "shown.toml"))
    assert code == 0 and again.splitlines()[1:] == out.splitlines()[1:]  # a base to copy: it loads as shown



def test_cli_runs_as_a_file_with_the_mcp_sdk_unshadowed(tmp_path):
    """`python gateway/cli.py` (what gunicorn's USR2 upgrade re-runs) imports the mcp SDK, not gateway/mcp."""
    script = Path(__file__).resolve().parent.parent / "gateway" / "cli.py"
    argv = [sys.executable, str(script), "keys", "create", "--name", "file", "--json", "--config", config_file(tmp_path)]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["key"].startswith("sk-gw-")
