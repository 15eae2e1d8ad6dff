"""The databases a bench run uses: a throwaway SQLite file and, when a server answers, PostgreSQL."""

from __future__ import annotations

import importlib.util
import os
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlparse, urlunparse

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
BENCH_DATABASE = "gateway_bench"


def sqlite_url(directory: Path) -> str:
    """A fresh SQLite file in the run's temporary directory."""
    return f"sqlite:///{directory / 'bench.db'}"


def postgres_server_url() -> str | None:
    """GATEWAY_TEST_DATABASE_URL, else the default local server if its port answers, else None."""
    configured = os.environ.get("GATEWAY_TEST_DATABASE_URL")
    if configured:
        return configured
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return DEFAULT_POSTGRES_URL
    except OSError:
        return None


def has_postgres_driver() -> bool:
    """True when psycopg2 (the `postgres` extra) is installed."""
    return importlib.util.find_spec("psycopg2") is not None


def with_database_name(url: str, name: str) -> str:
    """The same server URL naming another database."""
    return urlunparse(urlparse(url)._replace(path="/" + name))


def _admin(url: str, statement: str) -> None:
    import psycopg2

    connection = psycopg2.connect(url, connect_timeout=5)
    try:
        connection.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def create_postgres_database(server_url: str) -> str:
    """(Re)create the `gateway_bench` database on that server; returns its URL."""
    _admin(server_url, f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
    _admin(server_url, f"CREATE DATABASE {BENCH_DATABASE}")
    return with_database_name(server_url, BENCH_DATABASE)


def drop_postgres_database(server_url: str) -> None:
    """Drop the bench database (its gateway must be stopped first)."""
    _admin(server_url, f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")


COUNT_QUERIES = {
    "usage_rows": "SELECT COUNT(*) FROM usage_entry WHERE api_key_id = {key}",
    "usage_ok": "SELECT COUNT(*) FROM usage_entry WHERE api_key_id = {key} AND status = 200",
    "charges": "SELECT COUNT(*) FROM ledger_entry WHERE api_key_id = {key} AND kind = 'charge'",
    "open_reservations": "SELECT COUNT(*) FROM reservation WHERE api_key_id = {key} AND status = 'open'",
}


def accounting_counts(url: str, key_id: int) -> dict[str, int]:
    """Rows the gateway wrote for one key: usage rows (all, status 200), ledger charges, open reservations."""
    queries = {name: sql.format(key=int(key_id)) for name, sql in COUNT_QUERIES.items()}
    if url.startswith("sqlite:///"):
        connection = sqlite3.connect(url[len("sqlite:///"):], timeout=10)
        try:
            return {name: connection.execute(sql).fetchone()[0] for name, sql in queries.items()}
        finally:
            connection.close()
    import psycopg2

    connection = psycopg2.connect(url, connect_timeout=5)
    try:
        with connection.cursor() as cursor:
            counts = {}
            for name, sql in queries.items():
                cursor.execute(sql)
                counts[name] = cursor.fetchone()[0]
            return counts
    finally:
        connection.close()
