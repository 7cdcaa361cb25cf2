"""The durable webhook inbox: one API (:class:`Inbox`), two stores.

The receiver (``aptool webhooks serve``) only ever *stores* events; a Dagster sensor later reads
:meth:`Inbox.pending`, applies the events to the published tables and marks them applied,
superseded, retried or dead-lettered (contract §5). The inbox is the hand-off between the two, so
an event is answered ``accepted`` only once it is committed and on disk.

Stores
------
* **PostgreSQL** (``APTOOL_DATABASE_URL=postgresql://…``, :mod:`.postgres`): tables
  ``aptool.webhook_events`` and ``aptool.dead_letter_events`` in the AP Tool database itself. The
  receiver uses an asyncio connection pool (sized for 32 concurrent requests) in autocommit mode and
  decides accepted/duplicate with ``INSERT … ON CONFLICT (event_id) DO NOTHING RETURNING`` -- one
  round trip, and one statement for all the requests that arrive together (group commit,
  :class:`~.batch_writer.PgBatchWriter`), so a burst costs a few commits rather than one per event.
  With ``synchronous_commit`` on (the server default; forced on for our sessions if the server has
  it off) the commit is WAL-flushed before the statement returns.
* **SQLite** (the embedded default, ``duckdb:///…`` or no URL, :mod:`.sqlite`):
  ``$DAGSTER_HOME/inbox.sqlite`` (``.aptool/inbox.sqlite`` without DAGSTER_HOME; ``APTOOL_INBOX_PATH``
  overrides), in WAL mode with ``synchronous=FULL`` so every commit is fsynced.

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
| ``dead_letter`` (after retries, or at once for an unsupported type or a ``stale`` delivery).
:meth:`Inbox.replay` puts dead letters back to ``pending``. ``seq`` is the arrival order; under concurrent PostgreSQL
inserts a lower ``seq`` can become visible a moment after a higher one, so consumers order by the
event ``timestamp`` when deciding which event wins (contract §5), not by ``seq`` alone.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aptool_assets.storage.inbox.payload import decode_payload, payload_text


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
    payload_error: str | None = None
    """Set when the stored row cannot be read (its payload does not decode, or its timestamp is not one);
    ``payload`` is then ``{}``. The reason, e.g. ``"stored payload is nested deeper than 64 levels"``: the
    applying job dead-letters such an event with it; :meth:`Inbox.pending` hands it out rather than raising."""

    @property
    def data(self) -> dict:
        data = self.payload.get("data")
        return data if isinstance(data, dict) else {}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_event_args(event_id: Any, event_type: Any, event_timestamp: Any) -> None:
    if not isinstance(event_id, str) or not event_id or "\x00" in event_id:
        raise ValueError("event_id must be a non-empty string without NUL characters")
    if not isinstance(event_type, str) or "\x00" in event_type:
        raise ValueError("event_type must be a string without NUL characters")
    if not isinstance(event_timestamp, dt.datetime) or event_timestamp.tzinfo is None:
        raise ValueError("event_timestamp must be a timezone-aware datetime")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _inbox_event(row: dict) -> InboxEvent:
    """A pending row as an :class:`InboxEvent`, whatever it holds: what cannot be read becomes
    ``payload_error`` (the first problem found) with an empty payload -- so that even a consumer that
    ignores the marker finds nothing to apply and dead-letters it as invalid -- never an exception."""
    payload, error = decode_payload(row.pop("payload"))
    timestamp = row.get("event_timestamp")
    if not isinstance(timestamp, dt.datetime) or timestamp.tzinfo is None:
        error = error or "stored event_timestamp is not a timezone-aware timestamp"
        row["event_timestamp"] = _EPOCH
    return InboxEvent(**row, payload={} if error else payload, payload_error=error)


class InboxMissing(RuntimeError):
    """The inbox's store does not exist (no SQLite file, or no tables), and this process may not or
    must not create it. The message says where it looked and what to run."""


# {payload} is the store's payload column read as text (:meth:`Inbox._payload_sql`), decoded by
# :func:`decode_payload` so that no stored row can make a read raise.
_EVENT_COLS = (
    "seq, event_id, event_type, event_timestamp, received_at, {payload}, status, attempts, "
    "next_attempt_at, last_error, first_failed_at, applied_at, run_id, updated_at"
)
_INBOX_EVENT_COLS = (
    "seq, event_id, event_type, event_timestamp, received_at, {payload}, status, attempts, next_attempt_at, "
    "last_error, first_failed_at"
)
_DEAD_COLS = (
    "d.event_id, d.event_type, d.reason, d.attempts, d.first_failed_at, d.last_failed_at, d.replayed_at, "
    "d.replay_count, w.seq, w.status, w.received_at"
)
DATETIME_KEYS = frozenset(
    {
        "event_timestamp",
        "received_at",
        "next_attempt_at",
        "first_failed_at",
        "applied_at",
        "updated_at",
        "last_failed_at",
        "replayed_at",
    }
)
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
    def exists(self) -> bool:
        """True when the store and both tables exist; creates nothing (no file, no schema)."""

    @abstractmethod
    def setup(self) -> None:
        """Create the tables and indexes if missing (idempotent, safe from several processes). When
        they exist, nothing is executed but the check, so a process whose role may not run DDL (the
        receiver) can call it; when they are missing and cannot be created, :class:`InboxMissing`."""

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
    async def astore(
        self, event_id: str, event_type: str, event_timestamp: dt.datetime, payload: dict, raw_body: bytes
    ) -> str:
        """:meth:`store` for the receiver's event loop (never blocks it)."""

    @abstractmethod
    async def astore_dead_letter(
        self, event_id: str, event_type: str, event_timestamp: dt.datetime, payload: dict, raw_body: bytes, reason: str
    ) -> str:
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

    async def aopen(self) -> None:  # noqa: B027 - an optional hook: stores without async resources keep it empty
        """Open async resources inside the serving event loop (the receiver's lifespan)."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, like aopen
        """Close async resources opened by :meth:`aopen` / :meth:`astore`."""

    def _p(self, sql: str) -> str:
        return sql

    def _payload_sql(self, alias: str = "") -> str:
        """The payload column as text (decoded by :func:`decode_payload`, never by the driver)."""
        return f"{alias}payload"

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
        return (event_id, event_type, event_timestamp, now, payload_text(payload), bytes(raw_body), now)

    def store(
        self, event_id: str, event_type: str, event_timestamp: dt.datetime, payload: dict, raw_body: bytes
    ) -> str:
        """Store an event as ``pending``: ``"accepted"``, or ``"duplicate"`` if ``event_id`` is
        already in the inbox (whatever its status). Committed and durable when it returns."""
        return self._insert_event(self._insert_params(event_id, event_type, event_timestamp, payload, raw_body))

    def store_dead_letter(
        self, event_id: str, event_type: str, event_timestamp: dt.datetime, payload: dict, raw_body: bytes, reason: str
    ) -> str:
        """Store an event that cannot be applied now (an unsupported type, a stale delivery) straight
        as a dead letter: a ``webhook_events`` row with status ``dead_letter`` and a ``dead_letter_events``
        row, in one transaction. ``"accepted"`` or ``"duplicate"`` (``event_id`` already stored)."""
        _check_event_args(event_id, event_type, event_timestamp)
        now = utcnow()
        text = payload_text(payload)
        with self._transaction() as cur:
            cur.execute(
                self._p(
                    f"INSERT INTO {self.events_table} (event_id, event_type, event_timestamp, received_at, payload, "
                    f"raw_body, status, attempts, last_error, first_failed_at, updated_at) "
                    f"VALUES (%s, %s, %s, %s, %s, %s, 'dead_letter', 0, %s, %s, %s) "
                    f"ON CONFLICT (event_id) DO NOTHING RETURNING seq"
                ),
                (event_id, event_type, event_timestamp, now, text, bytes(raw_body), reason, now, now),
            )
            if not cur.fetchall():
                return "duplicate"
            cur.execute(
                self._p(
                    f"INSERT INTO {self.dead_letters_table} (event_id, event_type, payload, reason, attempts, "
                    f"first_failed_at, last_failed_at, replayed_at, replay_count) "
                    f"VALUES (%s, %s, %s, %s, 0, %s, %s, NULL, 0) ON CONFLICT (event_id) DO NOTHING"
                ),
                (event_id, event_type, text, reason, now, now),
            )
        return "accepted"

    def pending(self, limit: int = 500, now: dt.datetime | None = None) -> list[InboxEvent]:
        """Events to apply: status ``pending`` and due (``next_attempt_at`` null or ≤ ``now``),
        oldest arrival (``seq``) first."""
        now = now or utcnow()
        cols = _INBOX_EVENT_COLS.format(payload=self._payload_sql())
        rows = self._query(
            self._p(
                f"SELECT {cols} FROM {self.events_table} WHERE status = 'pending' "
                f"AND (next_attempt_at IS NULL OR next_attempt_at <= %s) ORDER BY seq LIMIT %s"
            ),
            (now, int(limit)),
        )
        return [_inbox_event(row) for row in rows]

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
                chunk = ids[i : i + _CHUNK]
                cur.execute(
                    self._p(
                        f"UPDATE {self.events_table} SET status = %s, applied_at = %s, run_id = %s, "
                        f"next_attempt_at = NULL, updated_at = %s "
                        f"WHERE status = 'pending' AND event_id IN ({self._in(len(chunk))})"
                    ),
                    (outcome, now, run_id, now, *chunk),
                )

    def mark_retry(self, event_id: str, error: str, next_attempt_at: dt.datetime) -> bool:
        """Record a failed attempt (``attempts += 1``, ``last_error``) and when to try again.
        True when the event was pending (and so was updated)."""
        now = utcnow()
        with self._transaction() as cur:
            cur.execute(
                self._p(
                    f"UPDATE {self.events_table} SET attempts = attempts + 1, last_error = %s, next_attempt_at = %s, "
                    f"first_failed_at = COALESCE(first_failed_at, %s), updated_at = %s "
                    f"WHERE event_id = %s AND status = 'pending' RETURNING seq"
                ),
                (error, next_attempt_at, now, now, event_id),
            )
            return bool(cur.fetchall())

    def dead_letter(self, event_id: str, reason: str) -> bool:
        """Give up on a pending event: this final failure counts as an attempt (``attempts += 1``);
        status ``dead_letter``; ``dead_letter_events`` upserted (attempts, first/last failure,
        reason; ``replayed_at``/``replay_count`` kept from earlier cycles). True when it was pending."""
        now = utcnow()
        with self._transaction() as cur:
            cur.execute(
                self._p(
                    f"UPDATE {self.events_table} SET status = 'dead_letter', attempts = attempts + 1, last_error = %s, "
                    f"next_attempt_at = NULL, first_failed_at = COALESCE(first_failed_at, %s), updated_at = %s "
                    f"WHERE event_id = %s AND status = 'pending' RETURNING seq"
                ),
                (reason, now, now, event_id),
            )
            if not cur.fetchall():
                return False
            cur.execute(
                self._p(
                    f"INSERT INTO {self.dead_letters_table} (event_id, event_type, payload, reason, attempts, "
                    f"first_failed_at, last_failed_at, replayed_at, replay_count) "
                    f"SELECT event_id, event_type, payload, %s, attempts, COALESCE(first_failed_at, %s), %s, NULL, 0 "
                    f"FROM {self.events_table} WHERE event_id = %s "
                    f"ON CONFLICT (event_id) DO UPDATE SET reason = excluded.reason, attempts = excluded.attempts, "
                    f"last_failed_at = excluded.last_failed_at"
                ),
                (reason, now, now, event_id),
            )
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
                f"SELECT {_DEAD_COLS}, {self._payload_sql('d.')} FROM {self.dead_letters_table} d "
                f"LEFT JOIN {self.events_table} w ON w.event_id = d.event_id WHERE d.event_id = %s"
            ),
            (event_id,),
        )
        if not rows:
            return None
        detail = self._decode(rows[0])
        inbox = self.event(event_id)
        if inbox is not None:
            for key in ("dead_letter", "payload", "payload_error"):
                inbox.pop(key, None)
        detail["inbox"] = inbox
        return detail

    def replay(self, event_ids: Sequence[str] | None = None, *, dry_run: bool = False) -> list[str]:
        """Put dead letters back to ``pending`` (attempts reset, ``replayed_at`` = now,
        ``replay_count`` += 1; the event's retry period starts afresh). ``None`` replays every event
        currently dead-lettered. Events that are not dead letters (pending, applied, unknown, already
        replayed) are left alone, so replaying twice is a no-op. Returns the ids actually requeued, in
        arrival order; with ``dry_run``, the ids that would be, and nothing changes."""
        if dry_run:
            return self._replayable(event_ids)
        now = utcnow()
        requeued: list[tuple[int, str]] = []
        with self._transaction() as cur:
            for filter_sql, params in self._id_filters(event_ids):
                cur.execute(
                    self._p(
                        f"UPDATE {self.events_table} SET status = 'pending', attempts = 0, next_attempt_at = NULL, "
                        f"first_failed_at = NULL, updated_at = %s WHERE status = 'dead_letter'{filter_sql} "
                        f"RETURNING seq, event_id"
                    ),
                    (now, *params),
                )
                requeued.extend((r["seq"], r["event_id"]) for r in cur.fetchall())
            done = [eid for _, eid in sorted(requeued)]
            for i in range(0, len(done), _CHUNK):
                chunk = done[i : i + _CHUNK]
                cur.execute(
                    self._p(
                        f"UPDATE {self.dead_letters_table} SET replayed_at = %s, replay_count = replay_count + 1 "
                        f"WHERE event_id IN ({self._in(len(chunk))})"
                    ),
                    (now, *chunk),
                )
        return done

    def _id_filters(self, event_ids: Sequence[str] | None) -> list[tuple[str, tuple]]:
        """``AND event_id IN (…)`` clauses in chunks (one empty clause for "every event")."""
        if event_ids is None:
            return [("", ())]
        ids = list(dict.fromkeys(event_ids))
        return [
            (f" AND event_id IN ({self._in(len(ids[i : i + _CHUNK]))})", tuple(ids[i : i + _CHUNK]))
            for i in range(0, len(ids), _CHUNK)
        ]

    def _replayable(self, event_ids: Sequence[str] | None) -> list[str]:
        """The ids :meth:`replay` would requeue now, in arrival order."""
        found: list[tuple[int, str]] = []
        for filter_sql, params in self._id_filters(event_ids):
            rows = self._query(
                self._p(f"SELECT seq, event_id FROM {self.events_table} WHERE status = 'dead_letter'{filter_sql}"),
                params,
            )
            found.extend((r["seq"], r["event_id"]) for r in rows)
        return [eid for _, eid in sorted(found)]

    def event(self, event_id: str) -> dict | None:
        """What happened to event X: its inbox row (status, attempts, errors, when applied, by
        which run, payload) and ``dead_letter`` (the dead-letter row or None)."""
        cols = _EVENT_COLS.format(payload=self._payload_sql())
        rows = self._query(self._p(f"SELECT {cols} FROM {self.events_table} WHERE event_id = %s"), (event_id,))
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
        """A row for callers: the payload decoded (``payload_error`` added when it cannot be)."""
        out = dict(row)
        if "payload" in out:
            out["payload"], error = decode_payload(out["payload"])
            if error:
                out["payload_error"] = error
        return out

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
