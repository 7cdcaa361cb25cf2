"""Where each student is heading (contract §4.6, §4.7): i-Ready growth toward the vendor's annual measures
and the end-of-year chronic-absence projection.

Thin assets over the pure rules in :mod:`aptool_assets.rules.growth` and :mod:`aptool_assets.rules.projection`:
they read the year's diagnostics (mapped to Aeries students as academic risk does), calendars, enrollment and
coded days from the warehouse and publish ``aptool.iready_growth`` and ``aptool.chronic_absence_projection``.
Metadata holds counts per school and grade and two charts; never student detail.
"""

import datetime as dt

import dagster as dg
import polars as pl

from aptool_assets.metadata import counts_table, table_metadata
from aptool_assets.metrics.assets import AFTER_ANY_UPDATE, STUDENT_ATTENDANCE_SUMMARY_KEY, metric_asset
from aptool_assets.metrics.compute import summary_inputs
from aptool_assets.metrics.plots import growth_status_png, png_markdown, projected_chronic_png
from aptool_assets.partitions import EACH_DAY_TO_ITS_YEAR, YEAR_OF_A_FILE
from aptool_assets.resources import PlatformResource
from aptool_assets.rules.attendance import categorize_attendance
from aptool_assets.rules.growth import iready_growth
from aptool_assets.rules.projection import chronic_absence_projection
from aptool_assets.rules.student_ids import map_vendor_ids
from aptool_assets.sources.iready.assets import DIAGNOSTIC_RESULTS_KEY, roster_ids
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import TableWrite, Warehouse
from aptool_assets.tables import asset_key
from aptool_assets.tables.aeries import ATTENDANCE_DAYS, ENROLLMENT, SCHOOL_CALENDAR, STUDENTS
from aptool_assets.tables.iready import DIAGNOSTIC_RESULTS
from aptool_assets.tables.metrics import CHRONIC_ABSENCE_PROJECTION, IREADY_GROWTH, STUDENT_ATTENDANCE_SUMMARY
from aptool_assets.tables.rosters import roster_of_year
from aptool_assets.vocabulary import clip_to_school_year

IREADY_GROWTH_KEY = asset_key(IREADY_GROWTH)
PROJECTION_KEY = asset_key(CHRONIC_ABSENCE_PROJECTION)


def growth_of_year(wh: Warehouse, school_year: int, id_field: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(growth, diagnostics): the year's growth per student and subject, from the diagnostics mapped to
    today's roster (the mapped diagnostics are returned for the vendor comparison)."""
    diagnostics = map_vendor_ids(
        wh.read_table(DIAGNOSTIC_RESULTS, where={"academic_year": school_year}), roster_ids(wh, school_year), id_field
    )
    growth = iready_growth(
        diagnostics,
        wh.read_table(SCHOOL_CALENDAR, where={"school_year": school_year}),
        roster_of_year(wh, school_year, ["student_id", "school_code", "school_enter_date"]),
        school_year=school_year,
    )
    return growth, diagnostics


def projection_of_year(wh: Warehouse, school_year: int, as_of: dt.date) -> pl.DataFrame:
    """The year's projection for every student enrolled on the as-of date."""
    inputs = summary_inputs(wh, school_year)
    return chronic_absence_projection(
        calendar=inputs["calendar"],
        enrollment=inputs["enrollment"],
        attendance_days=categorize_attendance(inputs["attendance"], inputs["absence_codes"]),
        school_year=school_year,
        as_of_date=as_of,
    )


@metric_asset(
    IREADY_GROWTH,
    deps=[
        dg.AssetDep(DIAGNOSTIC_RESULTS_KEY, partition_mapping=YEAR_OF_A_FILE),
        asset_key(STUDENTS),
        asset_key(SCHOOL_CALENDAR),
    ],
    automation_condition=AFTER_ANY_UPDATE,
    description=(
        "aptool.iready_growth (contract §4.6): per student, subject and school year, progress from the baseline "
        "diagnostic toward the vendor's annual typical and stretch growth measures, and a status against the "
        "share of the school year's instructional days elapsed at the latest diagnostic."
    ),
)
def iready_growth_asset(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.MaterializeResult:
    school_year = int(context.partition_key)
    wh = warehouse.get()
    growth, _ = growth_of_year(wh, school_year, platform.iready_id_field)
    wh.write(TableWrite(IREADY_GROWTH, growth, {"school_year": school_year}))
    statuses = dict(growth.group_by("growth_status").len().iter_rows())
    context.log.info(f"i-Ready growth {school_year}: {growth.height} rows, {statuses}")
    grades = roster_of_year(wh, school_year, ["student_id", "school_code", "grade"])
    return dg.MaterializeResult(
        metadata=table_metadata(
            IREADY_GROWTH,
            growth.height,
            {
                "growth_status": counts_table({str(k): v for k, v in statuses.items()}, "growth_status"),
                "growth_status_by_school_and_grade": growth_plot_md(growth, grades, school_year),
            },
        )
    )


@metric_asset(
    CHRONIC_ABSENCE_PROJECTION,
    deps=[
        STUDENT_ATTENDANCE_SUMMARY_KEY,
        dg.AssetDep(asset_key(ATTENDANCE_DAYS), partition_mapping=EACH_DAY_TO_ITS_YEAR),
        asset_key(SCHOOL_CALENDAR),
        asset_key(ENROLLMENT),
    ],
    # Recomputed with the summary, which already follows every attendance pull.
    automation_condition=AFTER_ANY_UPDATE.ignore(
        dg.AssetSelection.assets(asset_key(ATTENDANCE_DAYS), asset_key(SCHOOL_CALENDAR), asset_key(ENROLLMENT))
    ),
    description=(
        "aptool.chronic_absence_projection (contract §4.7): for every student enrolled on the as-of date, the "
        "absence rate the school year is heading to by its last instructional day (the year so far, plus the "
        "remaining instructional days at the student's recent rate), whether that ends chronic, and how many more "
        "absences keep the year under 10%. The method is named in projection_method and back-tested "
        "(benchmarks/bench_projection_backtest.py)."
    ),
)
def chronic_absence_projection_asset(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.MaterializeResult:
    school_year = int(context.partition_key)
    as_of = clip_to_school_year(school_year, platform.settings().as_of_date)
    wh = warehouse.get()
    projection = projection_of_year(wh, school_year, as_of)
    wh.write(TableWrite(CHRONIC_ABSENCE_PROJECTION, projection, {"school_year": school_year}))
    summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY, where={"school_year": school_year})
    counts = chronic_counts_by_school(summary, projection)
    heading = int(counts.get_column("newly_projected").sum()) if counts.height else 0
    context.log.info(
        f"projection {school_year} as of {as_of}: {projection.height} enrolled students, {heading} heading to "
        "chronic absence who are not chronic today"
    )
    return dg.MaterializeResult(
        metadata=table_metadata(
            CHRONIC_ABSENCE_PROJECTION,
            projection.height,
            {
                "as_of_date": str(as_of),
                "projection_method": ", ".join(sorted(set(projection.get_column("projection_method")))) or "–",
                "projected_not_yet_chronic": heading,
                "by_school": dg.MetadataValue.md(_counts_markdown(counts)),
                "projected_vs_current_chronic_by_school": projection_plot_md(counts, as_of),
            },
        )
    )


def chronic_counts_by_school(summary: pl.DataFrame, projection: pl.DataFrame) -> pl.DataFrame:
    """Per school: enrolled students projected, chronic today, projected chronic, and projected chronic who are
    not chronic today (the students the projection adds)."""
    keys = ["student_id", "school_code"]
    joined = projection.join(summary.select(*keys, "is_chronically_absent"), on=keys, how="left").with_columns(
        pl.col("is_chronically_absent").fill_null(False)
    )
    return (
        joined.group_by("school_code")
        .agg(
            pl.len().alias("enrolled"),
            pl.col("is_chronically_absent").sum().alias("chronic_today"),
            pl.col("projected_chronic").sum().alias("projected_chronic"),
            (pl.col("projected_chronic") & ~pl.col("is_chronically_absent")).sum().alias("newly_projected"),
        )
        .sort("school_code")
    )


def _counts_markdown(counts: pl.DataFrame) -> str:
    if counts.height == 0:
        return "_no enrolled students_"
    lines = [
        "| school | enrolled | chronic today | projected chronic by June | of them not chronic today |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {sc} | {n} | {today} | {proj} | {new} |" for sc, n, today, proj, new in counts.iter_rows()]
    return "\n".join(lines)


def projection_plot_md(counts: pl.DataFrame, as_of: dt.date) -> dg.MetadataValue:
    if counts.height == 0:
        return dg.MetadataValue.md("_no enrolled students_")
    png = projected_chronic_png(counts, title=f"Chronically absent: today vs projected by June, as of {as_of}")
    return dg.MetadataValue.md(png_markdown(png, "projected vs current chronic absence by school"))


def growth_plot_md(growth: pl.DataFrame, grades: pl.DataFrame, school_year: int) -> dg.MetadataValue:
    """Growth status counts per school and grade (grade and school from the student's record)."""
    if growth.height == 0:
        return dg.MetadataValue.md("_no growth data_")
    records = grades.sort("school_code").unique(subset=["student_id"], keep="first")
    with_school = growth.join(records, on="student_id", how="left")
    png = growth_status_png(with_school, title=f"i-Ready growth status by school and grade, {school_year}")
    return dg.MetadataValue.md(png_markdown(png, "growth status by school and grade"))


OUTLOOK_ASSETS = [iready_growth_asset, chronic_absence_projection_asset]
