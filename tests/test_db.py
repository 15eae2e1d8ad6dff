"""Storage: migrations (idempotent, concurrent), SQLite pragmas, PostgreSQL."""

from __future__ import annotations

import multiprocessing
import runpy
from pathlib import Path

import pytest

from gateway import db, lifecycle
from gateway.tables import Account

WSGI = Path(__file__).resolve().parent.parent / "wsgi.py"


def upgrade_in_process(url: str, results) -> None:
    db.bind(url)
    results.put(db.upgrade())


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_concurrent_upgrades_apply_each_migration_once(database_url):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=upgrade_in_process, args=(database_url, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    applied = [results.get(timeout=5) for _ in workers]
    migrations = sorted(path.stem for path in db.MIGRATIONS_DIR.glob("[0-9]*.py"))
    assert sorted(applied, key=len) == [[], [], [], migrations]
    db.bind(database_url)
    assert db.upgrade() == []
    with db.database.connection_context():
        assert Account.select().count() == 0


def test_sqlite_runs_in_wal_mode(database_url):
    db.bind(database_url)
    db.upgrade()
    with db.database.connection_context():
        assert db.database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.database.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 10_000


def test_postgres_url_parsing():
    database = db.open_database("postgresql://us%40er:p%3Aw@db.example:6543/gw")
    assert database.database == "gw"
    assert database.connect_params["user"] == "us@er" and database.connect_params["password"] == "p:w"
    assert (database.connect_params["host"], database.connect_params["port"]) == ("db.example", 6543)


def test_importing_wsgi_does_no_database_work(tmp_path, monkeypatch):
    path = tmp_path / "fresh.db"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{path}"\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    app = runpy.run_path(str(WSGI))["app"]  # what `gunicorn wsgi:app` does in each worker
    try:
        assert list(tmp_path.glob("fresh.db*")) == []  # no connection, so no file and no tables
        assert db.upgrade()  # the app bound the configured database; migrating is a separate step
        assert path.is_file()
    finally:
        lifecycle.close(app)


def test_migrate_applies_pending_migrations_and_leaves_no_connection_open(tmp_path):
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    migrations = sorted(path.stem for path in db.MIGRATIONS_DIR.glob("[0-9]*.py"))
    assert db.migrate(url) == migrations
    assert db.database.is_closed() and not db.database._connections  # nothing to inherit across a fork
    assert db.migrate(url) == []
