"""aptool.attendance_days rows as cells, and back: how pulled rows and webhook events combine.

A day's codes are cells keyed (student, school, date, period), the all-day code being period
``''``. The event path overlays applied events onto the stored day; the pull lays events newer
than itself back over the window it replaced. Both categorise through :func:`attendance_day_rows`,
so a day reads the same whichever path wrote it.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from aptool_assets.rules import period_codes
from aptool_assets.rules.attendance import categorize_attendance
from aptool_assets.vocabulary import UTC_TS

ALL_DAY = ""
DAY_KEY = ["student_id", "school_code", "calendar_date"]  # one row of aptool.attendance_days
CELL_KEY = [*DAY_KEY, "period"]  # one code of that day


def stored_cells(days: pl.DataFrame) -> pl.DataFrame:
    """``aptool.attendance_days`` rows as one row per coded cell (period '' = all-day)."""
    all_day = days.filter(pl.col("all_day_code").is_not_null() & (pl.col("all_day_code") != "")).select(
        *DAY_KEY, pl.lit(ALL_DAY).alias("period"), pl.col("all_day_code").alias("code")
    )
    periods = (
        days.select(*DAY_KEY, period_codes.from_json(pl.col("period_codes")).alias("p"))
        .explode("p")
        .drop_nulls("p")
        .select(*DAY_KEY, pl.col("p").struct.field("period"), pl.col("p").struct.field("code"))
    )
    return pl.concat([all_day, periods], how="vertical_relaxed")


def days_from_cells(cells: pl.DataFrame) -> pl.DataFrame:
    """Cells (cleared ones already removed) back to one row per day: all-day code + period list."""
    coded = cells.filter(pl.col("code").is_not_null() & (pl.col("code") != ""))
    all_day = coded.filter(pl.col("period") == ALL_DAY).select(*DAY_KEY, pl.col("code").alias("all_day_code"))
    periods = (
        coded.filter(pl.col("period") != ALL_DAY)
        .sort(pl.col("period").str.len_chars(), "period")
        .group_by(DAY_KEY, maintain_order=True)
        .agg(
            pl.struct(pl.col("period"), pl.lit(None, pl.Int64).alias("section_number"), pl.col("code")).alias(
                "period_codes"
            )
        )
    )
    keys = coded.select(DAY_KEY).unique()
    return (
        keys.join(all_day, on=DAY_KEY, how="left")
        .join(periods, on=DAY_KEY, how="left")
        .with_columns(pl.col("period_codes").fill_null(pl.lit([], dtype=pl.List(period_codes.PERIOD_CODE))))
    )


def overlay_cells(base_cells: pl.DataFrame, new_cells: pl.DataFrame) -> pl.DataFrame:
    """Base cells with ``new_cells`` laid over them (a new cell replaces the base cell it keys)."""
    base = base_cells.select(*CELL_KEY, "code").join(new_cells.select(CELL_KEY), on=CELL_KEY, how="anti")
    return pl.concat([base, new_cells.select(*CELL_KEY, "code")], how="vertical_relaxed")


def attendance_day_rows(
    days: pl.DataFrame, codes: pl.DataFrame, updated_at: pl.Expr | dt.datetime, source: str
) -> pl.DataFrame:
    """Days (all_day_code + period list) categorised by each school's code table, shaped as
    ``aptool.attendance_days`` (shared by the pull and the event path, so both categorise alike)."""
    updated = updated_at if isinstance(updated_at, pl.Expr) else pl.lit(updated_at, dtype=UTC_TS)
    return categorize_attendance(days, codes).select(
        "student_id",
        "school_code",
        "calendar_date",
        "all_day_code",
        "absence_category",
        period_codes.to_json(pl.col("period_codes")).alias("period_codes"),
        pl.col("is_full_day_absence").fill_null(False),
        pl.lit(source).alias("source"),
        updated.cast(UTC_TS).alias("source_updated_at"),
    )


def overlay_newer_cells(rows: pl.DataFrame, cells: pl.DataFrame, codes: pl.DataFrame) -> pl.DataFrame:
    """A pulled window with the webhook cells newer than the pull laid back over it."""
    if cells.height == 0:
        return rows
    touched = cells.select(DAY_KEY).unique()
    base = rows.join(touched, on=DAY_KEY, how="semi")
    merged = days_from_cells(overlay_cells(stored_cells(base), cells))
    newest = cells.group_by(DAY_KEY).agg(pl.col("event_timestamp").max().alias("_ts"))
    rebuilt = attendance_day_rows(merged.join(newest, on=DAY_KEY, how="left"), codes, pl.col("_ts"), "webhook")
    return pl.concat([rows.join(touched, on=DAY_KEY, how="anti"), rebuilt], how="vertical_relaxed")
