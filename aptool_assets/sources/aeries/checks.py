"""Data tests on the Aeries tables and the attendance summary (IDs and counts only)."""

import datetime as dt

import dagster as dg
import polars as pl

from aptool_assets.partitions import school_year_slice
from aptool_assets.metrics.assets import STUDENT_ATTENDANCE_SUMMARY_KEY
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.aeries.assets import ATTENDANCE_DAYS_KEY, STUDENTS_KEY
from aptool_assets.sources.aeries.tables import (
    ABSENCE_CODES,
    ATTENDANCE_DAYS,
    ATTENDANCE_HISTORY_SUMMARY,
    STUDENT_ATTENDANCE_SUMMARY,
    STUDENTS,
)
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import Between, TableSpec

SAMPLE = 10


def _duplicate_keys(df: pl.DataFrame, table: TableSpec) -> pl.DataFrame:
    return df.group_by(list(table.key)).len().filter(pl.col("len") > 1)


def _ids(df: pl.DataFrame, col: str = "student_id") -> list[int]:
    return df.get_column(col).unique().sort().head(SAMPLE).to_list() if df.height else []


def _window(context: dg.AssetCheckExecutionContext) -> dict:
    """The attendance window just materialized, or everything when the check runs on its own."""
    if not context.has_partition_key_range:
        return {}
    keys = context.partition_key_range
    return {"calendar_date": Between(dt.date.fromisoformat(keys.start), dt.date.fromisoformat(keys.end))}


@dg.asset_check(asset=STUDENTS_KEY, description="(student_id, school_code) is unique in aptool.students.")
def students_key_unique(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(STUDENTS, columns=STUDENTS.key)
    dupes = _duplicate_keys(df, STUDENTS)
    return dg.AssetCheckResult(
        passed=dupes.height == 0,
        description=f"{df.height} rows, {dupes.height} duplicated keys" + (f"; student IDs {_ids(dupes)}" if dupes.height else ""),
        metadata={"duplicate_keys": dupes.height},
    )


@dg.asset_check(
    asset=ATTENDANCE_DAYS_KEY,
    description="(student_id, school_code, calendar_date) is unique in aptool.attendance_days.",
)
def attendance_key_unique(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(ATTENDANCE_DAYS, where=_window(context), columns=ATTENDANCE_DAYS.key)
    dupes = _duplicate_keys(df, ATTENDANCE_DAYS)
    return dg.AssetCheckResult(
        passed=dupes.height == 0,
        description=f"{df.height} rows, {dupes.height} duplicated keys" + (f"; student IDs {_ids(dupes)}" if dupes.height else ""),
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
        + (f"; student IDs {_ids(orphans)}" if orphans.height else ""),
        metadata={"unknown_student_records": orphans.height, "student_id_sample": dg.MetadataValue.json(_ids(orphans))},
    )


@dg.asset_check(
    asset=ATTENDANCE_DAYS_KEY,
    description="Every all-day and period code used exists in that school's absence-code table.",
)
def attendance_codes_known(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    from aptool_assets.sources.aeries import period_codes

    wh = warehouse.get()
    att = wh.read_table(ATTENDANCE_DAYS, where=_window(context), columns=["school_code", "all_day_code", "period_codes"])
    used = pl.concat(
        [
            att.select("school_code", pl.col("all_day_code").alias("code")),
            att.select("school_code", period_codes.from_json(pl.col("period_codes")).alias("p"))
            .explode("p")
            .select("school_code", pl.col("p").struct.field("code").alias("code")),
        ]
    ).drop_nulls().filter(pl.col("code") != "").unique()
    codes = wh.read_table(ABSENCE_CODES, columns=["school_code", "code"])
    unknown = used.join(codes, on=["school_code", "code"], how="anti").sort(["school_code", "code"])
    pairs = [f"{sc}:{c}" for sc, c in unknown.head(SAMPLE).iter_rows()]
    return dg.AssetCheckResult(
        passed=unknown.height == 0,
        description=f"{unknown.height} codes missing from their school's table" + (f": {pairs}" if pairs else ""),
        metadata={"unknown_codes": unknown.height},
    )


@dg.asset_check(
    asset=STUDENT_ATTENDANCE_SUMMARY_KEY,
    description="Keys are unique, absence rates lie in [0, 1] and days absent never exceed days enrolled.",
)
def summary_rates_valid(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(STUDENT_ATTENDANCE_SUMMARY, where=school_year_slice(context))
    dupes = _duplicate_keys(df, STUDENT_ATTENDANCE_SUMMARY)
    bad = df.filter(
        ~pl.col("absence_rate").is_between(0.0, 1.0).fill_null(True) | (pl.col("days_absent") > pl.col("days_enrolled"))
    )
    return dg.AssetCheckResult(
        passed=dupes.height == 0 and bad.height == 0,
        description=f"{df.height} rows, {dupes.height} duplicated keys, {bad.height} impossible rates"
        + (f"; student IDs {_ids(bad)}" if bad.height else ""),
        metadata={"duplicate_keys": dupes.height, "invalid_rows": bad.height},
    )


@dg.asset_check(
    asset=STUDENT_ATTENDANCE_SUMMARY_KEY,
    additional_deps=[dg.AssetKey(["aptool", ATTENDANCE_HISTORY_SUMMARY.name])],
    description="Computed days enrolled and absent agree with Aeries' own attendance-history totals. Aeries "
    "recomputes its totals nightly, so differences within the tolerance are a warning; larger ones an error.",
)
def summary_reconciles_with_aeries(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.AssetCheckResult:
    wh = warehouse.get()
    where = school_year_slice(context)
    ours = wh.read_table(STUDENT_ATTENDANCE_SUMMARY, where=where)
    theirs = wh.read_table(ATTENDANCE_HISTORY_SUMMARY, where=where)
    if theirs.height == 0:
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description="no Aeries attendance-history totals pulled yet; nothing to reconcile",
        )
    joined = ours.join(theirs, on=["school_year", "student_id", "school_code"], how="inner").with_columns(
        (pl.col("days_enrolled") - pl.col("days_enrolled_right")).abs().alias("enrolled_diff"),
        (pl.col("days_absent") - pl.col("days_absence")).abs().alias("absent_diff"),
    )
    mismatched = joined.filter((pl.col("enrolled_diff") > 0) | (pl.col("absent_diff") > 0))
    tolerance = platform.reconcile_tolerance_days
    beyond = mismatched.filter(pl.max_horizontal("enrolled_diff", "absent_diff") > tolerance)
    severity = dg.AssetCheckSeverity.ERROR if beyond.height else dg.AssetCheckSeverity.WARN
    worst = int(mismatched.select(pl.max_horizontal("enrolled_diff", "absent_diff").max()).item() or 0) if mismatched.height else 0
    return dg.AssetCheckResult(
        passed=mismatched.height == 0,
        severity=severity,
        description=(
            f"{joined.height} students compared: {mismatched.height} differ ({beyond.height} by more than "
            f"{tolerance} day(s); largest {worst})"
            + (f"; student IDs {_ids(beyond if beyond.height else mismatched)}" if mismatched.height else "")
        ),
        metadata={
            "students_compared": joined.height,
            "mismatched": mismatched.height,
            "beyond_tolerance": beyond.height,
            "tolerance_days": tolerance,
            "student_id_sample": dg.MetadataValue.json(_ids(beyond if beyond.height else mismatched)),
        },
    )


AERIES_CHECKS = [
    students_key_unique,
    attendance_key_unique,
    attendance_students_known,
    attendance_codes_known,
    summary_rates_valid,
    summary_reconciles_with_aeries,
]
