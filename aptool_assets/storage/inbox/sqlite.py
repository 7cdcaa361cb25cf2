"""The embedded inbox: ``inbox.sqlite`` in WAL mode with ``synchronous=FULL`` (every commit fsynced),
shared by the receiver, the applying sensor and the CLI across processes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aptool_assets.storage.inbox.base import DATETIME_KEYS, Inbox
from aptool_assets.storage.sqlite_file import open_sqlite_wal


def _iso(value: dt.datetime) -> str:
    # One fixed UTC format, so text comparison in SQL is time comparison.
    if value.tzinfo is None:
        raise ValueError("datetimes stored in the inbox must be timezone-aware")
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _sqlite_param(value: Any) -> Any:
    return _iso(value) if isinstance(value, dt.datetime) else value


class _SqliteCursor:
    def __init__(self, con: sqlite3.Connection) -> None:
        self._cur = con.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(sql, [_sqlite_param(p) for p in params])

    def fetchall(self) -> list[dict]:
        return [dict(r) for r in self._cur.fetchall()]


class SqliteInbox(Inbox):
    backend = "sqlite"
    events_table = "webhook_events"
    dead_letters_table = "dead_letter_events"

    def __init__(self, path: str | os.PathLike, *, busy_timeout: float = 30.0, health_timeout: float = 2.0) -> None:
        self.path = Path(path).expanduser().resolve()
        self.busy_timeout = busy_timeout
        self.health_timeout = health_timeout
        self._lock = threading.RLock()
        self._con: sqlite3.Connection | None = None
        # One writer thread per process: async stores queue here instead of fighting over the
        # connection (SQLite serializes writers anyway).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aptool-inbox-sqlite")
        self._sql_insert = self._p(self._insert_sql())

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def _p(self, sql: str) -> str:
        return sql.replace("%s", "?")

    def _in(self, n: int) -> str:
        return ", ".join(["?"] * n)

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            self._con = open_sqlite_wal(self.path, self.busy_timeout)
        return self._con

    def pragmas(self) -> dict[str, Any]:
        with self._lock:
            con = self._connection()
            return {
                "journal_mode": con.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": con.execute("PRAGMA synchronous").fetchone()[0],
                "busy_timeout": con.execute("PRAGMA busy_timeout").fetchone()[0],
            }

    def _tables(self, timeout: float) -> set[str]:
        """The inbox tables the file holds, read over a fresh read-only connection (creates nothing)."""
        con = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=timeout)
        try:
            rows = con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)",
                (self.events_table, self.dead_letters_table),
            ).fetchall()
        finally:
            con.close()
        return {name for (name,) in rows}

    def exists(self) -> bool:
        if not self.path.is_file():
            return False
        try:
            return self._tables(self.health_timeout) == {self.events_table, self.dead_letters_table}
        except sqlite3.Error:
            return False

    def setup(self) -> None:
        if self.exists():
            return
        with self._transaction() as cur:
            cur.execute(
                """
                CREATE TABLE IF NOT EXISTS webhook_events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    event_id TEXT NOT NULL UNIQUE,
                    event_type TEXT NOT NULL,
                    event_timestamp TEXT NOT NULL,
                    received_at TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    raw_body BLOB,
                    status TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'applied', 'superseded', 'dead_letter')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at TEXT,
                    last_error TEXT,
                    first_failed_at TEXT,
                    applied_at TEXT,
                    run_id TEXT,
                    updated_at TEXT NOT NULL
                )
                """
            )
            cur.execute(
                "CREATE INDEX IF NOT EXISTS webhook_events_pending_idx ON webhook_events (seq) WHERE status = 'pending'"
            )
            cur.execute(
                """
                CREATE TABLE IF NOT EXISTS dead_letter_events (
                    event_id TEXT PRIMARY KEY,
                    event_type TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    first_failed_at TEXT NOT NULL,
                    last_failed_at TEXT NOT NULL,
                    replayed_at TEXT,
                    replay_count INTEGER NOT NULL DEFAULT 0
                )
                """
            )

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock:
            con = self._connection()
            con.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks
            try:
                yield _SqliteCursor(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        with self._lock:
            cur = _SqliteCursor(self._connection())
            cur.execute(sql, params)
            return [self._decode_sqlite(r) for r in cur.fetchall()]

    @staticmethod
    def _decode_sqlite(row: dict) -> dict:
        # Datetimes are stored as ISO text; the payload stays text (decoded defensively by the base). A
        # value that is not a timestamp stays text, for the base to mark rather than for a read to raise.
        for key, value in row.items():
            if key in DATETIME_KEYS and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    row[key] = dt.datetime.fromisoformat(value)
        return row

    def _insert_event(self, params: tuple) -> str:
        with self._lock:
            con = self._connection()
            # One statement in autocommit mode is its own (fsynced) transaction.
            rows = con.execute(self._sql_insert, [_sqlite_param(p) for p in params]).fetchall()
        return "accepted" if rows else "duplicate"

    async def astore(self, event_id, event_type, event_timestamp, payload, raw_body) -> str:
        params = self._insert_params(event_id, event_type, event_timestamp, payload, raw_body)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._insert_event, params)

    async def astore_dead_letter(self, event_id, event_type, event_timestamp, payload, raw_body, reason) -> str:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.store_dead_letter, event_id, event_type, event_timestamp, payload, raw_body, reason
        )

    def healthy(self) -> bool:
        # A fresh read-only connection: proves the file is there and readable, and does not
        # queue behind a write waiting on another process's lock.
        try:
            uri = f"{self.path.as_uri()}?mode=ro"
            con = sqlite3.connect(uri, uri=True, timeout=self.health_timeout)
            try:
                con.execute("SELECT 1 FROM webhook_events LIMIT 1").fetchall()
            finally:
                con.close()
            return True
        except sqlite3.Error:
            return False

    async def ahealthy(self) -> bool:
        try:
            async with asyncio.timeout(self.health_timeout + 1):
                return await asyncio.to_thread(self.healthy)
        except TimeoutError:
            return False

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            con, self._con = self._con, None
            if con is not None:
                con.close()
