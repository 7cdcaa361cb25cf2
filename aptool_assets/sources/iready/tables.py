"""Warehouse tables of the i-Ready path: the published results and the operational trail.

The trail answers "which file did we load, which did we refuse and why, which rows were
rejected" from SQL alone.
"""

from __future__ import annotations

import polars as pl

from aptool_assets.sources.iready.schemas import KEY_COLUMNS, PUBLISHED_COLUMNS
from aptool_assets.storage.warehouse import UTC_TS, TableSpec


DIAGNOSTIC_RESULTS = TableSpec(
    name="iready_diagnostic_results",
    columns=PUBLISHED_COLUMNS,
    key=KEY_COLUMNS,
    description="One row per completed i-Ready diagnostic as delivered (contract §3).",
)

LANDED_FILES = TableSpec(
    name="iready_landed_files",
    columns={
        "school_year": pl.Int32,
        "subject": pl.Utf8,
        "region": pl.Utf8,
        "remote_path": pl.Utf8,
        "size_bytes": pl.Int64,
        "remote_mtime": UTC_TS,
        "sha256": pl.Utf8,
        "local_path": pl.Utf8,
        "status": pl.Utf8,  # selected | superseded | stale | unreadable | empty
        "detail": pl.Utf8,
        "landed_at": UTC_TS,
        "run_id": pl.Utf8,
    },
    key=("run_id", "remote_path"),
    description="Every diagnostic file seen for a partition, whether it was selected for loading, and why.",
)

QUARANTINED_FILES = TableSpec(
    name="iready_quarantined_files",
    columns={
        "school_year": pl.Int32,
        "subject": pl.Utf8,
        "remote_path": pl.Utf8,
        "sha256": pl.Utf8,
        "quarantine_path": pl.Utf8,
        "reason": pl.Utf8,
        "quarantined_at": UTC_TS,
        "run_id": pl.Utf8,
    },
    key=("run_id", "remote_path"),
    description="Files refused as a whole (stale rollover copy, missing columns); the published data was kept.",
)

REJECTED_ROWS = TableSpec(
    name="iready_rejected_rows",
    columns={
        "academic_year": pl.Int32,
        "subject": pl.Utf8,
        "source_file": pl.Utf8,
        "line_number": pl.Int64,
        "student_id_raw": pl.Utf8,
        "reason": pl.Utf8,
        "raw_record": pl.Utf8,
        "rejected_at": UTC_TS,
    },
    key=("academic_year", "subject", "source_file", "line_number"),
    description="Rows of accepted files that failed validation, with the reason (no names are kept).",
    sql_types={"raw_record": "TEXT"},
)
