"""Tables of the i-Ready path: the published diagnostic results (contract §3) and the operational
trail that answers "which file did we load, which did we refuse and why, which rows were rejected"
from SQL alone."""

from __future__ import annotations

import polars as pl

from aptool_assets.storage.warehouse import TableSpec
from aptool_assets.vocabulary import UTC_TS

ELA_DOMAINS: tuple[str, ...] = (
    "phonological_awareness",
    "phonics",
    "high_frequency_words",
    "vocabulary",
    "comprehension_overall",
    "comprehension_literature",
    "comprehension_informational_text",
)
MATH_DOMAINS: tuple[str, ...] = (
    "number_and_operations",
    "algebra_and_algebraic_thinking",
    "measurement_and_data",
    "geometry",
)
DOMAINS: tuple[str, ...] = ELA_DOMAINS + MATH_DOMAINS

GROWTH_INT_COLUMNS: tuple[str, ...] = (
    "diagnostic_gain",
    "annual_typical_growth_measure",
    "annual_stretch_growth_measure",
    "percent_progress_to_annual_typical_growth",
    "percent_progress_to_annual_stretch_growth",
    "mid_on_grade_level_scale_score",
)
"""Nullable integers from the vendor's growth block ("12.0" is accepted for them by the parser)."""

KEY_COLUMNS: tuple[str, ...] = (
    "vendor_student_id",
    "subject",
    "academic_year",
    "completion_date",
    "overall_scale_score",
    "source_file",
)


def _published_columns() -> dict[str, pl.DataType]:
    cols: dict[str, pl.DataType] = {
        "student_id": pl.Int64(),  # the Aeries StudentID the vendor's ID maps to (APTOOL_IREADY_ID_FIELD), or null
        "vendor_student_id": pl.Utf8(),  # the file's "Student ID", as delivered
        "subject": pl.Utf8(),
        "academic_year": pl.Int32(),
        "school_name": pl.Utf8(),
        "student_grade": pl.Int32(),
        "start_date": pl.Date(),
        "completion_date": pl.Date(),
        "assessment_window": pl.Utf8(),
        "is_baseline": pl.Boolean(),
        "is_most_recent": pl.Boolean(),
        "duration_min": pl.Int32(),
        "rush_flag": pl.Utf8(),
        "overall_scale_score": pl.Int32(),
        "overall_placement": pl.Utf8(),
        "overall_relative_placement": pl.Utf8(),
        "percentile": pl.Int32(),
        "grouping": pl.Int32(),
        "lexile_measure": pl.Utf8(),
        "quantile_measure": pl.Utf8(),
    }
    cols.update({c: pl.Int32() for c in GROWTH_INT_COLUMNS})
    for d in DOMAINS:
        cols[f"{d}_scale_score"] = pl.Int32()
        cols[f"{d}_placement"] = pl.Utf8()
        cols[f"{d}_relative_placement"] = pl.Utf8()
    cols["source_file"] = pl.Utf8()
    cols["loaded_at"] = UTC_TS
    return cols


PUBLISHED_COLUMNS: dict[str, pl.DataType] = _published_columns()
"""Column name → polars dtype, in the published order."""
COLUMN_NAMES: tuple[str, ...] = tuple(PUBLISHED_COLUMNS)

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

CELL_PROBLEMS = TableSpec(
    name="iready_cell_problems",
    columns={
        "academic_year": pl.Int32,
        "subject": pl.Utf8,
        "source_file": pl.Utf8,
        "line_number": pl.Int64,
        "column_name": pl.Utf8,
        "reason": pl.Utf8,
        "recorded_at": UTC_TS,
    },
    key=("academic_year", "subject", "source_file", "line_number", "column_name"),
    description="Secondary cells of published rows that could not be read (published as null): where and why, "
    "never the value.",
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
    description="Rows of accepted files set aside with the reason: an unusable key, overall scale score or overall "
    "relative placement, or a repeat whose placement conflicts (no names are kept).",
    sql_types={"raw_record": "TEXT"},
)
