"""`gateway serve`'s pieces: gunicorn options from Settings (also via deploy/gunicorn.conf.py), the database step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from gunicorn.app.base import Application
from gunicorn.config import Config

from gateway.config import EMBEDDED_PROFILE, EMBEDDED_SCOPE, build_settings, load_settings
from gateway.server import gunicorn_options, prepare_database

GUNICORN_CONF = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"


class ConfigFileReader(Application):
    """gunicorn's own config-file loading, without its command line."""

    def load_config(self) -> None:
        pass

    def init(self, parser, opts, args) -> None:
        pass

    def load(self) -> None:
        pass


def as_gunicorn_sees(options: dict) -> dict:
    """The options after gunicorn's own validation (e.g. `bind` becomes a list)."""
    config = Config()
    for key, value in options.items():
        config.set(key, value)
    return {key: config.settings[key].get() for key in options}


def test_gunicorn_options_come_from_the_server_table():
    settings = build_settings({"server": {"host": "0.0.0.0", "port": 9001, "workers": 3, "threads": 7}})
    options = gunicorn_options(settings)
    assert (options["bind"], options["workers"], options["threads"]) == ("0.0.0.0:9001", 3, 7)
    assert options["worker_class"] == "gateway.serving.worker.GatewayWorker"
    assert as_gunicorn_sees(options)["bind"] == ["0.0.0.0:9001"]


def test_deploy_conf_yields_the_options_of_the_function(tmp_path, monkeypatch):
    config = tmp_path / "gateway.toml"
    config.write_text('[server]\nhost = "10.0.0.5"\nport = 9100\nworkers = 5\nthreads = 9\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    monkeypatch.setenv("GATEWAY_SERVER_THREADS", "11")
    reader = ConfigFileReader()
    namespace = reader.load_config_from_module_name_or_filename(str(GUNICORN_CONF))
    expected = gunicorn_options(load_settings())
    assert expected["threads"] == 11 and expected["bind"] == "10.0.0.5:9100"
    assert {key: namespace[key] for key in expected} == expected
    assert {key: reader.cfg.settings[key].get() for key in expected} == as_gunicorn_sees(expected)


def test_deploy_conf_stops_on_a_config_error(tmp_path, monkeypatch):
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nport = 0\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    with pytest.raises(SystemExit, match=r"gateway: config error: server\.port:"):
        ConfigFileReader().load_config_from_module_name_or_filename(str(GUNICORN_CONF))


def table_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_prepare_database_migrates_without_a_key_for_a_config_file(tmp_path):
    path = tmp_path / "serve.db"
    assert prepare_database(build_settings({"database": {"url": f"sqlite:///{path}"}})) is None
    assert {"account", "api_key"} <= table_names(path)


def test_prepare_database_creates_the_first_key_once_on_embedded_defaults(tmp_path):
    path = tmp_path / "embedded.db"
    settings = build_settings({"database": {"url": f"sqlite:///{path}"}}, embedded=True)
    secret = prepare_database(settings)
    assert secret is not None and secret.startswith("sk-gw-")
    assert prepare_database(settings) is None
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT name FROM api_key").fetchall() == [("default",)]
        # its account may use the embedded profile "default/default"
        assert connection.execute("SELECT scope FROM account").fetchall() == [(EMBEDDED_SCOPE,)]
    assert EMBEDDED_PROFILE.split("/")[0] == EMBEDDED_SCOPE
