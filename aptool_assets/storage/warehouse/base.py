"""The warehouse interface: table specs, writes, and the SQL both backends share.

Assets hand polars DataFrames to :meth:`Warehouse.write`; DuckDB (:mod:`.duckdb`, the embedded
default) and PostgreSQL (:mod:`.postgres`) implement it. Every write is one transaction, so readers
see the previous complete version of a table or the new complete version, never a half-written one,
and re-running a write with the same data is idempotent (replace-where semantics).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import polars as pl

SCHEMA = "aptool"

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")

ROW_ERRORS: tuple[type[BaseException], ...] = (
    pl.exceptions.PolarsError,
    pl.exceptions.PanicException,
    ValueError,  # UnicodeError included
    TypeError,
    OverflowError,
)
"""Errors that say the data itself was refused, whichever backend (see :meth:`Warehouse.rejects_rows`)."""


def _check_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return name


def sql_type_for(dtype: pl.DataType) -> str:
    """Portable SQL type (DuckDB and PostgreSQL) for a polars dtype."""
    if dtype == pl.Int64 or dtype == pl.UInt32:
        return "BIGINT"
    if dtype in (pl.Int32, pl.Int16, pl.Int8, pl.UInt16, pl.UInt8):
        return "INTEGER"
    if dtype in (pl.Float64, pl.Float32):
        return "DOUBLE PRECISION"
    if dtype == pl.Boolean:
        return "BOOLEAN"
    if dtype == pl.Date:
        return "DATE"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMPTZ" if dtype.time_zone else "TIMESTAMP"
    if dtype in (pl.Utf8, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "TEXT"
    raise TypeError(f"no SQL type mapping for polars dtype {dtype}")


@dataclass(frozen=True)
class TableSpec:
    """A published or operational table: its columns (as polars dtypes) and unique key."""

    name: str
    columns: Mapping[str, pl.DataType]
    key: tuple[str, ...]
    description: str = ""
    sql_types: Mapping[str, str] = field(default_factory=dict)  # overrides, e.g. JSON columns
    lookups: tuple[tuple[str, ...], ...] = ()  # columns the platform reads slices by, outside the key's order

    def __post_init__(self) -> None:
        _check_ident(self.name)
        for col in self.columns:
            _check_ident(col)
        missing = [k for k in (*self.key, *(c for lookup in self.lookups for c in lookup)) if k not in self.columns]
        if missing:
            raise ValueError(f"{self.name}: key or lookup columns {missing} are not columns")

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema(dict(self.columns))

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.polars_schema)

    def conform(self, df: pl.DataFrame) -> pl.DataFrame:
        """Select and cast ``df`` to exactly this table's columns, in order; missing → error."""
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise ValueError(f"{self.qualified}: data is missing columns {missing}")
        return df.select([pl.col(c).cast(t, strict=True) for c, t in self.columns.items()])

    def column_sql(self, col: str) -> str:
        return self.sql_types.get(col) or sql_type_for(self.columns[col])


@dataclass(frozen=True)
class Between:
    """An inclusive range in a ``replace_where`` slice, e.g. the date window of a re-pull."""

    low: Any
    high: Any


@dataclass(frozen=True)
class AnyOf:
    """Any of several values in a ``where``/``replace_where`` (SQL ``IN``); empty matches nothing."""

    values: tuple

    def __init__(self, values: Iterable[Any]) -> None:
        object.__setattr__(self, "values", tuple(values))


@dataclass(frozen=True)
class TableWrite:
    """One table's part of a transaction.

    ``replace_where`` = ``None`` appends; ``{}`` replaces the whole table; ``{"academic_year": 2024,
    "subject": "ela"}`` replaces exactly that slice (a partition) and leaves the rest untouched;
    values may be :class:`Between` ranges. ``upsert=True`` instead merges by the table's key, and
    when the table has ``newer_column`` (e.g. ``source_updated_at``) an incoming row never
    overwrites a stored row that is newer. ``delete=True`` deletes the stored rows whose key
    matches a row of ``df`` (which then needs only the key columns): the incremental paths use it
    for rows that must disappear, e.g. a student-day whose codes were all cleared.
    """

    table: TableSpec
    df: pl.DataFrame
    replace_where: Mapping[str, Any] | None = field(default_factory=dict)
    upsert: bool = False
    newer_column: str | None = None
    delete: bool = False

    def __post_init__(self) -> None:
        if (self.upsert or self.delete) and not self.table.key:
            raise ValueError(f"{self.table.qualified}: upsert and delete need a key")
        if self.upsert and self.delete:
            raise ValueError(f"{self.table.qualified}: a write either upserts or deletes")
        if self.newer_column and self.newer_column not in self.table.columns:
            raise ValueError(f"{self.table.qualified}: no column {self.newer_column}")


class Warehouse(ABC):
    """Backend-neutral access to the ``aptool`` schema."""

    backend: str
    placeholder: str

    @abstractmethod
    def write(self, *writes: TableWrite) -> dict[str, int]:
        """Apply all writes in ONE transaction; returns rows written per table."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        """Run a SELECT (placeholders in the backend's style: ``self.placeholder``)."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement that returns nothing, in its own transaction."""

    @abstractmethod
    def table_exists(self, table: TableSpec | str) -> bool: ...

    def rejects_rows(self, exc: BaseException) -> bool:
        """True when ``exc`` says the rows of a write (or the frames built for it) were refused for what
        they hold -- a value out of range, a byte the database will not store, a constraint -- so the same
        write can never succeed, though one without the offending rows may. False for connection trouble
        and anything else, which a later retry may fix."""
        return isinstance(exc, ROW_ERRORS)

    @abstractmethod
    def exclusive(self, name: str) -> AbstractContextManager[None]:
        """A lock named ``name`` held across processes for a read-modify-write (e.g. the webhook
        path and a pull both rewriting days of ``attendance_days``): one holder at a time."""

    @abstractmethod
    def ensure_table(self, table: TableSpec) -> None:
        """Create the table (and schema) if missing; add columns the spec gained since."""

    def read_table(
        self,
        table: TableSpec,
        where: Mapping[str, Any] | None = None,
        columns: Iterable[str] | None = None,
    ) -> pl.DataFrame:
        """Rows of ``table`` matching ``where`` (equality on each column), typed as the spec says.

        A table that was never written reads as empty, so downstream assets work on day one.
        """
        cols = list(columns) if columns is not None else list(table.columns)
        if not self.table_exists(table):
            return table.empty().select(cols)
        clause, params = self.where_clause(where)
        df = self.query(f"SELECT {', '.join(map(_check_ident, cols))} FROM {table.qualified}{clause}", params)
        return df.select([pl.col(c).cast(table.columns[c]) for c in cols]) if cols else df

    def where_clause(self, where: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        if not where:
            return "", []
        parts = []
        params: list[Any] = []
        for col, value in where.items():
            _check_ident(col)
            if value is None:
                parts.append(f"{col} IS NULL")
            elif isinstance(value, AnyOf):
                if not value.values:
                    parts.append("FALSE")
                    continue
                parts.append(f"{col} IN ({', '.join([self.placeholder] * len(value.values))})")
                params.extend(value.values)
            elif isinstance(value, Between):
                parts.append(f"{col} BETWEEN {self.placeholder} AND {self.placeholder}")
                params.extend([value.low, value.high])
            else:
                parts.append(f"{col} = {self.placeholder}")
                params.append(value)
        return " WHERE " + " AND ".join(parts), params

    @staticmethod
    def merge_sql(w: TableWrite, stage: str) -> list[str]:
        """Statements that merge ``stage`` into the target by key (portable DuckDB/PostgreSQL SQL)."""
        t = w.table
        match = " AND ".join(f"t.{k} = s.{k}" for k in t.key)
        newer = (
            f" AND (t.{w.newer_column} IS NULL OR s.{w.newer_column} >= t.{w.newer_column})" if w.newer_column else ""
        )
        cols = ", ".join(t.columns)
        s_cols = ", ".join(f"s.{c}" for c in t.columns)
        return [
            f"DELETE FROM {t.qualified} AS t USING {stage} AS s WHERE {match}{newer}",
            f"INSERT INTO {t.qualified} ({cols}) SELECT {s_cols} FROM {stage} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {t.qualified} AS t WHERE {match})",
        ]

    @staticmethod
    def delete_by_key_sql(w: TableWrite, stage: str) -> str:
        match = " AND ".join(f"t.{k} = s.{k}" for k in w.table.key)
        return f"DELETE FROM {w.table.qualified} AS t USING {stage} AS s WHERE {match}"

    @staticmethod
    def incoming(w: TableWrite) -> pl.DataFrame:
        """The rows a write sends, typed as the table says: the distinct keys of a delete, else the
        conformed frame."""
        if w.delete:
            return w.df.select([pl.col(k).cast(w.table.columns[k], strict=True) for k in w.table.key]).unique()
        return w.table.conform(w.df)

    def key_index_sql(self, table: TableSpec) -> list[str]:
        """Statements that index the table's key and its lookups (none where the backend does not need one)."""
        return []

    def ensure_on(self, con: Any, table: TableSpec) -> None:
        """Create the schema and table on ``con`` if missing, index its key, and add the columns the spec
        gained since (``con``: a DB-API connection of the backend, inside the caller's transaction)."""
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        con.execute(self.create_table_sql(table))
        existing = {
            row[0]
            for row in con.execute(
                "SELECT column_name FROM information_schema.columns "
                f"WHERE table_schema = {self.placeholder} AND table_name = {self.placeholder}",
                [SCHEMA, table.name],
            ).fetchall()
        }
        for col in table.columns:
            if col not in existing:
                con.execute(f"ALTER TABLE {table.qualified} ADD COLUMN {col} {table.column_sql(col)}")
        for statement in self.key_index_sql(table):  # after the columns: a key may have gained one
            con.execute(statement)

    def create_table_sql(self, table: TableSpec) -> str:
        cols = ", ".join(f"{c} {table.column_sql(c)}" for c in table.columns)
        return f"CREATE TABLE IF NOT EXISTS {table.qualified} ({cols})"
