"""PostgreSQL warehouse (the AP Tool database, usually on Supabase).

Rows arrive by COPY and every write publishes in one transaction: a slice replace deletes its slice
and copies straight into the table; a merge copies into a transaction-local stage first; a
whole-table replace of a table that carries nothing but what the platform made is loaded beforehand
(in parallel) into a shadow table that the transaction swaps in, and one that carries anything the DBA
added (row-level security, triggers, grants to others, foreign keys, ...) has its rows replaced in place
(:mod:`.pg_replace`). Readers never see a partial table and a killed load leaves the previous version.
Transient database errors (connection refused or dropped, serialization failures, deadlocks) retry the
whole transaction with the database policy; the write is a replace-where, so a retry is idempotent.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl
import psycopg
from psycopg import errors as pg_errors
from psycopg.types.string import TextLoader

from aptool_assets.redaction import scrubbing
from aptool_assets.resilience.retry import DATABASE_RETRY, RetrySettings, call_with_retry
from aptool_assets.storage.backends import redact_url
from aptool_assets.storage.warehouse.base import ROW_ERRORS, SCHEMA, TableSpec, TableWrite, Warehouse
from aptool_assets.storage.warehouse.pg_replace import (
    attachments,
    lock_down,
    lookup_index_defs,
    merge_statements,
    replace_in_place,
    swap_in,
)

log = logging.getLogger(__name__)

_TRANSIENT = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.AdminShutdown,
    pg_errors.CannotConnectNow,
    pg_errors.ConnectionFailure,
)


def is_transient_db_error(exc: BaseException) -> bool:
    """Retry connection trouble and concurrency aborts, never bad SQL, bad data or bad credentials."""
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, pg_errors.ObjectNotInPrerequisiteState) and exc.sqlstate == "55000":
        return False  # e.g. a published table without a replica identity: only the DBA can change that
    if isinstance(exc, psycopg.OperationalError):
        text = str(exc).lower()
        return not ("password authentication failed" in text or "role" in text and "does not exist" in text)
    return False


class PostgresWarehouse(Warehouse):
    backend = "postgres"
    placeholder = "%s"

    def __init__(
        self,
        url: str,
        retry: RetrySettings = DATABASE_RETRY,
        connect_timeout_s: int = 10,
        copy_workers: int | None = None,
        rows_per_worker: int = 200_000,
    ):
        self.url = url
        self.retry = retry
        self.connect_timeout_s = connect_timeout_s
        # Parallel COPY streams for a whole-table replace: one per core, at most 4 (a hosted database
        # such as Supabase counts connections), and none for small tables.
        self.copy_workers = copy_workers or min(4, os.cpu_count() or 1)
        self.rows_per_worker = rows_per_worker

    def __repr__(self) -> str:
        return f"PostgresWarehouse({redact_url(self.url)!r})"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[psycopg.Connection]:
        """A connection; any error of its use leaves scrubbed of the URL's password (same class, so the
        retry still tells transient errors apart), because driver errors can quote the connection string."""
        with (
            scrubbing(self.url),
            psycopg.connect(self.url, connect_timeout=self.connect_timeout_s, application_name="aptool") as con,
        ):
            # JSON columns come back as their text, like DuckDB's, so both backends read alike.
            for json_type in ("json", "jsonb"):
                con.adapters.register_loader(json_type, TextLoader)
            yield con

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A session advisory lock on a connection of its own (released if the process dies)."""
        with self._connect() as con:
            con.autocommit = True
            con.execute("SELECT pg_advisory_lock(hashtext(%s))", [f"{SCHEMA}.{name}:exclusive"])
            try:
                yield
            finally:
                con.execute("SELECT pg_advisory_unlock(hashtext(%s))", [f"{SCHEMA}.{name}:exclusive"])

    def rejects_rows(self, exc: BaseException) -> bool:
        # Class 22 (data exception: NUL byte, numeric out of range, bad encoding) and 23 (constraints).
        return isinstance(exc, (*ROW_ERRORS, psycopg.DataError, psycopg.IntegrityError))

    def _retrying(self, fn, what: str):
        return call_with_retry(fn, policy=self.retry, is_retryable=is_transient_db_error, what=what, logger=log)

    def query(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        def run() -> pl.DataFrame:
            with self._connect() as con, con.cursor() as cur:
                cur.execute(sql, list(params) or None)
                names = [d.name for d in cur.description or []]
                rows = cur.fetchall()
            if not rows:
                return pl.DataFrame(schema=dict.fromkeys(names, pl.Null))
            return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)

        return self._retrying(run, "warehouse query")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        def run() -> None:
            with self._connect() as con:
                con.execute(sql, list(params) or None)

        self._retrying(run, "warehouse statement")

    def table_exists(self, table: TableSpec | str) -> bool:
        name = table.name if isinstance(table, TableSpec) else table
        df = self.query(
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            [SCHEMA, name],
        )
        return bool(df.item(0, 0))

    def key_index_sql(self, table: TableSpec) -> list[str]:
        if not table.key:
            return []
        columns = ", ".join(table.key)
        # A key that changed between releases (a column added to it) leaves the old index behind, and it would
        # refuse rows the new key allows: drop it when its key columns differ (a DBA's INCLUDE columns, fill
        # factor or tablespace are not a difference), then create the new one.
        wanted = ", ".join(f"'{col}'" for col in table.key)
        key_columns = (
            "ARRAY(SELECT a.attname::text FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord)"
        )
        drop_stale = (
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{SCHEMA}' "
            f"AND c.relname = '{table.name}_key' AND {key_columns} <> ARRAY[{wanted}]) "
            f"THEN DROP INDEX {SCHEMA}.{table.name}_key; END IF; END $$"
        )
        return [
            drop_stale,
            f"CREATE UNIQUE INDEX IF NOT EXISTS {table.name}_key ON {table.qualified} ({columns})",
            *(d.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1) for d in lookup_index_defs(table)),
        ]

    def ensure_table(self, table: TableSpec) -> None:
        def run() -> None:
            with self._connect() as con:
                # Serialise concurrent first-time DDL from parallel steps.
                con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [table.qualified])
                self.ensure_on(con, table)

        self._retrying(run, f"create {table.qualified}")

    def _copy_into(
        self,
        con: psycopg.Connection,
        target: str,
        table: TableSpec,
        df: pl.DataFrame,
        columns: Sequence[str] | None = None,
    ) -> None:
        if df.height == 0:
            return
        cols = ", ".join(columns or table.columns)
        buf = io.BytesIO()
        df.write_csv(buf, include_header=False, null_value="", datetime_format="%Y-%m-%dT%H:%M:%S%.f%:z")
        with con.cursor() as cur, cur.copy(f"COPY {target} ({cols}) FROM STDIN (FORMAT CSV)") as copy:
            view = buf.getbuffer()
            step = 1 << 20
            for start in range(0, len(view), step):
                copy.write(view[start : start + step])

    def _stage(self, con: psycopg.Connection, stage: str, table: TableSpec, df: pl.DataFrame) -> None:
        """A transaction-local table of the spec's columns (typed as stored, no constraints: columns the
        DBA added stay out of it) holding ``df``."""
        con.execute(
            f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
            f"SELECT {', '.join(table.columns)} FROM {table.qualified} WITH NO DATA"
        )
        self._copy_into(con, stage, table, df)

    def _shadow(self, table: TableSpec) -> str:
        return f"{table.name}__next"

    def _load_shadow(self, table: TableSpec, df: pl.DataFrame) -> None:
        """Build the new version of a whole table beside it, in ``<table>__next``, for :func:`swap_in`.

        The shadow is no published table (readers never look at it), so it is loaded outside the
        publishing transaction and in parallel: ``copy_workers`` connections each serialise and COPY
        a slice of the rows (polars writes CSV without the GIL, and each COPY is parsed by its own
        server process), then the key index is built once over the whole shadow. It is created without
        any grant (default privileges revoked in the creating transaction), so no other role can read
        it. A load that dies leaves only a stale shadow, which the next load drops first. Callers hold
        the table's swap lock, so two publishers of one table never share a shadow.
        """
        shadow = f"{SCHEMA}.{self._shadow(table)}"
        with self._connect() as con, con.transaction():
            con.execute(f"DROP TABLE IF EXISTS {shadow}")
            con.execute(f"CREATE TABLE {shadow} (LIKE {table.qualified})")
            lock_down(con, SCHEMA, self._shadow(table))
        workers = max(1, min(self.copy_workers, -(-df.height // self.rows_per_worker)))
        step = -(-df.height // workers) if df.height else 0
        parts = [df.slice(i * step, step) for i in range(workers)]

        def load(part: pl.DataFrame) -> None:
            with self._connect() as con, con.transaction():
                self._copy_into(con, shadow, table, part)

        if workers == 1:
            load(parts[0])
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="aptool-copy") as pool:
                list(pool.map(load, parts))
        if table.key:
            with self._connect() as con:
                con.autocommit = True
                con.execute("SET maintenance_work_mem = '256MB'")
                con.execute(f"CREATE UNIQUE INDEX {self._shadow(table)}_key ON {shadow} ({', '.join(table.key)})")
                for statement in lookup_index_defs(table, prefix=self._shadow(table), on=shadow):
                    con.execute(statement)

    def _replace_whole(
        self, con: psycopg.Connection, table: TableSpec, df: pl.DataFrame, kept: list[str], stage: str
    ) -> None:
        """Publish a whole table inside the transaction: swap the loaded shadow in when nothing is
        attached to the table (``kept`` empty), else replace its rows in place from a transaction-local
        ``stage`` (:mod:`.pg_replace`)."""
        if not kept:
            kept = swap_in(con, table, self._shadow(table))
            if kept:  # attached while the shadow loaded: the loaded shadow is the stage
                shadow = f"{SCHEMA}.{self._shadow(table)}"
                self._replace_rows(con, table, shadow, kept)
                con.execute(f"DROP TABLE {shadow}")
        elif table.key:
            self._stage(con, stage, table, df)
            con.execute(f"ANALYZE {stage}")
            self._replace_rows(con, table, stage, kept)
        else:  # no key to match rows by (no platform table today)
            con.execute(f"DELETE FROM {table.qualified}")
            self._copy_into(con, table.qualified, table, df)

    @staticmethod
    def _replace_rows(con: psycopg.Connection, table: TableSpec, stage: str, kept: list[str]) -> None:
        diff = replace_in_place(con, table, stage)
        log.info(
            "%s replaced in place (it carries: %s): %d rows deleted, %d updated, %d inserted",
            table.qualified,
            ", ".join(kept),
            diff.deleted,
            diff.updated,
            diff.inserted,
        )

    def write(self, *writes: TableWrite) -> dict[str, int]:
        prepared = [(w, self.incoming(w)) for w in writes]
        for w, df in prepared:
            if w.upsert:
                self._refuse_shared_keys(w.table, df)
            self.ensure_table(w.table)

        def run() -> dict[str, int]:
            counts: dict[str, int] = {}
            with self._connect() as con:
                con.autocommit = True  # session-level swap locks; the publishing transaction is explicit
                plans = self._plan_whole_tables(con, prepared)
                with con.transaction():
                    self._apply(con, prepared, plans, counts)
            return counts

        names = ", ".join(w.table.qualified for w in writes)
        return self._retrying(run, f"publish {names}")

    def _plan_whole_tables(
        self, con: psycopg.Connection, prepared: list[tuple[TableWrite, pl.DataFrame]]
    ) -> dict[int, list[str]]:
        """For each whole-table replace (by index of the write), what the DBA attached to the table: an
        empty list means it will swap, and its shadow is loaded here. Each table's swap lock is taken
        first and held by ``con`` until it closes."""
        plans: dict[int, list[str]] = {}
        for i, (w, df) in enumerate(prepared):
            if w.upsert or w.delete or w.replace_where != {}:
                continue
            con.execute("SELECT pg_advisory_lock(hashtext(%s))", [f"{w.table.qualified}:swap"])
            plans[i] = attachments(con, w.table)
            if not plans[i]:
                self._load_shadow(w.table, df)  # (its unique key index refuses rows sharing a key)
            else:
                self._refuse_shared_keys(w.table, df)
        return plans

    @staticmethod
    def _refuse_shared_keys(table: TableSpec, df: pl.DataFrame) -> None:
        """Rows that update stored rows by key must not share one: the update would silently keep either."""
        if table.key and df.select(table.key).is_duplicated().any():
            raise ValueError(f"{table.qualified}: incoming rows share a key {table.key}")

    def _apply(
        self,
        con: psycopg.Connection,
        prepared: list[tuple[TableWrite, pl.DataFrame]],
        plans: dict[int, list[str]],
        counts: dict[str, int],
    ) -> None:
        """The writes of one publishing transaction, in order."""
        for i, (w, df) in enumerate(prepared):
            if w.delete:
                stage = f"_delete_{w.table.name}_{i}"
                keys = ", ".join(w.table.key)
                con.execute(
                    f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {keys} FROM {w.table.qualified} WITH NO DATA"
                )
                self._copy_into(con, stage, w.table, df, columns=w.table.key)
                con.execute(self.delete_by_key_sql(w, stage))
            elif w.upsert:
                # Merge: rows go to a transaction-local stage, then update older stored rows and add new keys.
                stage = f"_stage_{w.table.name}_{i}"
                self._stage(con, stage, w.table, df)
                for stmt in merge_statements(w, stage):
                    con.execute(stmt)
            elif i in plans:
                self._replace_whole(con, w.table, df, plans[i], stage=f"_replace_{w.table.name}_{i}")
            else:
                # Replace a slice (or append): delete it and COPY straight into the table. Other
                # sessions keep seeing the previous rows (MVCC) until the whole transaction commits.
                if w.replace_where is not None:
                    clause, params = self.where_clause(w.replace_where)
                    con.execute(f"DELETE FROM {w.table.qualified}{clause}", params or None)
                self._copy_into(con, w.table.qualified, w.table, df)
            counts[w.table.name] = counts.get(w.table.name, 0) + df.height
