"""Data tests on the tables pulled from Aeries (IDs and counts only)."""

import datetime as dt

import dagster as dg
import polars as pl

from aptool_assets.metadata import ID_SAMPLE, counts_table, duplicate_keys, id_sample
from aptool_assets.rules import period_codes
from aptool_assets.rules.attendance import categorize_attendance
from aptool_assets.sources.aeries.assets import ABSENCE_CODES_KEY, ATTENDANCE_DAYS_KEY, STUDENTS_KEY
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import Between
from aptool_assets.tables.aeries import ABSENCE_CODES, ATTENDANCE_DAYS, STUDENTS


def _window(context: dg.AssetCheckExecutionContext) -> dict:
    """The attendance window just materialized, or everything when the check runs on its own."""
    if not context.has_partition_key_range:
        return {}
    keys = context.partition_key_range
    return {"calendar_date": Between(dt.date.fromisoformat(keys.start), dt.date.fromisoformat(keys.end))}


@dg.asset_check(asset=STUDENTS_KEY, description="(student_id, school_code) is unique in aptool.students.")
def students_key_unique(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(STUDENTS, columns=STUDENTS.key)
    dupes = duplicate_keys(df, STUDENTS.key)
    return dg.AssetCheckResult(
        passed=dupes.height == 0,
        description=f"{df.height} rows, {dupes.height} duplicated keys"
        + (f"; student IDs {id_sample(dupes)}" if dupes.height else ""),
        metadata={"duplicate_keys": dupes.height},
    )


@dg.asset_check(
    asset=ATTENDANCE_DAYS_KEY,
    description="(student_id, school_code, calendar_date) is unique in aptool.attendance_days.",
)
def attendance_key_unique(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(ATTENDANCE_DAYS, where=_window(context), columns=ATTENDANCE_DAYS.key)
    dupes = duplicate_keys(df, ATTENDANCE_DAYS.key)
    return dg.AssetCheckResult(
        passed=dupes.height == 0,
        description=f"{df.height} rows, {dupes.height} duplicated keys"
        + (f"; student IDs {id_sample(dupes)}" if dupes.height else ""),
        metadata={"rows_checked": df.height, "duplicate_keys": dupes.height},
    )


@dg.asset_check(
    asset=ATTENDANCE_DAYS_KEY,
    description="Every attendance row references a student record known at that school.",
)
def attendance_students_known(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    wh = warehouse.get()
    att = wh.read_table(ATTENDANCE_DAYS, where=_window(context), columns=["student_id", "school_code"]).unique()
    known = wh.read_table(STUDENTS, columns=["student_id", "school_code"]).unique()
    orphans = att.join(known, on=["student_id", "school_code"], how="anti")
    return dg.AssetCheckResult(
        passed=orphans.height == 0,
        description=f"{orphans.height} student-school pairs with attendance but no student record"
        + (f"; student IDs {id_sample(orphans)}" if orphans.height else ""),
        metadata={
            "unknown_student_records": orphans.height,
            "student_id_sample": dg.MetadataValue.json(id_sample(orphans)),
        },
    )


@dg.asset_check(
    asset=ATTENDANCE_DAYS_KEY,
    additional_deps=[ABSENCE_CODES_KEY],
    description="Every all-day and period code used is defined in that school's absence-code table or the "
    "district-wide table (SchoolCode 0) of its school year. A code in neither is published as unknown_code "
    "and counted as an unverified absence: a warning, by school, code and number of days.",
)
def attendance_codes_known(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    wh = warehouse.get()
    att = wh.read_table(
        ATTENDANCE_DAYS,
        where=_window(context),
        columns=["student_id", "school_code", "calendar_date", "all_day_code", "period_codes"],
    ).with_columns(period_codes.from_json(pl.col("period_codes")).alias("period_codes"))
    unknown = (
        categorize_attendance(att, wh.read_table(ABSENCE_CODES))
        .drop_nulls("unknown_code")
        .group_by("school_code", pl.col("unknown_code").alias("code"))
        .len("days")
        .sort("school_code", "code")
    )
    lines = [f"{sc}:{code} ({days} days)" for sc, code, days in unknown.head(ID_SAMPLE).iter_rows()]
    days = int(unknown.get_column("days").sum()) if unknown.height else 0
    return dg.AssetCheckResult(
        passed=unknown.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{unknown.height} codes in no table of their school or the district, on {days} student-days "
        "(published as unknown_code, counted as unverified absences)" + (f": {lines}" if lines else ""),
        metadata={
            "unknown_codes": unknown.height,
            "unknown_code_days": days,
            "unknown_codes_by_school": counts_table({f"{sc}:{code}": n for sc, code, n in unknown.iter_rows()}, "code"),
        },
    )


AERIES_CHECKS = [
    students_key_unique,
    attendance_key_unique,
    attendance_students_known,
    attendance_codes_known,
]
