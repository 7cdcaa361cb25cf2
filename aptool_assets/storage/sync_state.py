"""``aptool.sync_state`` (contract §3): per source and entity, when it last synced and how far.

Each pull writes its row in the same transaction as the data it pulled, so the table never claims
a sync whose rows are not there. Sensor cursors themselves live in Dagster (visible on each
sensor's page); this table answers "how fresh is X" from SQL.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from aptool_assets.storage.warehouse import TableSpec, TableWrite
from aptool_assets.vocabulary import UTC_TS

SYNC_STATE = TableSpec(
    name="sync_state",
    columns={
        "source": pl.Utf8,
        "entity": pl.Utf8,
        "last_sync_at": UTC_TS,
        "cursor": pl.Utf8,
        "last_modified": UTC_TS,
        "detail": pl.Utf8,
    },
    key=("source", "entity"),
    description="Per source and entity: when it was last synced, its cursor and the last change seen.",
)


def sync_state(
    source: str,
    entity: str,
    *,
    cursor: str | None = None,
    last_modified: dt.datetime | None = None,
    detail: str | None = None,
    now: dt.datetime | None = None,
) -> TableWrite:
    """The upsert of one ``aptool.sync_state`` row (IDs and counts only in ``detail``)."""
    row = {
        "source": source,
        "entity": entity,
        "last_sync_at": now or dt.datetime.now(dt.UTC),
        "cursor": cursor,
        "last_modified": last_modified,
        "detail": detail,
    }
    return TableWrite(SYNC_STATE, pl.DataFrame([row], schema=SYNC_STATE.polars_schema), replace_where=None, upsert=True)
