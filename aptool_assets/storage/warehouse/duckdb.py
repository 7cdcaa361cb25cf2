"""Embedded DuckDB warehouse: the default, so the demo and a small district need no server.

A DuckDB file admits one writing process at a time, and Dagster runs sensors and steps in
separate processes; connections are therefore opened per operation and a lock conflict is
retried with backoff instead of failing the run.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from aptool_assets.storage.warehouse.base import ROW_ERRORS, SCHEMA, TableSpec, TableWrite, Warehouse

log = logging.getLogger(__name__)

LOCK_WAIT_S = 120.0


def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, duckdb.IOException) and ("lock" in text.lower() or "Conflicting" in text)


class DuckDBWarehouse(Warehouse):
    backend = "duckdb"
    placeholder = "?"

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DuckDBWarehouse({self.path!r})"

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """An advisory file lock beside the database file (``flock``: released if the process dies)."""
        if self.path == ":memory:":
            yield
            return
        with open(f"{self.path}.{name}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        deadline = time.monotonic() + LOCK_WAIT_S
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(self.path)
                break
            except duckdb.Error as exc:
                if not _is_lock_conflict(exc) or time.monotonic() > deadline:
                    raise
                log.info("warehouse file is busy (another process holds it); waiting %.2fs", delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        try:
            yield con
        finally:
            con.close()

    def rejects_rows(self, exc: BaseException) -> bool:
        # Conversion, out-of-range and type errors, constraints, and input DuckDB refuses (e.g. malformed JSON).
        return isinstance(exc, (*ROW_ERRORS, duckdb.DataError, duckdb.IntegrityError, duckdb.InvalidInputException))

    def query(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        with self._connect() as con:
            return pl.from_arrow(con.sql(sql, params=list(params) or None).to_arrow_table())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._connect() as con:
            con.execute(sql, list(params))

    def table_exists(self, table: TableSpec | str) -> bool:
        name = table.name if isinstance(table, TableSpec) else table
        with self._connect() as con:
            row = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                [SCHEMA, name],
            ).fetchone()
        return bool(row and row[0])

    def ensure_table(self, table: TableSpec) -> None:
        with self._connect() as con:
            self.ensure_on(con, table)

    def write(self, *writes: TableWrite) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._connect() as con:
            for w in writes:  # DDL first: DuckDB DDL inside the data transaction is fine, but keep it simple
                self.ensure_on(con, w.table)
            con.execute("BEGIN TRANSACTION")
            try:
                for i, w in enumerate(writes):
                    df = self.incoming(w)
                    view = f"_incoming_{i}"
                    con.register(view, df.to_arrow())
                    if w.delete:
                        con.execute(self.delete_by_key_sql(w, view))
                    elif w.upsert:
                        for stmt in self.merge_sql(w, view):
                            con.execute(stmt)
                    else:
                        if w.replace_where is not None:
                            clause, params = self.where_clause(w.replace_where)
                            con.execute(f"DELETE FROM {w.table.qualified}{clause}", params)
                        if df.height:
                            cols = ", ".join(w.table.columns)
                            con.execute(f"INSERT INTO {w.table.qualified} ({cols}) SELECT {cols} FROM {view}")
                    con.unregister(view)
                    counts[w.table.name] = counts.get(w.table.name, 0) + df.height
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return counts
