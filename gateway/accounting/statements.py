"""The accounting writer's SQL: the hot statements written out once per dialect, run on a raw cursor.

Peewee builds a query object per call; these few statements run per batch, so they are plain
SQL (sqlite3 caches their prepared form per connection). Placeholders are written `?` and turned
into `%s` for psycopg2. Datetimes go to SQLite as the text Peewee stores (`str(datetime)`).

On PostgreSQL every statement is a network round trip made while the batch holds its accounts'
row locks, so statements are collected and sent together: `BEGIN` goes with the account lock,
a batch's writes (`write`, `insert`) go in one multi-statement query with the reservation insert
(`insert_reservations`, whose RETURNING rows come back as that query's result). On SQLite each
statement runs at once (no round trip to save).
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from peewee import Database, SqliteDatabase

LOCK_ACCOUNTS = "SELECT id FROM account WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
ACCOUNT = ("SELECT id, remaining, expires_at, (expires_at IS NOT NULL AND expires_at <= ?) FROM credit_grant "
           "WHERE account_id = ? AND remaining <> 0 UNION ALL "
           "SELECT NULL, CAST(COALESCE(SUM(amount), 0) AS BIGINT), NULL, NULL FROM reservation "
           "WHERE account_id = ? AND status = 'open'")  # the grants, then one row (id NULL) with what is held
BUDGETS = "SELECT account_id, id, api_key_id, model, tag, period, amount FROM budget WHERE account_id IN ({})"
RESERVATIONS = "SELECT id, amount, status, api_key_id, model, tags FROM reservation WHERE id IN ({})"
SWEEP_ACCOUNT = ("UPDATE reservation SET status = 'swept' WHERE account_id = ? AND status = 'open' "
                 "AND expires_at <= ? RETURNING id, amount, api_key_id, model, tags")
SWEEP_ALL = "UPDATE reservation SET status = 'swept' WHERE status = 'open' AND expires_at <= ?"
SETTLE = "UPDATE reservation SET status = 'settled' WHERE id IN ({})"
GROW = "UPDATE reservation SET amount = amount + ? WHERE id = ? AND status = 'open'"
SET_REMAINING = "UPDATE credit_grant SET remaining = ? WHERE id = ?"
WINDOW = "SELECT requests, tokens FROM rate_window WHERE key_id = ? AND window_start = ?"
WINDOW_ADD = ("INSERT INTO rate_window (key_id, window_start, requests, tokens) VALUES (?, ?, ?, ?) "
              "ON CONFLICT (key_id, window_start) DO UPDATE SET requests = rate_window.requests + "
              "excluded.requests, tokens = rate_window.tokens + excluded.tokens")
WINDOW_SWEEP = "DELETE FROM rate_window WHERE window_start < ?"
RESERVATION_COLUMNS = ("account_id", "api_key_id", "amount", "status", "request_id", "created_at", "expires_at",
                       "model", "tags")
RESERVATION_RETURNING = " RETURNING id, api_key_id, amount, request_id"
LEDGER_COLUMNS = ("account_id", "api_key_id", "kind", "amount", "request_id", "note", "created_at", "model", "tags")
USAGE_COLUMNS = ("request_id", "api_key_id", "account_id", "endpoint", "model", "prompt_tokens", "completion_tokens",
                 "estimated", "status", "latency_ms", "cost", "created_at", "generation_id", "provider", "ttft_ms",
                 "finish_reason", "streamed", "cancelled", "cached_tokens", "cache_write_tokens", "reasoning_tokens",
                 "deployment", "attempts", "cache_hit", "end_user", "tags", "guardrails", "unit", "units",
                 "batch")
GRANT_COLUMNS = ("account_id", "amount", "remaining", "source", "expires_at", "created_at")
# a comma-joined tag list holds `,tag,` (the parameter: tag_needle) iff removing it shortens the list: exact, case-
# sensitive, without LIKE's wildcards, and the same on SQLite and PostgreSQL (gateway.accounting.usage_groups.has_tag)
TAG_CONDITION = "LENGTH(REPLACE(',' || tags || ',', ?, '')) < LENGTH(',' || tags || ',')"


def scope_spend(key: bool, model: bool, tag: bool, since: bool) -> str:
    """A budget scope's charges (since its period's start) and open holds, as two rows (BIGINT sums).

    Parameters, in order, for each of the two parts: account id, then the key id, model, tag pattern
    (`tag_needle`) of the filters set, then (charges only) the period's start.
    """
    filters = "account_id = ?"
    if key:
        filters += " AND api_key_id = ?"
    if model:
        filters += " AND model = ?"
    if tag:
        filters += f" AND {TAG_CONDITION}"
    period = " AND created_at >= ?" if since else ""
    return (f"SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_entry WHERE {filters} AND kind = 'charge'"
            f"{period} UNION ALL SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM reservation WHERE {filters} "
            "AND status = 'open'")


def tag_needle(tag: str) -> str:
    """What TAG_CONDITION looks for in a comma-joined tag list wrapped in commas."""
    return f",{tag},"


class Statements:
    """Runs the statements above on one database's raw cursor, in its dialect."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.postgres = not isinstance(db, SqliteDatabase)
        self._texts: dict[str, str] = {}
        self._writes: list[bytes] = []

    def text(self, sql: str) -> str:
        """`sql` with this driver's placeholders."""
        if not self.postgres:
            return sql
        converted = self._texts.get(sql)
        if converted is None:
            converted = self._texts[sql] = sql.replace("?", "%s")
        return converted

    def time(self, moment: datetime.datetime | None) -> Any:
        """A datetime as this database stores it."""
        return moment if self.postgres or moment is None else str(moment)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """All rows of a query (on PostgreSQL sent together with the collected writes)."""
        if self.postgres:
            self._writes.append(self.db.cursor().mogrify(self.text(sql), params))
            return self._send_all(fetch=True)
        cursor = self.db.cursor()
        cursor.execute(sql, params)
        return cursor.fetchall()

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row of a query."""
        return self.rows(sql, params)[0][0]

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement, at once."""
        self.send()
        self.db.cursor().execute(self.text(sql), params)

    def in_list(self, sql: str, ids: Sequence[int]) -> list[tuple]:
        """A query whose `IN ({})` takes `ids`."""
        return self.rows(sql.format(", ".join("?" * len(ids))), ids)

    def begin(self, durable: bool = True) -> None:
        """Open the batch's transaction (PostgreSQL: sent with the next statement).

        `durable=False` (PostgreSQL) commits without waiting for the WAL flush: for batches that
        only admit, whose holds a database crash could lose without losing a charge.
        """
        if not self.postgres:
            self.db.cursor().execute("BEGIN IMMEDIATE")
            return
        self._writes = [b"BEGIN"] if durable else [b"BEGIN", b"SET LOCAL synchronous_commit TO OFF"]

    def commit(self) -> None:
        """Commit the batch's transaction (with anything still collected)."""
        if self.postgres:
            self._writes.append(b"COMMIT")
            self._send_all(fetch=False)
        else:
            self.db.cursor().execute("COMMIT")

    def rollback(self) -> None:
        """Roll the batch's transaction back and forget collected writes."""
        self._writes = []
        self.db.cursor().execute("ROLLBACK")

    def lock_accounts(self, account_ids: Iterable[int], then: str | None = None) -> list[tuple]:
        """PostgreSQL: lock these account rows in id order (SQLite's BEGIN IMMEDIATE already holds the database).

        `then`, a query whose `IN ({})` takes the ids, runs once they are locked (on PostgreSQL in the same
        round trip); its rows are returned.
        """
        ids = sorted(set(account_ids))
        if self.postgres and ids:
            self._writes.append(self.db.cursor().mogrify(LOCK_ACCOUNTS, (ids,)))
            if then is None:
                self._send_all(fetch=True)
        return self.in_list(then, ids) if then is not None and ids else []

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """A write: at once on SQLite, collected on PostgreSQL."""
        if self.postgres:
            self._writes.append(self.db.cursor().mogrify(self.text(sql), params))
        else:
            self.db.cursor().execute(sql, params)

    def write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """A write per parameter row."""
        if self.postgres:
            for row in rows:
                self.write(sql, row)
        elif rows:
            self.db.cursor().executemany(sql, rows)

    def write_in_list(self, sql: str, ids: Sequence[int]) -> None:
        """A write whose `IN ({})` takes `ids`."""
        if ids:
            self.write(sql.format(", ".join("?" * len(ids))), ids)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows: one statement on PostgreSQL (collected), one prepared statement per row on SQLite."""
        if not rows:
            return
        if self.postgres:
            self._writes.append(self._insert_sql(table, columns, rows))
            return
        marks = ", ".join("?" * len(columns))
        self.db.cursor().executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def insert_reservations(self, rows: Sequence[Sequence[Any]]) -> list[int]:
        """Send collected writes and insert reservation rows (RESERVATION_COLUMNS); their ids, in row order."""
        if not rows:
            self.send()
            return []
        if self.postgres:
            self._writes.append(self._insert_sql("reservation", RESERVATION_COLUMNS, rows) + RESERVATION_RETURNING.encode())
            returned = self._send_all(fetch=True)
        else:
            marks = "(" + ", ".join("?" * len(RESERVATION_COLUMNS)) + ")"
            cursor = self.db.cursor()
            cursor.execute(f"INSERT INTO reservation ({', '.join(RESERVATION_COLUMNS)}) VALUES "
                           + ", ".join([marks] * len(rows)) + RESERVATION_RETURNING,
                           [value for row in rows for value in row])
            returned = cursor.fetchall()
        return match_ids(rows, returned)

    def send(self) -> None:
        """Send the collected writes (PostgreSQL), in one round trip."""
        if self._writes:
            self._send_all(fetch=False)

    def _send_all(self, fetch: bool) -> list[tuple]:
        cursor = self.db.cursor()
        statements, self._writes = self._writes, []
        cursor.execute(b"; ".join(statements))
        return cursor.fetchall() if fetch else []

    def _insert_sql(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
        cursor = self.db.cursor()
        marks = "(" + ", ".join(["%s"] * len(columns)) + ")"
        values = b", ".join(cursor.mogrify(marks, row) for row in rows)
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ".encode() + values


def match_ids(rows: Sequence[Sequence[Any]], returned: Sequence[tuple]) -> list[int]:
    """The id of each inserted reservation row, matched by (key, amount, request id).

    RETURNING promises no order for a multi-row insert; rows alike in all three are alike in
    every column a batch writes, so which of them gets which id makes no difference.
    """
    ids: dict[tuple, list[int]] = defaultdict(list)
    for rid, key_id, amount, request_id in returned:
        ids[(key_id, int(amount), request_id)].append(rid)
    return [ids[(row[1], row[2], row[4])].pop() for row in rows]
