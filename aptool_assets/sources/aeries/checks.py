"""Data tests on the tables pulled from Aeries (IDs and counts only)."""

import datetime as dt

import dagster as dg
import polars as pl

from aptool_assets.metadata import ID_SAMPLE, duplicate_keys, id_sample
from aptool_assets.rules import period_codes
from aptool_assets.sources.aeries.assets import ATTENDANCE_DAYS_KEY, STUDENTS_KEY
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
    description="Every all-day and period code used exists in that school's absence-code table.",
)
def attendance_codes_known(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    wh = warehouse.get()
    att = wh.read_table(
        ATTENDANCE_DAYS, where=_window(context), columns=["school_code", "all_day_code", "period_codes"]
    )
    used = (
        pl.concat(
            [
                att.select("school_code", pl.col("all_day_code").alias("code")),
                att.select("school_code", period_codes.from_json(pl.col("period_codes")).alias("p"))
                .explode("p")
                .select("school_code", pl.col("p").struct.field("code").alias("code")),
            ]
        )
        .drop_nulls()
        .filter(pl.col("code") != "")
        .unique()
    )
    codes = wh.read_table(ABSENCE_CODES, columns=["school_code", "code"])
    unknown = used.join(codes, on=["school_code", "code"], how="anti").sort(["school_code", "code"])
    pairs = [f"{sc}:{c}" for sc, c in unknown.head(ID_SAMPLE).iter_rows()]
    return dg.AssetCheckResult(
        passed=unknown.height == 0,
        description=f"{unknown.height} codes missing from their school's table" + (f": {pairs}" if pairs else ""),
        metadata={"unknown_codes": unknown.height},
    )


AERIES_CHECKS = [
    students_key_unique,
    attendance_key_unique,
    attendance_students_known,
    attendance_codes_known,
]
