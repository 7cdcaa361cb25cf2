"""The embedded breaker store: ``breakers.sqlite`` in WAL mode, updates under ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from aptool_assets.storage.breakers.base import BREAKER_FIELDS, MAX_MESSAGE, RETIRED_COLUMN, BreakerStore, row_from_db
from aptool_assets.storage.sqlite_file import open_sqlite_wal


def _columns(con: sqlite3.Connection) -> set[str]:
    return {row["name"] for row in con.execute("PRAGMA table_info(circuit_breakers)").fetchall()}


def _migrate(con: sqlite3.Connection) -> None:
    """A file of the count-based breaker: ``failures`` becomes ``outcomes``, every window empty (see base)."""
    if RETIRED_COLUMN not in _columns(con):
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        if RETIRED_COLUMN in _columns(con):  # another process may have migrated it meanwhile
            con.execute(f"ALTER TABLE circuit_breakers RENAME COLUMN {RETIRED_COLUMN} TO outcomes")
            con.execute("UPDATE circuit_breakers SET outcomes = '[]'")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


class SqliteBreakerStore(BreakerStore):
    def __init__(self, path: Path | str, busy_timeout_s: float = 10.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        self._con: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            con = open_sqlite_wal(self.path, self.busy_timeout_s)
            con.execute(
                "CREATE TABLE IF NOT EXISTS circuit_breakers (service TEXT PRIMARY KEY, state TEXT NOT NULL, "
                "outcomes TEXT NOT NULL DEFAULT '[]', opened_at REAL, half_open_at REAL, reason TEXT, "
                "trial_started_at REAL, times_opened INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL)"
            )
            _migrate(con)
            con.execute(
                "CREATE TABLE IF NOT EXISTS failed_operations (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "service TEXT NOT NULL, operation TEXT NOT NULL, error_type TEXT NOT NULL, message TEXT, "
                "context TEXT, occurred_at REAL NOT NULL, resolved_at REAL, occurrences INTEGER NOT NULL DEFAULT 1, "
                "last_occurred_at REAL)"
            )
            self._con = con
        return self._con

    def read(self, service: str) -> dict | None:
        with self._lock:
            raw = self._connection().execute("SELECT * FROM circuit_breakers WHERE service = ?", (service,)).fetchone()
        return row_from_db(dict(raw)) if raw else None

    def read_all(self) -> list[dict]:
        with self._lock:
            rows = self._connection().execute("SELECT * FROM circuit_breakers ORDER BY service").fetchall()
        return [row_from_db(dict(r)) for r in rows]

    def update(self, service, change):
        with self._lock:
            con = self._connection()
            con.execute("BEGIN IMMEDIATE")  # the write lock first: a read-then-write race is impossible
            try:
                raw = con.execute("SELECT * FROM circuit_breakers WHERE service = ?", (service,)).fetchone()
                current = row_from_db(dict(raw)) if raw else None
                new = change(current)
                if new is not None:
                    values = [json.dumps(new["outcomes"]) if k == "outcomes" else new[k] for k in BREAKER_FIELDS]
                    con.execute(
                        f"INSERT OR REPLACE INTO circuit_breakers ({', '.join(BREAKER_FIELDS)}) "
                        f"VALUES ({', '.join('?' * len(BREAKER_FIELDS))})",
                        values,
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return new if new is not None else current

    def add_failed_operation(self, service, operation, error_type, message, context=None):
        message = (message or "")[:MAX_MESSAGE]
        now = time.time()
        with self._lock:
            con = self._connection()
            con.execute("BEGIN IMMEDIATE")
            try:
                same = con.execute(
                    "SELECT id FROM failed_operations WHERE resolved_at IS NULL AND service = ? AND operation = ? "
                    "AND error_type = ? AND message = ?",
                    (service, operation, error_type, message),
                ).fetchone()
                if same:
                    con.execute(
                        "UPDATE failed_operations SET occurrences = occurrences + 1, last_occurred_at = ?, "
                        "context = ? WHERE id = ?",
                        (now, json.dumps(context or {}), same["id"]),
                    )
                    row_id = int(same["id"])
                else:
                    cur = con.execute(
                        "INSERT INTO failed_operations (service, operation, error_type, message, context, occurred_at, "
                        "last_occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (service, operation, error_type, message, json.dumps(context or {}), now, now),
                    )
                    row_id = int(cur.lastrowid)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return row_id

    def failed_operations(self, pending_only=True):
        where = " WHERE resolved_at IS NULL" if pending_only else ""
        with self._lock:
            rows = self._connection().execute(f"SELECT * FROM failed_operations{where} ORDER BY id").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["context"] = json.loads(d["context"] or "{}")
            out.append(d)
        return out

    def resolve_failed_operations(self, ids=None):
        with self._lock:
            con = self._connection()
            if ids is None:
                cur = con.execute(
                    "UPDATE failed_operations SET resolved_at = ? WHERE resolved_at IS NULL", (time.time(),)
                )
            else:
                marks = ", ".join("?" * len(ids)) or "NULL"
                cur = con.execute(
                    f"UPDATE failed_operations SET resolved_at = ? WHERE resolved_at IS NULL AND id IN ({marks})",
                    (time.time(), *ids),
                )
            return cur.rowcount

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
