"""Dagster resource that hands assets the configured warehouse."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from aptool_assets.storage.backends import default_database_url
from aptool_assets.storage.warehouse import Warehouse, open_warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The AP Tool database: PostgreSQL when ``APTOOL_DATABASE_URL`` says so, else embedded DuckDB.

    The URL may carry a password, so the definitions pass it as ``EnvVar("APTOOL_DATABASE_URL")``, and
    the resource's repr leaves it out.
    """

    database_url: str | None = Field(default=None, repr=False, description="APTOOL_DATABASE_URL (secret)")

    @property
    def url(self) -> str:
        return self.database_url or default_database_url()

    def get(self) -> Warehouse:
        return open_warehouse(self.url)
