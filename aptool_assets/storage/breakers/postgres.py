"""The breaker store in the AP Tool PostgreSQL database: ``aptool.circuit_breakers`` and
``aptool.failed_operations``; updates lock the service's row (``SELECT … FOR UPDATE``)."""

from __future__ import annotations

import json
import threading

from aptool_assets.redaction import scrubbing
from aptool_assets.storage.backends import redact_url
from aptool_assets.storage.breakers.base import (
    MAX_MESSAGE,
    RETIRED_COLUMN,
    BreakerStore,
    as_datetime,
    as_epoch,
    row_from_db,
)


class PostgresBreakerStore(BreakerStore):
    """One connection per store (a lock serialises the client's threads); reconnects once if it broke."""

    def __init__(self, url: str, connect_timeout_s: int = 10):
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.RLock()
        self._con = None

    def describe(self) -> str:
        return f"postgres {redact_url(self.url)} (aptool.circuit_breakers)"

    def _connection(self):
        import psycopg
        from psycopg.rows import dict_row

        if self._con is None or self._con.closed:
            con = psycopg.connect(
                self.url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=self.connect_timeout_s,
                application_name="aptool-breakers",
            )
            with con.transaction():
                # Serialise first-time creation: concurrent CREATE … IF NOT EXISTS can still collide.
                con.execute("SELECT pg_advisory_xact_lock(hashtext('aptool.circuit_breakers'))")
                con.execute("CREATE SCHEMA IF NOT EXISTS aptool")
                con.execute(
                    "CREATE TABLE IF NOT EXISTS aptool.circuit_breakers (service text PRIMARY KEY, "
                    "state text NOT NULL, outcomes jsonb NOT NULL DEFAULT '[]', opened_at timestamptz, "
                    "half_open_at timestamptz, reason text, trial_started_at timestamptz, "
                    "times_opened integer NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL)"
                )
                retired = con.execute(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = 'aptool' "
                    "AND table_name = 'circuit_breakers' AND column_name = %s",
                    (RETIRED_COLUMN,),
                ).fetchone()
                if retired:  # the count-based breaker's table: migrated in place (see base)
                    con.execute(f"ALTER TABLE aptool.circuit_breakers RENAME COLUMN {RETIRED_COLUMN} TO outcomes")
                    con.execute("UPDATE aptool.circuit_breakers SET outcomes = '[]'")
                con.execute(
                    "CREATE TABLE IF NOT EXISTS aptool.failed_operations (id bigserial PRIMARY KEY, "
                    "service text NOT NULL, operation text NOT NULL, error_type text NOT NULL, message text, "
                    "context jsonb, "
                    "occurred_at timestamptz NOT NULL DEFAULT now(), resolved_at timestamptz, "
                    "occurrences integer NOT NULL DEFAULT 1, last_occurred_at timestamptz)"
                )
            self._con = con
        return self._con

    def _run(self, fn):
        import psycopg

        with self._lock, scrubbing(self.url):  # a driver's error can quote the connection string
            try:
                return fn(self._connection())
            except psycopg.OperationalError:
                if self._con is not None and not self._con.closed:
                    raise
                self._con = None  # the connection broke (server restart, idle timeout): once more
                return fn(self._connection())

    def read(self, service):
        raw = self._run(
            lambda c: c.execute("SELECT * FROM aptool.circuit_breakers WHERE service = %s", (service,)).fetchone()
        )
        return row_from_db(raw) if raw else None

    def read_all(self):
        rows = self._run(lambda c: c.execute("SELECT * FROM aptool.circuit_breakers ORDER BY service").fetchall())
        return [row_from_db(r) for r in rows]

    def update(self, service, change):
        def txn(con):
            with con.transaction():
                con.execute(
                    "INSERT INTO aptool.circuit_breakers (service, state, updated_at) VALUES (%s, 'closed', now()) "
                    "ON CONFLICT (service) DO NOTHING RETURNING service",
                    (service,),
                )
                raw = con.execute(
                    "SELECT * FROM aptool.circuit_breakers WHERE service = %s FOR UPDATE", (service,)
                ).fetchone()
                current = row_from_db(raw)
                new = change(current)
                if new is not None:
                    con.execute(
                        "UPDATE aptool.circuit_breakers SET state = %s, outcomes = %s::jsonb, opened_at = %s, "
                        "half_open_at = %s, reason = %s, trial_started_at = %s, times_opened = %s, updated_at = %s "
                        "WHERE service = %s",
                        (
                            new["state"],
                            json.dumps(new["outcomes"]),
                            as_datetime(new["opened_at"]),
                            as_datetime(new["half_open_at"]),
                            new["reason"],
                            as_datetime(new["trial_started_at"]),
                            new["times_opened"],
                            as_datetime(new["updated_at"]),
                            service,
                        ),
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
                return int(
                    con.execute(
                        "INSERT INTO aptool.failed_operations (service, operation, error_type, message, context, "
                        "last_occurred_at) VALUES (%s, %s, %s, %s, %s::jsonb, now()) RETURNING id",
                        params,
                    ).fetchone()["id"]
                )

        return self._run(txn)

    def failed_operations(self, pending_only=True):
        where = " WHERE resolved_at IS NULL" if pending_only else ""
        rows = self._run(lambda c: c.execute(f"SELECT * FROM aptool.failed_operations{where} ORDER BY id").fetchall())
        return [{**r, **{k: as_epoch(r[k]) for k in ("occurred_at", "resolved_at", "last_occurred_at")}} for r in rows]

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
