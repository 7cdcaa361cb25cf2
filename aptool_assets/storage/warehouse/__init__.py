"""The warehouse: where published tables live, behind one small interface (:mod:`.base`).

``open_warehouse(url)`` picks the backend the URL names (:mod:`aptool_assets.storage.backends`):
DuckDB (:mod:`.duckdb`, the embedded default) or PostgreSQL (:mod:`.postgres`). The backend
modules, and with them the database drivers, are imported only when a warehouse is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aptool_assets.storage.backends import database_target
from aptool_assets.storage.warehouse.base import (
    SCHEMA,
    AnyOf,
    Between,
    TableSpec,
    TableWrite,
    Warehouse,
    sql_type_for,
)

if TYPE_CHECKING:
    from aptool_assets.storage.warehouse.duckdb import DuckDBWarehouse
    from aptool_assets.storage.warehouse.postgres import PostgresWarehouse

__all__ = [
    "SCHEMA",
    "AnyOf",
    "Between",
    "DuckDBWarehouse",
    "PostgresWarehouse",
    "TableSpec",
    "TableWrite",
    "Warehouse",
    "open_warehouse",
    "sql_type_for",
]


def open_warehouse(url: str) -> Warehouse:
    """A warehouse for ``url``: ``duckdb:///path/file.duckdb`` or ``postgresql://…``."""
    target = database_target(url)
    if target.postgres_url:
        from aptool_assets.storage.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(target.postgres_url)
    from aptool_assets.storage.warehouse.duckdb import DuckDBWarehouse

    return DuckDBWarehouse(target.duckdb_path)


def __getattr__(name: str) -> Any:
    # The backend classes on demand, so importing a TableSpec does not load duckdb and psycopg.
    if name == "DuckDBWarehouse":
        from aptool_assets.storage.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse
    if name == "PostgresWarehouse":
        from aptool_assets.storage.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
