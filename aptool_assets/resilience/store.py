"""Where circuit-breaker state and failed operations (dead letters) live, shared by every process.

Each Dagster run is its own process, and sensors run in the code server: an in-memory breaker would
forget every failure when the run ends. So the state lives in the platform's database, chosen like the
webhook inbox (``open_inbox``):

* **PostgreSQL** (``APTOOL_DATABASE_URL=postgresql://…``): ``aptool.circuit_breakers`` and
  ``aptool.failed_operations`` in the AP Tool database. Updates lock the service's row
  (``SELECT … FOR UPDATE``), so two processes never both take the half-open trial.
* **SQLite** otherwise (the embedded DuckDB warehouse admits one writer process, so not there):
  ``$DAGSTER_HOME/breakers.sqlite`` (``.aptool/`` without DAGSTER_HOME; ``APTOOL_BREAKER_PATH``
  overrides), WAL mode, updates under ``BEGIN IMMEDIATE``.

Rows are plain dicts with epoch-second floats, so :mod:`.breaker` holds all the logic once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aptool_assets.storage.sqlite_file import open_sqlite_wal

BREAKER_FIELDS = ("service", "state", "failures", "opened_at", "half_open_at", "reason", "trial_started_at",
                  "times_opened", "updated_at")
_TIME_FIELDS = ("opened_at", "half_open_at", "trial_started_at", "updated_at")
MAX_MESSAGE = 500


def _ts(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.timezone.utc)


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value)


class ResilienceStore(ABC):
    """Breaker rows and failed operations; every write is one committed transaction."""

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def read(self, service: str) -> dict | None:
        """The breaker row of ``service`` (None if it never failed), without locking."""

    @abstractmethod
    def read_all(self) -> list[dict]: ...

    @abstractmethod
    def update(self, service: str, change: Callable[[dict | None], dict | None]) -> dict | None:
        """Atomically replace the row with ``change(current)``; ``None`` from ``change`` keeps it."""

    @abstractmethod
    def add_failed_operation(self, service: str, operation: str, error_type: str, message: str,
                             context: dict | None = None) -> int: ...

    @abstractmethod
    def failed_operations(self, pending_only: bool = True) -> list[dict]: ...

    @abstractmethod
    def resolve_failed_operations(self, ids: list[int] | None = None) -> int:
        """Mark dead letters handled (all pending ones when ``ids`` is None); returns how many."""

    def close(self) -> None:  # noqa: B027 - optional
        pass


def _row_from_db(raw: dict) -> dict:
    row = {k: raw[k] for k in BREAKER_FIELDS}
    failures = row["failures"]
    row["failures"] = [float(x) for x in (json.loads(failures) if isinstance(failures, str) else failures or [])]
    for name in _TIME_FIELDS:
        row[name] = _epoch(row[name])
    row["times_opened"] = int(row["times_opened"] or 0)
    return row


class SqliteResilienceStore(ResilienceStore):
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
                "failures TEXT NOT NULL DEFAULT '[]', opened_at REAL, half_open_at REAL, reason TEXT, "
                "trial_started_at REAL, times_opened INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL)"
            )
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
        return _row_from_db(dict(raw)) if raw else None

    def read_all(self) -> list[dict]:
        with self._lock:
            rows = self._connection().execute("SELECT * FROM circuit_breakers ORDER BY service").fetchall()
        return [_row_from_db(dict(r)) for r in rows]

    def update(self, service, change):
        with self._lock:
            con = self._connection()
            con.execute("BEGIN IMMEDIATE")  # the write lock first: a read-then-write race is impossible
            try:
                raw = con.execute("SELECT * FROM circuit_breakers WHERE service = ?", (service,)).fetchone()
                current = _row_from_db(dict(raw)) if raw else None
                new = change(current)
                if new is not None:
                    values = [json.dumps(new["failures"]) if k == "failures" else new[k] for k in BREAKER_FIELDS]
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
                    con.execute("UPDATE failed_operations SET occurrences = occurrences + 1, last_occurred_at = ?, "
                                "context = ? WHERE id = ?", (now, json.dumps(context or {}), same["id"]))
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
                cur = con.execute("UPDATE failed_operations SET resolved_at = ? WHERE resolved_at IS NULL", (time.time(),))
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


class PostgresResilienceStore(ResilienceStore):
    """One connection per store (a lock serialises the client's threads); reconnects once if it broke."""

    def __init__(self, url: str, connect_timeout_s: int = 10):
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.RLock()
        self._con = None

    def describe(self) -> str:
        from aptool_assets.storage.warehouse import redact_url

        return f"postgres {redact_url(self.url)} (aptool.circuit_breakers)"

    def _connection(self):
        import psycopg
        from psycopg.rows import dict_row

        if self._con is None or self._con.closed:
            con = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                  connect_timeout=self.connect_timeout_s, application_name="aptool-breakers")
            with con.transaction():
                # Serialise first-time creation: concurrent CREATE … IF NOT EXISTS can still collide.
                con.execute("SELECT pg_advisory_xact_lock(hashtext('aptool.circuit_breakers'))")
                con.execute("CREATE SCHEMA IF NOT EXISTS aptool")
                con.execute(
                    "CREATE TABLE IF NOT EXISTS aptool.circuit_breakers (service text PRIMARY KEY, state text NOT NULL, "
                    "failures jsonb NOT NULL DEFAULT '[]', opened_at timestamptz, half_open_at timestamptz, reason text, "
                    "trial_started_at timestamptz, times_opened integer NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL)"
                )
                con.execute(
                    "CREATE TABLE IF NOT EXISTS aptool.failed_operations (id bigserial PRIMARY KEY, service text NOT NULL, "
                    "operation text NOT NULL, error_type text NOT NULL, message text, context jsonb, "
                    "occurred_at timestamptz NOT NULL DEFAULT now(), resolved_at timestamptz, "
                    "occurrences integer NOT NULL DEFAULT 1, last_occurred_at timestamptz)"
                )
            self._con = con
        return self._con

    def _run(self, fn):
        import psycopg

        with self._lock:
            try:
                return fn(self._connection())
            except psycopg.OperationalError:
                if self._con is not None and not self._con.closed:
                    raise
                self._con = None  # the connection broke (server restart, idle timeout): once more
                return fn(self._connection())

    def read(self, service):
        raw = self._run(lambda c: c.execute("SELECT * FROM aptool.circuit_breakers WHERE service = %s", (service,)).fetchone())
        return _row_from_db(raw) if raw else None

    def read_all(self):
        rows = self._run(lambda c: c.execute("SELECT * FROM aptool.circuit_breakers ORDER BY service").fetchall())
        return [_row_from_db(r) for r in rows]

    def update(self, service, change):
        def txn(con):
            with con.transaction():
                con.execute(
                    "INSERT INTO aptool.circuit_breakers (service, state, updated_at) VALUES (%s, 'closed', now()) "
                    "ON CONFLICT (service) DO NOTHING RETURNING service",
                    (service,),
                )
                raw = con.execute("SELECT * FROM aptool.circuit_breakers WHERE service = %s FOR UPDATE", (service,)).fetchone()
                current = _row_from_db(raw)
                new = change(current)
                if new is not None:
                    con.execute(
                        "UPDATE aptool.circuit_breakers SET state = %s, failures = %s::jsonb, opened_at = %s, "
                        "half_open_at = %s, reason = %s, trial_started_at = %s, times_opened = %s, updated_at = %s "
                        "WHERE service = %s",
                        (new["state"], json.dumps(new["failures"]), _ts(new["opened_at"]), _ts(new["half_open_at"]),
                         new["reason"], _ts(new["trial_started_at"]), new["times_opened"], _ts(new["updated_at"]),
                         service),
                    )
                return new if new is not None else current

        return self._run(txn)

    def add_failed_operation(self, service, operation, error_type, message, context=None):
        """The same unresolved failure again only counts up ``occurrences`` (a sensor may hit it every tick)."""
        params = (service, operation, error_type, (message or "")[:MAX_MESSAGE], json.dumps(context or {}))

        def txn(con):
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(hashtext('aptool.failed_operations'))")
                same = con.execute(
                    "UPDATE aptool.failed_operations SET occurrences = occurrences + 1, last_occurred_at = now(), "
                    "context = %s::jsonb WHERE resolved_at IS NULL AND service = %s AND operation = %s "
                    "AND error_type = %s AND message = %s RETURNING id",
                    (params[4], *params[:4]),
                ).fetchone()
                if same:
                    return int(same["id"])
                return int(con.execute(
                    "INSERT INTO aptool.failed_operations (service, operation, error_type, message, context, "
                    "last_occurred_at) VALUES (%s, %s, %s, %s, %s::jsonb, now()) RETURNING id",
                    params,
                ).fetchone()["id"])

        return self._run(txn)

    def failed_operations(self, pending_only=True):
        where = " WHERE resolved_at IS NULL" if pending_only else ""
        rows = self._run(lambda c: c.execute(f"SELECT * FROM aptool.failed_operations{where} ORDER BY id").fetchall())
        return [{**r, **{k: _epoch(r[k]) for k in ("occurred_at", "resolved_at", "last_occurred_at")}} for r in rows]

    def resolve_failed_operations(self, ids=None):
        if ids is None:
            sql, params = "UPDATE aptool.failed_operations SET resolved_at = now() WHERE resolved_at IS NULL", ()
        else:
            sql = "UPDATE aptool.failed_operations SET resolved_at = now() WHERE resolved_at IS NULL AND id = ANY(%s)"
            params = (list(ids),)
        return self._run(lambda c: c.execute(sql, params).rowcount)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


def default_store_path() -> Path:
    """``APTOOL_BREAKER_PATH``, else ``$DAGSTER_HOME/breakers.sqlite`` (``.aptool/breakers.sqlite``)."""
    from aptool_assets.settings import aptool_home

    override = os.environ.get("APTOOL_BREAKER_PATH")
    return Path(override) if override else aptool_home() / "breakers.sqlite"


def open_resilience_store(database_url: str | None = None) -> ResilienceStore:
    """The store that goes with the AP Tool database (``None``: ``APTOOL_DATABASE_URL``), like the inbox."""
    from aptool_assets.settings import postgres_url_or_none

    url = postgres_url_or_none(database_url)
    return PostgresResilienceStore(url) if url else SqliteResilienceStore(default_store_path())
