"""Embedded DuckDB warehouse: the default, so the demo and a small district need no server.

A DuckDB file admits one writing process at a time, and Dagster runs sensors and steps in
separate processes; connections are therefore opened per operation and a lock conflict is
retried with backoff instead of failing the run.

The file holds student data, so everything DuckDB and this module keep beside it is private
(``storage.private_files``): a new database file is made in a private temporary directory and linked
into place already 0600; the write-ahead log is created 0600 before each connection's first statement
(DuckDB would create it with the default mode, and keeps the mode of one that exists); the spill
directory ``<file>.tmp`` exists 0700 while a connection is open, and the advisory lock files are 0600.
Existing files keep their mode.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from aptool_assets.storage.private_files import (
    PRIVATE_DIR,
    PRIVATE_FILE,
    create_private_file,
    private_dir,
    private_opener,
)
from aptool_assets.storage.warehouse.base import ROW_ERRORS, SCHEMA, TableSpec, TableWrite, Warehouse

log = logging.getLogger(__name__)

LOCK_WAIT_S = 120.0


def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, duckdb.IOException) and ("lock" in text.lower() or "Conflicting" in text)


_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(path: str) -> threading.RLock:
    key = os.path.abspath(path)
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(key, threading.RLock())


def _create_private_database(target: Path) -> None:
    """A new, empty database, 0600 before anyone can open it: made in a 0700 temporary directory beside the
    target and hard-linked into place (a file another process created meanwhile wins)."""
    if target.exists():
        return
    scratch = tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)  # mode 0700
    try:
        fresh = Path(scratch) / target.name
        duckdb.connect(str(fresh)).close()
        os.chmod(fresh, PRIVATE_FILE)
        try:
            os.link(fresh, target)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not target.exists():
                os.rename(fresh, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _private_spill_dir(path: str) -> Iterator[None]:
    """DuckDB's default spill directory ``<file>.tmp``, there 0700 while a connection is open (DuckDB would
    make it with the default mode) and removed again when empty (also one a killed process left behind)."""
    spill = Path(f"{path}.tmp")
    if not spill.exists():
        with contextlib.suppress(FileExistsError):
            os.mkdir(spill, PRIVATE_DIR)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # not empty: spill files of a process that died; kept
            os.rmdir(spill)


@contextlib.contextmanager
def _open_retrying(path: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection, waiting (with backoff, up to ``LOCK_WAIT_S``) while another process holds the file."""
    deadline = time.monotonic() + LOCK_WAIT_S
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(path)
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


class DuckDBWarehouse(Warehouse):
    backend = "duckdb"
    placeholder = "?"

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            private_dir(Path(self.path).parent)

    def __repr__(self) -> str:
        return f"DuckDBWarehouse({self.path!r})"

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """An advisory file lock beside the database file (``flock``: released if the process dies)."""
        if self.path == ":memory:":
            yield
            return
        with open(f"{self.path}.{name}.lock", "a+", opener=private_opener) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.path == ":memory:":
            with _open_retrying(self.path) as con:
                yield con
            return
        # One connection per file at a time in this process: DuckDB then checkpoints with no other
        # transaction open, always into the write-ahead log prepared below (a checkpoint that overlaps
        # writes of the same process starts a new log file, with the default mode).
        with _process_lock(self.path), _private_spill_dir(self.path):
            _create_private_database(Path(self.path))
            with _open_retrying(self.path) as con:
                # DuckDB removes an empty log when it opens the file and creates one at the first write;
                # one that exists is written in place and keeps its mode.
                create_private_file(f"{self.path}.wal")
                yield con

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
