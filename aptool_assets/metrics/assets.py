"""Derived metrics: academic risk (contract §4.2), from the published i-Ready results."""


import dagster as dg
import polars as pl

from aptool_assets.metadata import column_schema, counts_table, table_metadata
from aptool_assets.metrics.tables import STUDENT_ACADEMIC_RISK, STUDENT_INTERVENTION_RANKING
from aptool_assets.partitions import school_year_partitions
from aptool_assets.resources import PlatformResource
from aptool_assets.rules.academic import student_academic_risk as compute_academic_risk
from aptool_assets.rules.attendance import student_attendance_summary as compute_attendance_summary
from aptool_assets.rules.ranking import PriorityWeights, intervention_ranking
from aptool_assets.settings import school_year_bounds
from aptool_assets.sources.aeries import period_codes
from aptool_assets.sources.aeries.assets import (
    ABSENCE_CODES_KEY,
    ATTENDANCE_DAYS_KEY,
    CALENDAR_KEY,
    ENROLLMENT_KEY,
    STUDENTS_KEY,
)
from aptool_assets.sources.aeries.tables import (
    ABSENCE_CODES,
    ATTENDANCE_DAYS,
    ENROLLMENT,
    SCHOOL_CALENDAR,
    STUDENT_ATTENDANCE_SUMMARY,
    STUDENTS,
)
from aptool_assets.sources.iready.assets import DIAGNOSTIC_RESULTS_KEY
from aptool_assets.sources.iready.tables import DIAGNOSTIC_RESULTS
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import Between, TableWrite

GROUP = "metrics"
ACADEMIC_RISK_KEY = dg.AssetKey(["aptool", STUDENT_ACADEMIC_RISK.name])
STUDENT_ATTENDANCE_SUMMARY_KEY = dg.AssetKey(["aptool", STUDENT_ATTENDANCE_SUMMARY.name])
INTERVENTION_RANKING_KEY = dg.AssetKey(["aptool", STUDENT_INTERVENTION_RANKING.name])

# Eager, but without waiting for every upstream partition: the summary depends on *all* daily
# attendance partitions, most of which are never pulled (days before the district's first year).
AFTER_ANY_UPDATE = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


def roster_student_ids(warehouse) -> pl.Series | None:
    """Every student Aeries knows (active or not); None before the roster was ever published."""
    ids = warehouse.read_table(STUDENTS, columns=["student_id"]).get_column("student_id").unique()
    return ids if ids.len() else None


@dg.asset(
    key=ACADEMIC_RISK_KEY,
    group_name=GROUP,
    partitions_def=school_year_partitions,
    deps=[
        dg.AssetDep(
            DIAGNOSTIC_RESULTS_KEY,
            partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="school_year"),
        ),
        STUDENTS_KEY,
    ],
    kinds={"polars", "duckdb", "postgres"},
    owners=["team:district-data"],
    automation_condition=AFTER_ANY_UPDATE,
    description=(
        "aptool.student_academic_risk: per student and school year, the most recent diagnostic per "
        "subject mapped to HIGH/MEDIUM/LOW (1 grade level below = MEDIUM, 2 or more = HIGH), and the "
        "higher of the two as overall_risk (UNKNOWN without results). Covers every student in "
        "aptool.students plus every student with results that year."
    ),
    metadata={"dagster/column_schema": column_schema(STUDENT_ACADEMIC_RISK)},
)
def student_academic_risk(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    school_year = int(context.partition_key)
    wh = warehouse.get()
    diagnostics = wh.read_table(DIAGNOSTIC_RESULTS, where={"academic_year": school_year})
    roster = roster_student_ids(wh)
    risk = compute_academic_risk(diagnostics, school_year, roster)
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
            },
        )
    )



@dg.asset(
    key=STUDENT_ATTENDANCE_SUMMARY_KEY,
    group_name=GROUP,
    partitions_def=school_year_partitions,
    deps=[
        CALENDAR_KEY,
        ENROLLMENT_KEY,
        ABSENCE_CODES_KEY,
        # A school year spans many daily partitions; the asset reads the year's window itself.
        dg.AssetDep(ATTENDANCE_DAYS_KEY, partition_mapping=dg.AllPartitionMapping()),
    ],
    kinds={"polars", "duckdb", "postgres"},
    owners=["team:district-data"],
    automation_condition=AFTER_ANY_UPDATE,
    description=(
        "aptool.student_attendance_summary (contract §4.1): per student, school and year through the as-of "
        "date — days enrolled (instructional days in the enrollment stints, less temporarily-not-enrolled "
        "days), absences by category from each school's code table, absence rate, chronic flag (≥ 10% with "
        "≥ 31 days enrolled), tier, truancy count (Ed. Code 48260 days) and letter level."
    ),
    metadata={"dagster/column_schema": column_schema(STUDENT_ATTENDANCE_SUMMARY)},
)
def student_attendance_summary(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.MaterializeResult:
    school_year = int(context.partition_key)
    first, last = school_year_bounds(school_year)
    as_of = min(max(platform.settings().as_of_date, first), last)
    wh = warehouse.get()
    attendance = wh.read_table(ATTENDANCE_DAYS, where={"calendar_date": Between(first, last)}).select(
        "student_id", "school_code", "calendar_date", "all_day_code",
        period_codes.from_json(pl.col("period_codes")).alias("period_codes"),
    )  # fmt: skip
    summary = compute_attendance_summary(
        calendar=wh.read_table(SCHOOL_CALENDAR, where={"school_year": school_year}),
        enrollment=wh.read_table(ENROLLMENT, where={"academic_year": school_year}),
        attendance=attendance,
        absence_codes=wh.read_table(ABSENCE_CODES),
        school_year=school_year,
        as_of_date=as_of,
    )
    wh.write(TableWrite(STUDENT_ATTENDANCE_SUMMARY, summary, {"school_year": school_year}))
    tiers = dict(summary.group_by("attendance_tier").len().iter_rows())
    chronic = int(summary.get_column("is_chronically_absent").sum()) if summary.height else 0
    context.log.info(f"attendance summary {school_year} as of {as_of}: {summary.height} rows, {chronic} chronically absent")
    return dg.MaterializeResult(
        metadata=table_metadata(
            STUDENT_ATTENDANCE_SUMMARY,
            summary.height,
            {
                "as_of_date": str(as_of),
                "chronically_absent": chronic,
                "tier_distribution": counts_table(tiers, label="attendance_tier"),
                "truancy_letters_due": int((summary.get_column("truancy_letter_level") > 0).sum()) if summary.height else 0,
                "chronic_absence_by_school": chronic_absence_by_school_md(summary),
            },
        )
    )


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


@dg.asset(
    key=INTERVENTION_RANKING_KEY,
    group_name=GROUP,
    partitions_def=school_year_partitions,
    deps=[STUDENT_ATTENDANCE_SUMMARY_KEY, ACADEMIC_RISK_KEY],
    kinds={"polars", "duckdb", "postgres"},
    owners=["team:district-data"],
    automation_condition=AFTER_ANY_UPDATE,
    description=(
        "aptool.student_intervention_ranking (contract §4.4): every student of the attendance summary, ranked "
        "within each school — attendance tier, then overall academic risk, then absence rate, then student "
        "ID — with a priority_score monotone in that order (weights configurable with "
        "APTOOL_PRIORITY_WEIGHTS) and a short reason in plain words (no names)."
    ),
    metadata={"dagster/column_schema": column_schema(STUDENT_INTERVENTION_RANKING)},
)
def student_intervention_ranking(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.MaterializeResult:
    school_year = int(context.partition_key)
    weights = PriorityWeights.from_string(platform.priority_weights)
    if not weights.preserves_contract_order():
        context.log.warning(f"priority weights {weights} do not preserve the contract order: ranking follows the score")
    wh = warehouse.get()
    ranking = intervention_ranking(
        wh.read_table(STUDENT_ATTENDANCE_SUMMARY, where={"school_year": school_year}),
        wh.read_table(STUDENT_ACADEMIC_RISK, where={"school_year": school_year}),
        school_year=school_year,
        weights=weights,
    )
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
