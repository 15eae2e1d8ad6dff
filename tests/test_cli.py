"""The `gateway` command: keys, db upgrade, config errors."""

from __future__ import annotations

import json

from gateway import auth, db
from gateway.cli import main
from gateway.models import ApiKey


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
        assert ApiKey.get_by_id(created["id"]).digest == auth.digest(created["key"])


def test_db_upgrade_is_idempotent(tmp_path, capsys):
    config = config_file(tmp_path)
    code, out = run(capsys, "db", "upgrade", "--config", config)
    assert code == 0 and out.startswith("applied: 0001_initial, 0002_billing")
    assert run(capsys, "--config", config, "db", "upgrade")[1] == "database is up to date\n"


def test_config_error_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = \"x\"\n")
    assert main(["keys", "list", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway: config error: server.port:") and err.count("\n") == 1
