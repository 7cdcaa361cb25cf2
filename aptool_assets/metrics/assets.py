"""Derived metrics: academic risk (contract §4.2), from the published i-Ready results."""

from collections.abc import Sequence

import dagster as dg
import polars as pl

from aptool_assets.metadata import column_schema, counts_table, id_preview, table_metadata
from aptool_assets.metrics.compute import attendance_summary
from aptool_assets.metrics.compute import ranking as compute_ranking
from aptool_assets.metrics.plots import png_markdown, tier_distribution_png
from aptool_assets.partitions import EACH_DAY_TO_ITS_YEAR, YEAR_OF_A_FILE, school_years
from aptool_assets.resources import PlatformResource
from aptool_assets.rules.academic import student_academic_risk as compute_academic_risk
from aptool_assets.rules.ranking import PriorityWeights
from aptool_assets.rules.student_ids import map_vendor_ids
from aptool_assets.sources.aeries.assets import (
    ABSENCE_CODES_KEY,
    ATTENDANCE_DAYS_KEY,
    CALENDAR_KEY,
    ENROLLMENT_KEY,
    STUDENTS_KEY,
)
from aptool_assets.sources.iready.assets import DIAGNOSTIC_RESULTS_KEY, roster_ids
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import TableSpec, TableWrite
from aptool_assets.tables import asset_key
from aptool_assets.tables.iready import DIAGNOSTIC_RESULTS
from aptool_assets.tables.metrics import (
    CHRONIC_ABSENCE_PROJECTION,
    IREADY_GROWTH,
    STUDENT_ACADEMIC_RISK,
    STUDENT_ATTENDANCE_SUMMARY,
    STUDENT_INTERVENTION_RANKING,
)
from aptool_assets.tables.rosters import roster_of_year
from aptool_assets.vocabulary import clip_to_school_year

GROUP = "metrics"
ACADEMIC_RISK_KEY = dg.AssetKey(["aptool", STUDENT_ACADEMIC_RISK.name])
STUDENT_ATTENDANCE_SUMMARY_KEY = dg.AssetKey(["aptool", STUDENT_ATTENDANCE_SUMMARY.name])
INTERVENTION_RANKING_KEY = dg.AssetKey(["aptool", STUDENT_INTERVENTION_RANKING.name])

AFTER_ANY_UPDATE = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.in_latest_time_window()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after an update of the year's inputs")
"""Recompute a school year when one of *its* inputs updated, never next school year's (the latest partition,
which exists so a district can prepare it in June, but has no attendance to compute from). Dagster's
``eager()`` differs in three ways: it waits for every input partition (most days of a year carry no pull:
weekends, holidays), recomputes only the latest year (a backfilled past year must be computed too), and
materializes every missing year (on a first deployment that is every year since 2020, most without data)."""


def metric_asset(
    table: TableSpec,
    *,
    deps: Sequence[dg.AssetKey | dg.AssetDep],
    description: str,
    automation_condition: dg.AutomationCondition = AFTER_ANY_UPDATE,
):
    """A derived table of one school year: the metrics group, kinds, owners and column schema every metric
    asset shares, kept automatically up to date by ``automation_condition``."""
    return dg.asset(
        key=asset_key(table),
        group_name=GROUP,
        partitions_def=school_years,
        deps=list(deps),
        kinds={"polars", "duckdb", "postgres"},
        owners=["team:district-data"],
        automation_condition=automation_condition,
        description=description,
        metadata={"dagster/column_schema": column_schema(table)},
    )


@metric_asset(
    STUDENT_ACADEMIC_RISK,
    deps=[
        dg.AssetDep(DIAGNOSTIC_RESULTS_KEY, partition_mapping=YEAR_OF_A_FILE),
        STUDENTS_KEY,
    ],
    automation_condition=AFTER_ANY_UPDATE,
    description=(
        "aptool.student_academic_risk: per student and school year, the most recent diagnostic per "
        "subject mapped to HIGH/MEDIUM/LOW (1 grade level below = MEDIUM, 2 or more = HIGH), and the "
        "higher of the two as overall_risk (UNKNOWN without results). Covers every student in "
        "aptool.students; results whose Student ID maps to no student (APTOOL_IREADY_ID_FIELD) get no row "
        "and are counted by the iready_students_matched check."
    ),
)
def student_academic_risk(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.MaterializeResult:
    school_year = int(context.partition_key)
    wh = warehouse.get()
    students = roster_ids(wh, school_year)
    # Mapped again against today's roster: a student enrolled since the file was loaded is matched now.
    diagnostics = map_vendor_ids(
        wh.read_table(DIAGNOSTIC_RESULTS, where={"academic_year": school_year}), students, platform.iready_id_field
    )
    roster = students.get_column("student_id").unique() if students.height else None
    risk = compute_academic_risk(diagnostics, school_year, roster)
    unmatched = int(diagnostics.get_column("student_id").is_null().sum())
    wh.write(TableWrite(STUDENT_ACADEMIC_RISK, risk, {"school_year": school_year}))
    distribution = dict(risk.group_by("overall_risk").len().iter_rows())
    context.log.info(f"academic risk {school_year}: {risk.height} students, {distribution}")
    return dg.MaterializeResult(
        metadata=table_metadata(
            STUDENT_ACADEMIC_RISK,
            risk.height,
            {
                "overall_risk_distribution": counts_table(distribution, label="overall_risk"),
                "students_without_results": distribution.get("UNKNOWN", 0),
                "roster_available": roster is not None,
                "diagnostics_matching_no_student": unmatched,
            },
        )
    )


@metric_asset(
    STUDENT_ATTENDANCE_SUMMARY,
    deps=[
        CALENDAR_KEY,
        ENROLLMENT_KEY,
        ABSENCE_CODES_KEY,
        dg.AssetDep(ATTENDANCE_DAYS_KEY, partition_mapping=EACH_DAY_TO_ITS_YEAR),
        # Grades for the by-grade breakdown in the metadata only (the table does not use them).
        STUDENTS_KEY,
    ],
    # A roster change (every 15 minutes from the change feed) alters no number in the table.
    automation_condition=AFTER_ANY_UPDATE.ignore(dg.AssetSelection.assets(STUDENTS_KEY)),
    description=(
        "aptool.student_attendance_summary (contract §4.1): per student, school and year through the as-of "
        "date — days enrolled (instructional days in the enrollment stints, less temporarily-not-enrolled "
        "days), absences by category from each school's code table, absence rate, chronic flag (≥ 10% with "
        "≥ 31 days enrolled), tier, truancy count (Ed. Code 48260 days) and letter level."
    ),
)
def student_attendance_summary(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.MaterializeResult:
    school_year = int(context.partition_key)
    as_of = clip_to_school_year(school_year, platform.settings().as_of_date)
    wh = warehouse.get()
    summary = attendance_summary(wh, school_year, as_of)
    wh.write(TableWrite(STUDENT_ATTENDANCE_SUMMARY, summary, {"school_year": school_year}))
    chronic = int(summary.get_column("is_chronically_absent").sum()) if summary.height else 0
    context.log.info(
        f"attendance summary {school_year} as of {as_of}: {summary.height} rows, {chronic} chronically absent"
    )
    grades = roster_of_year(wh, school_year, ["student_id", "school_code", "grade"])
    return dg.MaterializeResult(
        metadata=table_metadata(STUDENT_ATTENDANCE_SUMMARY, summary.height, summary_metadata(summary, grades, as_of))
    )


def summary_metadata(summary: pl.DataFrame, grades: pl.DataFrame, as_of) -> dict[str, object]:
    """What an operator checks after a run: counts, rates, a chart and a few IDs; nothing per student."""
    tiers = dict(summary.group_by("attendance_tier").len().iter_rows())
    chronic = summary.filter(pl.col("is_chronically_absent")).sort(
        "absence_rate", "student_id", descending=[True, False]
    )
    return {
        "as_of_date": str(as_of),
        "chronically_absent": chronic.height,
        "tier_distribution": counts_table(tiers, label="attendance_tier"),
        "truancy_letters_due": int((summary.get_column("truancy_letter_level") > 0).sum()) if summary.height else 0,
        "chronic_absence_by_school": chronic_absence_by_school_md(summary),
        "chronic_absence_by_school_and_grade": chronic_absence_by_grade_md(summary, grades),
        "tier_distribution_by_school": tier_plot_md(summary, as_of),
        "chronically_absent_id_preview": dg.MetadataValue.json(id_preview(chronic)),
    }


def tier_plot_md(summary: pl.DataFrame, as_of) -> dg.MetadataValue:
    """The tier chart as an inline PNG: the UI shows it in the materialization's metadata."""
    if summary.height == 0:
        return dg.MetadataValue.md("_no students_")
    png = tier_distribution_png(summary, title=f"Students per attendance tier, as of {as_of}")
    return dg.MetadataValue.md(png_markdown(png, "attendance tiers per school"))


def chronic_absence_by_grade_md(summary: pl.DataFrame, grades: pl.DataFrame) -> dg.MetadataValue:
    """Counts per school and grade (grade from aptool.students; '?' when the record is not in the roster)."""
    if summary.height == 0:
        return dg.MetadataValue.md("_no students_")
    keys = ["student_id", "school_code"]
    grades = grades.select(*(pl.col(k).cast(summary.schema[k]) for k in keys), pl.col("grade").cast(pl.Int32))
    with_grade = summary.join(grades.unique(subset=keys, keep="first"), on=keys, how="left")
    by_grade = (
        with_grade.group_by("school_code", "grade")
        .agg(
            pl.len().alias("students"),
            (pl.col("days_enrolled") >= 31).sum().alias("eligible"),
            pl.col("is_chronically_absent").sum().alias("chronic"),
        )
        .sort("school_code", "grade", nulls_last=True)
    )
    lines = [
        "| school | grade | students | eligible (≥31 days) | chronically absent | rate |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for sc, grade, n, eligible, chronic in by_grade.iter_rows():
        rate = f"{chronic / eligible:.1%}" if eligible else "–"
        label = "?" if grade is None else ("K" if grade == 0 else str(grade))
        lines.append(f"| {sc} | {label} | {n} | {eligible} | {chronic} | {rate} |")
    return dg.MetadataValue.md("\n".join(lines))


def chronic_absence_by_school_md(summary: pl.DataFrame) -> dg.MetadataValue:
    """Counts per school: eligible students, chronically absent, the rate (no student detail)."""
    if summary.height == 0:
        return dg.MetadataValue.md("_no students_")
    by_school = (
        summary.group_by("school_code")
        .agg(
            pl.len().alias("students"),
            (pl.col("days_enrolled") >= 31).sum().alias("eligible"),
            pl.col("is_chronically_absent").sum().alias("chronic"),
        )
        .sort("school_code")
    )
    lines = ["| school | students | eligible (≥31 days) | chronically absent | rate |", "|---:|---:|---:|---:|---:|"]
    for sc, n, eligible, chronic in by_school.iter_rows():
        rate = f"{chronic / eligible:.1%}" if eligible else "–"
        lines.append(f"| {sc} | {n} | {eligible} | {chronic} | {rate} |")
    return dg.MetadataValue.md("\n".join(lines))


TOP_PER_SCHOOL = 5


@metric_asset(
    STUDENT_INTERVENTION_RANKING,
    # Growth and the projection only add to the reasons (where a student is heading), never to the order.
    deps=[
        STUDENT_ATTENDANCE_SUMMARY_KEY,
        ACADEMIC_RISK_KEY,
        asset_key(IREADY_GROWTH),
        asset_key(CHRONIC_ABSENCE_PROJECTION),
    ],
    automation_condition=AFTER_ANY_UPDATE,
    description=(
        "aptool.student_intervention_ranking (contract §4.4): every student of the attendance summary, ranked "
        "within each school — attendance tier, then overall academic risk, then absence rate, then student "
        "ID — with a priority_score monotone in that order (weights configurable with "
        "APTOOL_PRIORITY_WEIGHTS) and a short reason in plain words (no names)."
    ),
)
def student_intervention_ranking(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.MaterializeResult:
    school_year = int(context.partition_key)
    weights = PriorityWeights.from_string(platform.priority_weights)
    if not weights.preserves_contract_order():
        context.log.warning(f"priority weights {weights} do not preserve the contract order: ranking follows the score")
    wh = warehouse.get()
    ranking = compute_ranking(wh, school_year, weights, windows=platform.settings().windows)
    wh.write(TableWrite(STUDENT_INTERVENTION_RANKING, ranking, {"school_year": school_year}))
    top = (
        ranking.filter(pl.col("rank") <= TOP_PER_SCHOOL)
        .group_by("school_code")
        .agg(pl.col("student_id").sort_by("rank"))
        .sort("school_code")
    )
    lines = [f"| school | top {TOP_PER_SCHOOL} student IDs |", "|---:|---|"]
    lines += [f"| {sc} | {', '.join(map(str, ids))} |" for sc, ids in top.iter_rows()]
    return dg.MaterializeResult(
        metadata=table_metadata(
            STUDENT_INTERVENTION_RANKING,
            ranking.height,
            {
                "schools": ranking.get_column("school_code").n_unique() if ranking.height else 0,
                "top_per_school": dg.MetadataValue.md("\n".join(lines)),
                "weights": str(weights),
            },
        )
    )
