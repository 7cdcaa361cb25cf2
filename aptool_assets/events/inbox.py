"""The durable webhook inbox: one API (:class:`Inbox`), two stores.

The receiver (``aptool webhooks serve``) only ever *stores* events; a Dagster sensor later reads
:meth:`Inbox.pending`, applies the events to the published tables and marks them applied,
superseded, retried or dead-lettered (contract §5). The inbox is the hand-off between the two, so
an event is answered ``accepted`` only once it is committed and on disk.

Stores
------
* **PostgreSQL** (``APTOOL_DATABASE_URL=postgresql://…``): tables ``aptool.webhook_events`` and
  ``aptool.dead_letter_events`` in the AP Tool database itself. The receiver uses an asyncio
  connection pool (sized for 32 concurrent requests) in autocommit mode and decides
  accepted/duplicate with ``INSERT … ON CONFLICT (event_id) DO NOTHING RETURNING`` -- one round
  trip, and one statement for all the requests that arrive together (group commit,
  :class:`_PgBatchWriter`), so a burst costs a few commits rather than one per event. With
  ``synchronous_commit`` on (the server default; forced on for our sessions if the server has it
  off) the commit is WAL-flushed before the statement returns.
* **SQLite** (the embedded default, ``duckdb:///…`` or no URL): ``$DAGSTER_HOME/inbox.sqlite``
  (``.aptool/inbox.sqlite`` without DAGSTER_HOME; ``APTOOL_INBOX_PATH`` overrides), in WAL mode
  with ``synchronous=FULL`` so every commit is fsynced.

Why the embedded inbox is SQLite and not the DuckDB warehouse file: DuckDB admits one *process*
with the file open for writing at a time, and a Dagster run holds it for as long as it
materializes assets. The receiver must answer within milliseconds whatever Dagster is doing, and
the sensor (another process) must read the inbox while the receiver keeps writing. SQLite in WAL
mode gives exactly that: many processes, readers never block the writer, writers queue for a
few milliseconds on a lock (``busy_timeout``), and each commit is a durable fsync. (One commit,
one fsync per event: ~1,000 events/s on this class of machine -- ample for a district; the
PostgreSQL store group-commits and is the one for high volume.)

Tables (the columns answer "what happened to event X" from SQL alone)::

    webhook_events      seq (arrival order), event_id (unique), event_type, event_timestamp,
                        received_at, payload (the whole parsed body, JSON), raw_body (the signed
                        bytes), status ('pending' | 'applied' | 'superseded' | 'dead_letter'),
                        attempts, next_attempt_at, last_error, first_failed_at, applied_at,
                        run_id (the Dagster run that applied it), updated_at
    dead_letter_events  event_id (primary key), event_type, payload, reason, attempts,
                        first_failed_at, last_failed_at, replayed_at, replay_count

    SELECT status, attempts, last_error, applied_at, run_id FROM aptool.webhook_events WHERE event_id = 'X';

Life cycle: ``pending`` → ``applied`` | ``superseded`` (lost to a newer event for the same record)
| ``dead_letter`` (after retries, or at once for an unsupported type). :meth:`Inbox.replay` puts
dead letters back to ``pending``. ``seq`` is the arrival order; under concurrent PostgreSQL
inserts a lower ``seq`` can become visible a moment after a higher one, so consumers order by the
event ``timestamp`` when deciding which event wins (contract §5), not by ``seq`` alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aptool_assets.storage.sqlite_file import open_sqlite_wal

SUPPORTED_EVENT_TYPES = ("attendance.updated", "attendance.corrected", "student.enrolled", "student.withdrawn")

# Keys each event type's ``data`` must carry (contract §5). Optional keys (``minutes``,
# ``exitReason``) are not listed; ``period`` must be present but may be null (all-day).
REQUIRED_DATA: dict[str, tuple[str, ...]] = {
    "attendance.updated": ("studentId", "schoolId", "date", "period", "attendanceCode"),
    "attendance.corrected": (
        "studentId", "schoolId", "date", "period", "originalCode", "newCode", "reason", "correctedBy",
    ),
    "student.enrolled": ("studentId", "schoolId", "grade", "enterDate"),
    "student.withdrawn": ("studentId", "schoolId", "leaveDate"),
}
NULLABLE_DATA = frozenset({"period"})
_DATE_KEYS = frozenset({"date", "enterDate", "leaveDate"})
_ID_KEYS = frozenset({"studentId", "schoolId"})
_CODE_KEYS = frozenset({"attendanceCode", "originalCode", "newCode"})

STATUSES = ("pending", "applied", "superseded", "dead_letter")
UNSUPPORTED_TYPE_REASON = "unsupported event type"
MAX_EVENT_ID_LENGTH = 256
MAX_EVENT_TYPE_LENGTH = 100


def data_problem(event_type: str, data: dict[str, Any]) -> str | None:
    """Why ``data`` is not a valid payload for ``event_type`` (None when it is).

    Checks the contract's required keys (``period`` present, possibly null) and the types the
    contract states: IDs are integers (or digit strings), dates are ``YYYY-MM-DD``, ``period`` is
    a string or null, attendance codes are strings (``''`` clears), ``minutes`` is an integer.
    Messages name keys only, never values, so they are safe to return and log.
    """
    required = REQUIRED_DATA.get(event_type)
    if required is None:
        return None
    missing = [k for k in required if k not in data]
    if missing:
        return f"data is missing required keys for {event_type}: {', '.join(missing)}"
    for key in required:
        value = data[key]
        if value is None:
            if key in NULLABLE_DATA:
                continue
            return f"data.{key} must not be null"
        if key in _ID_KEYS and not _is_id(value):
            return f"data.{key} must be an integer ID"
        if key in _DATE_KEYS and not _is_date(value):
            return f"data.{key} must be a date as YYYY-MM-DD"
        if (key in _CODE_KEYS or key == "period") and not isinstance(value, str):
            return f"data.{key} must be a string"
    minutes = data.get("minutes")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int)):
        return "data.minutes must be an integer"
    return None


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class InboxEvent:
    """One stored event as the applying sensor sees it."""

    seq: int
    event_id: str
    event_type: str
    event_timestamp: dt.datetime
    received_at: dt.datetime
    payload: dict
    status: str
    attempts: int
    next_attempt_at: dt.datetime | None
    last_error: str | None
    first_failed_at: dt.datetime | None = None  # first failed attempt since receipt or the last replay

    @property
    def data(self) -> dict:
        return self.payload.get("data") or {}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _check_event_args(event_id: Any, event_type: Any, event_timestamp: Any) -> None:
    if not isinstance(event_id, str) or not event_id or "\x00" in event_id:
        raise ValueError("event_id must be a non-empty string without NUL characters")
    if not isinstance(event_type, str) or "\x00" in event_type:
        raise ValueError("event_type must be a string without NUL characters")
    if not isinstance(event_timestamp, dt.datetime) or event_timestamp.tzinfo is None:
        raise ValueError("event_timestamp must be a timezone-aware datetime")


def _payload_text(payload: dict) -> str:
    # json.dumps escapes control characters (NUL included), so the text is valid for PostgreSQL.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


_EVENT_COLS = (
    "seq, event_id, event_type, event_timestamp, received_at, payload, status, attempts, "
    "next_attempt_at, last_error, first_failed_at, applied_at, run_id, updated_at"
)
_INBOX_EVENT_COLS = (
    "seq, event_id, event_type, event_timestamp, received_at, payload, status, attempts, next_attempt_at, last_error, "
    "first_failed_at"
)
_DEAD_COLS = (
    "d.event_id, d.event_type, d.reason, d.attempts, d.first_failed_at, d.last_failed_at, d.replayed_at, "
    "d.replay_count, w.seq, w.status, w.received_at"
)
_DATETIME_KEYS = frozenset({
    "event_timestamp", "received_at", "next_attempt_at", "first_failed_at", "applied_at", "updated_at",
    "last_failed_at", "replayed_at",
})
_CHUNK = 500


class Inbox(ABC):
    """The durable inbox. Both stores implement every method with the same semantics.

    Writes are transactions; when a write method returns, its effect is committed and durable.
    Status changes only ever move an event out of the state the caller expects (``pending`` for
    :meth:`mark_applied`, :meth:`mark_retry`, :meth:`dead_letter`; ``dead_letter`` for
    :meth:`replay`), so concurrent or repeated calls are safe no-ops.
    """

    backend: str
    events_table: str
    dead_letters_table: str

    # -- connection plumbing (per store) -------------------------------------------------------
    @abstractmethod
    def setup(self) -> None:
        """Create the tables and indexes if missing (idempotent, safe from several processes)."""

    @abstractmethod
    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor inside one transaction: ``cur.execute(sql, params)``, ``cur.fetchall()`` → dicts."""

    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        """A read in its own snapshot."""

    @abstractmethod
    def _insert_event(self, params: tuple) -> str:
        """Run :data:`_insert_sql` once; ``accepted`` when a row was inserted."""

    @abstractmethod
    async def astore(self, event_id: str, event_type: str, event_timestamp: dt.datetime, payload: dict,
                     raw_body: bytes) -> str:
        """:meth:`store` for the receiver's event loop (never blocks it)."""

    @abstractmethod
    async def astore_dead_letter(self, event_id: str, event_type: str, event_timestamp: dt.datetime,
                                 payload: dict, raw_body: bytes, reason: str) -> str:
        """:meth:`store_dead_letter` for the receiver's event loop."""

    @abstractmethod
    def healthy(self) -> bool:
        """True when the store answers (and the inbox table exists)."""

    @abstractmethod
    async def ahealthy(self) -> bool:
        """:meth:`healthy` without blocking the event loop (bounded by a short timeout)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (idempotent)."""

    def describe(self) -> str:
        """Where the inbox lives, safe to log (no password)."""
        return self.backend

    async def aopen(self) -> None:
        """Open async resources inside the serving event loop (the receiver's lifespan)."""

    async def aclose(self) -> None:
        """Close async resources opened by :meth:`aopen` / :meth:`astore`."""

    def _p(self, sql: str) -> str:
        return sql

    def _in(self, n: int) -> str:
        return ", ".join(["%s"] * n)

    # -- shared SQL ----------------------------------------------------------------------------
    def _insert_sql(self) -> str:
        return (
            f"INSERT INTO {self.events_table} (event_id, event_type, event_timestamp, received_at, payload, "
            f"raw_body, status, attempts, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 'pending', 0, %s) "
            f"ON CONFLICT (event_id) DO NOTHING RETURNING seq"
        )

    @staticmethod
    def _insert_params(event_id, event_type, event_timestamp, payload, raw_body) -> tuple:
        _check_event_args(event_id, event_type, event_timestamp)
        now = utcnow()
        return (event_id, event_type, event_timestamp, now, _payload_text(payload), bytes(raw_body), now)

    def store(self, event_id: str, event_type: str, event_timestamp: dt.datetime, payload: dict,
              raw_body: bytes) -> str:
        """Store an event as ``pending``: ``"accepted"``, or ``"duplicate"`` if ``event_id`` is
        already in the inbox (whatever its status). Committed and durable when it returns."""
        return self._insert_event(self._insert_params(event_id, event_type, event_timestamp, payload, raw_body))

    def store_dead_letter(self, event_id: str, event_type: str, event_timestamp: dt.datetime, payload: dict,
                          raw_body: bytes, reason: str) -> str:
        """Store an event that cannot be applied (an unsupported type) straight as a dead letter:
        a ``webhook_events`` row with status ``dead_letter`` and a ``dead_letter_events`` row, in
        one transaction. ``"accepted"`` or ``"duplicate"`` (``event_id`` already stored)."""
        _check_event_args(event_id, event_type, event_timestamp)
        now = utcnow()
        text = _payload_text(payload)
        with self._transaction() as cur:
            cur.execute(self._p(
                f"INSERT INTO {self.events_table} (event_id, event_type, event_timestamp, received_at, payload, "
                f"raw_body, status, attempts, last_error, first_failed_at, updated_at) "
                f"VALUES (%s, %s, %s, %s, %s, %s, 'dead_letter', 0, %s, %s, %s) "
                f"ON CONFLICT (event_id) DO NOTHING RETURNING seq"
            ), (event_id, event_type, event_timestamp, now, text, bytes(raw_body), reason, now, now))
            if not cur.fetchall():
                return "duplicate"
            cur.execute(self._p(
                f"INSERT INTO {self.dead_letters_table} (event_id, event_type, payload, reason, attempts, "
                f"first_failed_at, last_failed_at, replayed_at, replay_count) "
                f"VALUES (%s, %s, %s, %s, 0, %s, %s, NULL, 0) ON CONFLICT (event_id) DO NOTHING"
            ), (event_id, event_type, text, reason, now, now))
        return "accepted"

    def pending(self, limit: int = 500, now: dt.datetime | None = None) -> list[InboxEvent]:
        """Events to apply: status ``pending`` and due (``next_attempt_at`` null or ≤ ``now``),
        oldest arrival (``seq``) first."""
        now = now or utcnow()
        rows = self._query(
            self._p(
                f"SELECT {_INBOX_EVENT_COLS} FROM {self.events_table} WHERE status = 'pending' "
                f"AND (next_attempt_at IS NULL OR next_attempt_at <= %s) ORDER BY seq LIMIT %s"
            ),
            (now, int(limit)),
        )
        return [InboxEvent(**row) for row in rows]

    def mark_applied(self, event_ids: Sequence[str], run_id: str | None = None, outcome: str = "applied") -> None:
        """Mark pending events done: ``applied``, or ``superseded`` (an older event that lost to a
        newer one for the same record). Events no longer pending are left alone."""
        if outcome not in ("applied", "superseded"):
            raise ValueError(f"outcome must be 'applied' or 'superseded', not {outcome!r}")
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return
        now = utcnow()
        with self._transaction() as cur:
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                cur.execute(self._p(
                    f"UPDATE {self.events_table} SET status = %s, applied_at = %s, run_id = %s, "
                    f"next_attempt_at = NULL, updated_at = %s "
                    f"WHERE status = 'pending' AND event_id IN ({self._in(len(chunk))})"
                ), (outcome, now, run_id, now, *chunk))

    def mark_retry(self, event_id: str, error: str, next_attempt_at: dt.datetime) -> bool:
        """Record a failed attempt (``attempts += 1``, ``last_error``) and when to try again.
        True when the event was pending (and so was updated)."""
        now = utcnow()
        with self._transaction() as cur:
            cur.execute(self._p(
                f"UPDATE {self.events_table} SET attempts = attempts + 1, last_error = %s, next_attempt_at = %s, "
                f"first_failed_at = COALESCE(first_failed_at, %s), updated_at = %s "
                f"WHERE event_id = %s AND status = 'pending' RETURNING seq"
            ), (error, next_attempt_at, now, now, event_id))
            return bool(cur.fetchall())

    def dead_letter(self, event_id: str, reason: str) -> bool:
        """Give up on a pending event: this final failure counts as an attempt (``attempts += 1``);
        status ``dead_letter``; ``dead_letter_events`` upserted (attempts, first/last failure,
        reason; ``replayed_at``/``replay_count`` kept from earlier cycles). True when it was pending."""
        now = utcnow()
        with self._transaction() as cur:
            cur.execute(self._p(
                f"UPDATE {self.events_table} SET status = 'dead_letter', attempts = attempts + 1, last_error = %s, "
                f"next_attempt_at = NULL, first_failed_at = COALESCE(first_failed_at, %s), updated_at = %s "
                f"WHERE event_id = %s AND status = 'pending' RETURNING seq"
            ), (reason, now, now, event_id))
            if not cur.fetchall():
                return False
            cur.execute(self._p(
                f"INSERT INTO {self.dead_letters_table} (event_id, event_type, payload, reason, attempts, "
                f"first_failed_at, last_failed_at, replayed_at, replay_count) "
                f"SELECT event_id, event_type, payload, %s, attempts, COALESCE(first_failed_at, %s), %s, NULL, 0 "
                f"FROM {self.events_table} WHERE event_id = %s "
                f"ON CONFLICT (event_id) DO UPDATE SET reason = excluded.reason, attempts = excluded.attempts, "
                f"last_failed_at = excluded.last_failed_at"
            ), (reason, now, now, event_id))
        return True

    def dead_letters(self, include_replayed: bool = False) -> list[dict]:
        """Dead letters, oldest arrival first, without payloads. By default only those still
        dead (status ``dead_letter``); ``include_replayed`` adds those replayed since."""
        where = "" if include_replayed else "WHERE w.status = 'dead_letter' OR w.status IS NULL"
        rows = self._query(
            f"SELECT {_DEAD_COLS} FROM {self.dead_letters_table} d "
            f"LEFT JOIN {self.events_table} w ON w.event_id = d.event_id {where} ORDER BY w.seq, d.event_id"
        )
        return [self._decode(r) for r in rows]

    def dead_letter_detail(self, event_id: str) -> dict | None:
        """One dead letter with its payload and its inbox row (``inbox``: status, attempts,
        last error, applied_at, run_id …); None when the event was never dead-lettered."""
        rows = self._query(
            self._p(
                f"SELECT {_DEAD_COLS}, d.payload FROM {self.dead_letters_table} d "
                f"LEFT JOIN {self.events_table} w ON w.event_id = d.event_id WHERE d.event_id = %s"
            ),
            (event_id,),
        )
        if not rows:
            return None
        detail = self._decode(rows[0])
        inbox = self.event(event_id)
        if inbox is not None:
            inbox.pop("dead_letter", None)
            inbox.pop("payload", None)
        detail["inbox"] = inbox
        return detail

    def replay(self, event_ids: Sequence[str] | None = None) -> list[str]:
        """Put dead letters back to ``pending`` (attempts reset, ``replayed_at`` = now,
        ``replay_count`` += 1; the event's retry period starts afresh). ``None`` replays every event currently dead-lettered. Events
        that are not dead letters (pending, applied, unknown, already replayed) are left alone,
        so replaying twice is a no-op. Returns the ids actually requeued, in arrival order."""
        now = utcnow()
        requeued: list[tuple[int, str]] = []
        with self._transaction() as cur:
            if event_ids is None:
                batches: list[list[str] | None] = [None]
            else:
                ids = list(dict.fromkeys(event_ids))
                batches = [ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK)]
            for batch in batches:
                filter_sql, params = "", ()
                if batch is not None:
                    filter_sql, params = f" AND event_id IN ({self._in(len(batch))})", tuple(batch)
                cur.execute(self._p(
                    f"UPDATE {self.events_table} SET status = 'pending', attempts = 0, next_attempt_at = NULL, "
                    f"first_failed_at = NULL, updated_at = %s WHERE status = 'dead_letter'{filter_sql} "
                    f"RETURNING seq, event_id"
                ), (now, *params))
                requeued.extend((r["seq"], r["event_id"]) for r in cur.fetchall())
            done = [eid for _, eid in sorted(requeued)]
            for i in range(0, len(done), _CHUNK):
                chunk = done[i:i + _CHUNK]
                cur.execute(self._p(
                    f"UPDATE {self.dead_letters_table} SET replayed_at = %s, replay_count = replay_count + 1 "
                    f"WHERE event_id IN ({self._in(len(chunk))})"
                ), (now, *chunk))
        return done

    def event(self, event_id: str) -> dict | None:
        """What happened to event X: its inbox row (status, attempts, errors, when applied, by
        which run, payload) and ``dead_letter`` (the dead-letter row or None)."""
        rows = self._query(self._p(f"SELECT {_EVENT_COLS} FROM {self.events_table} WHERE event_id = %s"),
                           (event_id,))
        if not rows:
            return None
        out = self._decode(rows[0])
        dead = self._query(
            self._p(
                f"SELECT event_id, event_type, reason, attempts, first_failed_at, last_failed_at, replayed_at, "
                f"replay_count FROM {self.dead_letters_table} WHERE event_id = %s"
            ),
            (event_id,),
        )
        out["dead_letter"] = self._decode(dead[0]) if dead else None
        return out

    def _decode(self, row: dict) -> dict:
        return dict(row)

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ============================================================================================
# PostgreSQL
# ============================================================================================
class PostgresInbox(Inbox):
    """The inbox in the AP Tool PostgreSQL database (schema ``aptool``).

    Sync methods use a small thread-safe pool (≤ 4 connections). The async methods (:meth:`astore`,
    :meth:`astore_dead_letter`, :meth:`ahealthy`) use an asyncio pool of up to ``pool_size``
    connections bound to the event loop that first uses it; call :meth:`aclose` in that loop
    before it ends (the receiver's lifespan does), or the loop's shutdown waits on the pool's
    background tasks.
    """

    backend = "postgres"
    events_table = "aptool.webhook_events"
    dead_letters_table = "aptool.dead_letter_events"

    def __init__(self, url: str, *, pool_size: int = 32, connect_timeout: float = 5.0,
                 acquire_timeout: float = 10.0, health_timeout: float = 2.0) -> None:
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.acquire_timeout = acquire_timeout
        self.health_timeout = health_timeout
        self._pool = None
        self._pool_lock = threading.Lock()
        self._apool = None
        self._apool_loop: asyncio.AbstractEventLoop | None = None
        self._apool_lock: asyncio.Lock | None = None
        self._writer: _PgBatchWriter | None = None
        self.max_batch = 256
        self.max_inflight_batches = 2
        self._sql_insert = self._insert_sql()
        self._sql_insert_returning_id = self._sql_insert.replace("RETURNING seq", "RETURNING event_id")
        self._sql_insert_batch = (
            "INSERT INTO aptool.webhook_events (event_id, event_type, event_timestamp, received_at, payload, "
            "raw_body, status, attempts, updated_at) "
            "SELECT e.event_id, e.event_type, e.event_timestamp, e.received_at, e.payload::json, e.raw_body, "
            "'pending', 0, e.received_at "
            # Binary parameters (%b): text arrays in text format would escape every quote in every payload.
            "FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::timestamptz[], %b::text[], %b::bytea[]) "
            "WITH ORDINALITY AS e(event_id, event_type, event_timestamp, received_at, payload, raw_body, n) "
            "ORDER BY e.n "  # seq follows arrival order within a batch
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        )

    def describe(self) -> str:
        from aptool_assets.storage.warehouse import redact_url

        return f"postgres {redact_url(self.url)} ({self.events_table})"

    def _conn_kwargs(self) -> dict:
        from psycopg.rows import dict_row

        return {
            "autocommit": True,
            "connect_timeout": max(1, int(self.connect_timeout)),
            "application_name": "aptool-inbox",
            "row_factory": dict_row,
        }

    @staticmethod
    def _configure(con) -> None:
        # Durable before "accepted": a server running with synchronous_commit=off would lose the
        # last commits on a crash, so our sessions turn it back on ('local'/'remote_*' are kept).
        if con.execute("SELECT current_setting('synchronous_commit') AS s").fetchone()["s"] == "off":
            con.execute("SET synchronous_commit TO on")

    @staticmethod
    async def _aconfigure(con) -> None:
        cur = await con.execute("SELECT current_setting('synchronous_commit') AS s")
        if (await cur.fetchone())["s"] == "off":
            await con.execute("SET synchronous_commit TO on")

    def _sync_pool(self):
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    from psycopg_pool import ConnectionPool

                    pool = ConnectionPool(
                        self.url, min_size=1, max_size=4, kwargs=self._conn_kwargs(), configure=self._configure,
                        open=False, timeout=self.acquire_timeout, max_idle=300, name="aptool-inbox-sync",
                    )
                    pool.open(wait=False)
                    self._pool = pool
        return self._pool

    async def _async_pool(self):
        loop = asyncio.get_running_loop()
        if self._apool is not None and self._apool_loop is loop:
            return self._apool
        if self._apool_lock is None or self._apool_loop is not loop:
            self._apool_lock = asyncio.Lock()
            self._apool_loop = loop
            self._apool = None  # a pool belongs to the loop that opened it
        async with self._apool_lock:
            if self._apool is None:
                from psycopg_pool import AsyncConnectionPool

                pool = AsyncConnectionPool(
                    self.url, min_size=min(4, self.pool_size), max_size=self.pool_size, kwargs=self._conn_kwargs(),
                    configure=self._aconfigure, open=False, timeout=self.acquire_timeout, max_idle=300,
                    name="aptool-inbox-async",
                )
                await pool.open(wait=False)
                self._writer = _PgBatchWriter(self._insert_batch, self.max_batch, self.max_inflight_batches)
                self._apool = pool
        return self._apool

    async def aopen(self) -> None:
        await self._async_pool()

    async def aclose(self) -> None:
        pool, self._apool = self._apool, None
        if pool is not None and self._apool_loop is asyncio.get_running_loop():
            if self._writer is not None:
                await self._writer.drain()
            await pool.close(timeout=5)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=5)
        apool, self._apool = self._apool, None
        if apool is not None:
            loop = self._apool_loop
            if loop is not None and loop.is_running() and not _in_loop(loop):
                try:
                    asyncio.run_coroutine_threadsafe(apool.close(timeout=5), loop).result(10)
                except Exception:  # noqa: BLE001 - best effort at shutdown
                    pass

    def setup(self) -> None:
        import psycopg

        with psycopg.connect(self.url, **self._conn_kwargs()) as con, con.transaction():
            # Several processes may start at once: serialize the DDL.
            con.execute("SELECT pg_advisory_xact_lock(hashtext('aptool.webhook_inbox.setup'))")
            con.execute("CREATE SCHEMA IF NOT EXISTS aptool")
            con.execute(
                """
                CREATE TABLE IF NOT EXISTS aptool.webhook_events (
                    seq bigserial PRIMARY KEY,
                    event_id text NOT NULL UNIQUE,
                    event_type text NOT NULL,
                    event_timestamp timestamptz NOT NULL,
                    received_at timestamptz NOT NULL,
                    payload json NOT NULL,
                    raw_body bytea,
                    status text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'applied', 'superseded', 'dead_letter')),
                    attempts integer NOT NULL DEFAULT 0,
                    next_attempt_at timestamptz,
                    last_error text,
                    first_failed_at timestamptz,
                    applied_at timestamptz,
                    run_id text,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            con.execute(
                "CREATE INDEX IF NOT EXISTS webhook_events_pending_idx ON aptool.webhook_events (seq) "
                "WHERE status = 'pending'"
            )
            con.execute(
                """
                CREATE TABLE IF NOT EXISTS aptool.dead_letter_events (
                    event_id text PRIMARY KEY,
                    event_type text NOT NULL,
                    payload json NOT NULL,
                    reason text NOT NULL,
                    attempts integer NOT NULL DEFAULT 0,
                    first_failed_at timestamptz NOT NULL,
                    last_failed_at timestamptz NOT NULL,
                    replayed_at timestamptz,
                    replay_count integer NOT NULL DEFAULT 0
                )
                """
            )
            con.execute("COMMENT ON TABLE aptool.webhook_events IS "
                        "'Durable webhook inbox: one row per eventId received (contract section 5)'")
            con.execute("COMMENT ON TABLE aptool.dead_letter_events IS "
                        "'Webhook events that could not be applied, with reason and replay history'")

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._sync_pool().connection() as con, con.transaction(), con.cursor() as cur:
            yield cur

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        with self._sync_pool().connection() as con, con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def _insert_event(self, params: tuple) -> str:
        import psycopg
        from psycopg_pool import PoolTimeout

        for attempt in (1, 2):
            try:
                with self._sync_pool().connection() as con:
                    row = con.execute(self._sql_insert, params).fetchone()
                return "accepted" if row else "duplicate"
            except PoolTimeout:
                raise
            except psycopg.OperationalError:
                # A pooled connection broken by a server restart: one retry on a fresh one. If the
                # first commit did land, the retry reports "duplicate" -- still stored exactly once.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def astore(self, event_id, event_type, event_timestamp, payload, raw_body) -> str:
        """:meth:`store` for the receiver: concurrent calls are group-committed (see :class:`_PgBatchWriter`);
        each caller gets its own ``accepted``/``duplicate`` only after its batch is committed."""
        params = self._insert_params(event_id, event_type, event_timestamp, payload, raw_body)
        await self._async_pool()
        return await self._writer.submit(params)

    async def _insert_batch(self, rows: list[tuple]) -> set[str]:
        """One multi-row ``INSERT … ON CONFLICT (event_id) DO NOTHING RETURNING event_id``; the ids
        returned are the ones inserted (accepted), the others were already stored."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if len(rows) == 1:  # the plain statement is cheaper to bind than six one-element arrays
            sql, params = self._sql_insert_returning_id, rows[0]
        else:
            sql, params = self._sql_insert_batch, [list(column) for column in zip(*(r[:6] for r in rows))]
        for attempt in (1, 2):
            try:
                async with self._apool.connection() as con:
                    cur = await con.execute(sql, params)
                    return {r["event_id"] for r in await cur.fetchall()}
            except PoolTimeout:
                raise
            except psycopg.OperationalError:
                # A pooled connection broken by a server restart: one retry on a fresh one. If the
                # first commit did land, the retry reports "duplicate" -- still stored exactly once.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def astore_dead_letter(self, event_id, event_type, event_timestamp, payload, raw_body, reason) -> str:
        # Rare (unsupported types only): the sync implementation in a worker thread.
        return await asyncio.to_thread(
            self.store_dead_letter, event_id, event_type, event_timestamp, payload, raw_body, reason
        )

    def healthy(self) -> bool:
        import psycopg

        try:
            with self._sync_pool().connection(timeout=self.health_timeout) as con:
                con.execute("SELECT 1 FROM aptool.webhook_events LIMIT 1").fetchall()
            return True
        except psycopg.Error:
            return False

    async def ahealthy(self) -> bool:
        import psycopg

        try:
            pool = await self._async_pool()
            async with asyncio.timeout(self.health_timeout + 1):
                async with pool.connection(timeout=self.health_timeout) as con:
                    cur = await con.execute("SELECT 1 FROM aptool.webhook_events LIMIT 1")
                    await cur.fetchall()
            return True
        except (psycopg.Error, TimeoutError):
            return False


class _PgBatchWriter:
    """Group commit for the receiver's inserts.

    Each request queues its row and waits. Up to ``max_inflight`` batches (2: one preparing or
    on the wire while the other waits for its WAL flush) are written at once,
    each one statement (one round trip, one commit, one WAL flush) for up to ``max_batch`` rows.
    At low load every batch is a single row written immediately -- there is no waiting window;
    under load, rows queue while earlier batches commit, so the batch size follows the load and
    the per-event cost (Python driver work, round trips, WAL flushes) falls as it rises.

    Nothing is acknowledged early: a future is resolved only after its batch committed. The same
    ``event_id`` twice in one batch is inserted once; the later copies answer ``duplicate``. If a
    batch fails for a reason other than the connection, its rows are retried one by one, so one
    bad row cannot fail its neighbours.
    """

    def __init__(self, insert, max_batch: int, max_inflight: int) -> None:
        self._insert = insert
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queue: list[tuple[tuple, asyncio.Future]] = []
        self._inflight = 0
        self._tasks: set[asyncio.Task] = set()

    def submit(self, params: tuple) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((params, fut))
        self._kick()
        return fut

    def _kick(self) -> None:
        while self._queue and self._inflight < self.max_inflight:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _flush(self, batch: list[tuple[tuple, asyncio.Future]]) -> None:
        try:
            await self._write(batch)
        finally:
            self._inflight -= 1
            self._kick()

    async def _write(self, batch: list[tuple[tuple, asyncio.Future]]) -> None:
        import psycopg

        unique: dict[str, tuple] = {}
        for params, _ in batch:
            unique.setdefault(params[0], params)
        try:
            inserted = await self._insert(list(unique.values()))
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            if len(unique) == 1 or isinstance(exc, psycopg.OperationalError):
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            inserted, failed = set(), {}
            for event_id, params in unique.items():
                try:
                    inserted |= await self._insert([params])
                except Exception as one_exc:  # noqa: BLE001
                    failed[event_id] = one_exc
            for params, fut in batch:
                if params[0] in failed and not fut.done():
                    fut.set_exception(failed[params[0]])
        answered: set[str] = set()
        for params, fut in batch:
            if fut.done():  # the request went away (client disconnect), or failed above
                continue
            event_id = params[0]
            fut.set_result("accepted" if event_id in inserted and event_id not in answered else "duplicate")
            answered.add(event_id)


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# ============================================================================================
# SQLite (embedded)
# ============================================================================================
def _iso(value: dt.datetime) -> str:
    # One fixed UTC format, so text comparison in SQL is time comparison.
    if value.tzinfo is None:
        raise ValueError("datetimes stored in the inbox must be timezone-aware")
    return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


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

    def setup(self) -> None:
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
        for key, value in row.items():
            if key in _DATETIME_KEYS and isinstance(value, str):
                row[key] = dt.datetime.fromisoformat(value)
            elif key == "payload" and isinstance(value, str):
                row[key] = json.loads(value)
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


# ============================================================================================
def default_inbox_path() -> Path:
    """``APTOOL_INBOX_PATH``, else ``$DAGSTER_HOME/inbox.sqlite`` (``.aptool/inbox.sqlite``)."""
    from aptool_assets.settings import aptool_home

    override = os.environ.get("APTOOL_INBOX_PATH")
    return Path(override) if override else aptool_home() / "inbox.sqlite"


def open_inbox(database_url: str | None = None) -> Inbox:
    """The inbox that goes with the AP Tool database.

    ``postgresql://…`` → :class:`PostgresInbox` in that database (schema ``aptool``); ``duckdb:///…``
    → the embedded :class:`SqliteInbox` at :func:`default_inbox_path`. ``None`` means the
    configured database, ``APTOOL_DATABASE_URL``, and the embedded inbox when that is unset, so a
    receiver and a sensor started with the same environment always share one inbox.
    """
    from aptool_assets.settings import postgres_url_or_none

    url = postgres_url_or_none(database_url)
    return PostgresInbox(url) if url else SqliteInbox(default_inbox_path())
