"""Data tests on the derived metric tables: the attendance summary (including its reconciliation with
Aeries' own totals), academic risk and the ranking. IDs and counts only."""

import dagster as dg
import polars as pl

from aptool_assets.metadata import duplicate_keys, id_sample
from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, STUDENT_ATTENDANCE_SUMMARY_KEY
from aptool_assets.metrics.dashboard import INDICATOR_KEY
from aptool_assets.metrics.outlook import IREADY_GROWTH_KEY, PROJECTION_KEY, growth_of_year
from aptool_assets.partitions import school_year_slice
from aptool_assets.resources import PlatformResource
from aptool_assets.rules.growth import vendor_progress_agreement, vendor_progress_disagreements
from aptool_assets.rules.indicator_privacy import suppression_problems
from aptool_assets.rules.outlook_checks import growth_problems, projection_problems
from aptool_assets.rules.ranking import ranking_problems
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import Between
from aptool_assets.tables import asset_key
from aptool_assets.tables.aeries import ATTENDANCE_DAYS, ATTENDANCE_HISTORY_SUMMARY, ENROLLMENT
from aptool_assets.tables.metrics import (
    CHRONIC_ABSENCE_PROJECTION,
    CHRONIC_ABSENTEEISM_INDICATOR,
    IREADY_GROWTH,
    STUDENT_ACADEMIC_RISK,
    STUDENT_ATTENDANCE_SUMMARY,
    STUDENT_INTERVENTION_RANKING,
)
from aptool_assets.vocabulary import RISK_LEVELS, RISK_ORDER, school_year_bounds


@dg.asset_check(
    asset=STUDENT_ATTENDANCE_SUMMARY_KEY,
    description="Keys are unique, absence rates lie in [0, 1] and days absent never exceed days enrolled.",
)
def summary_rates_valid(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(STUDENT_ATTENDANCE_SUMMARY, where=school_year_slice(context))
    dupes = duplicate_keys(df, STUDENT_ATTENDANCE_SUMMARY.key)
    bad = df.filter(
        ~pl.col("absence_rate").is_between(0.0, 1.0).fill_null(True) | (pl.col("days_absent") > pl.col("days_enrolled"))
    )
    return dg.AssetCheckResult(
        passed=dupes.height == 0 and bad.height == 0,
        description=f"{df.height} rows, {dupes.height} duplicated keys, {bad.height} impossible rates"
        + (f"; student IDs {id_sample(bad)}" if bad.height else ""),
        metadata={"duplicate_keys": dupes.height, "invalid_rows": bad.height},
    )


@dg.asset_check(
    asset=STUDENT_ATTENDANCE_SUMMARY_KEY,
    additional_deps=[asset_key(ATTENDANCE_HISTORY_SUMMARY)],
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
    worst = (
        int(mismatched.select(pl.max_horizontal("enrolled_diff", "absent_diff").max()).item() or 0)
        if mismatched.height
        else 0
    )
    return dg.AssetCheckResult(
        passed=mismatched.height == 0,
        severity=severity,
        description=(
            f"{joined.height} students compared: {mismatched.height} differ ({beyond.height} by more than "
            f"{tolerance} day(s); largest {worst})"
            + (f"; student IDs {id_sample(beyond if beyond.height else mismatched)}" if mismatched.height else "")
        ),
        metadata={
            "students_compared": joined.height,
            "mismatched": mismatched.height,
            "beyond_tolerance": beyond.height,
            "tolerance_days": tolerance,
            "student_id_sample": dg.MetadataValue.json(id_sample(beyond if beyond.height else mismatched)),
        },
    )


@dg.asset_check(
    asset=STUDENT_ATTENDANCE_SUMMARY_KEY,
    additional_deps=[asset_key(ATTENDANCE_DAYS), asset_key(ENROLLMENT)],
    description="Every student with attendance in the school year has an enrollment record for it at that "
    "school: attendance without one cannot be counted (no enrolled days), so it is reported here, by student "
    "ID and number of days, instead of being dropped silently.",
)
def attendance_has_enrollment(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.AssetCheckResult:
    wh = warehouse.get()
    year = school_year_slice(context).get("school_year", platform.settings().school_year)
    first, last = school_year_bounds(year)
    keys = ["student_id", "school_code"]
    days = wh.read_table(ATTENDANCE_DAYS, where={"calendar_date": Between(first, last)}, columns=keys)
    enrolled = wh.read_table(ENROLLMENT, where={"academic_year": year}, columns=keys).unique()
    orphans = days.join(enrolled, on=keys, how="anti").group_by(keys).len("days").sort(keys)
    total = int(orphans.get_column("days").sum()) if orphans.height else 0
    return dg.AssetCheckResult(
        passed=orphans.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{orphans.height} student-school pairs with attendance in {year} but no enrollment record, "
        f"{total} coded days not counted" + (f"; student IDs {id_sample(orphans)}" if orphans.height else ""),
        metadata={
            "students_without_enrollment": orphans.height,
            "days_not_counted": total,
            "student_id_sample": dg.MetadataValue.json(id_sample(orphans)),
        },
    )


@dg.asset_check(
    asset=ACADEMIC_RISK_KEY,
    description="One row per (school_year, student_id); risks are HIGH/MEDIUM/LOW (overall also UNKNOWN) "
    "and overall_risk is the higher of the subject risks.",
)
def academic_risk_consistent(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(STUDENT_ACADEMIC_RISK, where=school_year_slice(context))
    dupes = duplicate_keys(df, STUDENT_ACADEMIC_RISK.key).height
    expected = pl.max_horizontal(
        pl.col("ela_risk").replace_strict(RISK_ORDER, default=0, return_dtype=pl.Int8),
        pl.col("math_risk").replace_strict(RISK_ORDER, default=0, return_dtype=pl.Int8),
    ).replace_strict({level: risk for risk, level in RISK_ORDER.items()}, return_dtype=pl.Utf8)
    bad = df.filter(
        (pl.col("overall_risk") != expected)
        | (pl.col("ela_risk").is_not_null() & ~pl.col("ela_risk").is_in(RISK_LEVELS))
        | (pl.col("math_risk").is_not_null() & ~pl.col("math_risk").is_in(RISK_LEVELS))
    )
    ids = bad.get_column("student_id").head(10).to_list()
    return dg.AssetCheckResult(
        passed=dupes == 0 and bad.height == 0,
        description=f"{df.height} rows, {dupes} duplicated keys, {bad.height} inconsistent risks"
        + (f"; student IDs {ids}" if ids else ""),
        metadata={"duplicate_keys": dupes, "inconsistent_rows": bad.height},
    )


@dg.asset_check(
    asset=INTERVENTION_RANKING_KEY,
    description="Per school, rank is exactly 1..n with no ties, each student appears once, and priority_score "
    "never increases as rank goes down.",
)
def ranking_dense_and_monotone(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(STUDENT_INTERVENTION_RANKING, where=school_year_slice(context))
    problems = ranking_problems(df)
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems[:10])
        if problems
        else f"{df.height} students ranked in {df.get_column('school_code').n_unique() if df.height else 0} schools",
        metadata={"rows": df.height, "problems": len(problems)},
    )


@dg.asset_check(
    asset=INDICATOR_KEY,
    description="No published row carries a count, rate, level or change for a group under 11 eligible students "
    "(current or prior year), and NR is suppressed wherever a race/ethnicity group of the same school is: nothing "
    "suppressed can be recovered from the table.",
)
def indicator_suppression_respected(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(CHRONIC_ABSENTEEISM_INDICATOR, where=school_year_slice(context))
    problems = suppression_problems(df)
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems[:10]) if problems else f"{df.height} rows, every small group suppressed",
        metadata={"rows": df.height, "problems": len(problems)},
    )


@dg.asset_check(
    asset=IREADY_GROWTH_KEY,
    description="Growth is latest minus baseline score, the percentages follow from the vendor's measures, every "
    "status is known and no baseline comes after its latest diagnostic.",
)
def growth_values_consistent(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(IREADY_GROWTH, where=school_year_slice(context))
    problems = growth_problems(df)
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) if problems else f"{df.height} rows consistent",
        metadata={"rows": df.height, "problems": len(problems)},
    )


@dg.asset_check(
    asset=IREADY_GROWTH_KEY,
    description="Where the vendor's file carries Percent Progress to Annual Typical Growth, it agrees with "
    "pct_typical_growth within 1 point; disagreements are reported by student ID and count (a warning).",
)
def growth_agrees_with_vendor(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.AssetCheckResult:
    wh = warehouse.get()
    year = school_year_slice(context).get("school_year", platform.settings().school_year)
    growth, diagnostics = growth_of_year(wh, year, platform.iready_id_field)
    counts = vendor_progress_agreement(growth, diagnostics)._asdict()
    disagreeing = vendor_progress_disagreements(growth, diagnostics)
    return dg.AssetCheckResult(
        passed=disagreeing.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{year}: {counts['compared']} compared with the vendor's percent progress, {counts['agree']} "
        f"agree within 1 point, {counts['disagree']} differ"
        + (f"; student IDs {id_sample(disagreeing)}" if disagreeing.height else ""),
        metadata={**counts, "student_id_sample": dg.MetadataValue.json(id_sample(disagreeing))},
    )


@dg.asset_check(
    asset=PROJECTION_KEY,
    description="The projection is monotone and consistent: more remaining absences never lower the projected "
    "rate (it is projected absences over projected days, with today's absences as its floor), the chronic flag "
    "follows from it, and the absences still allowed keep the year just under 10%.",
)
def projection_monotone(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(CHRONIC_ABSENCE_PROJECTION, where=school_year_slice(context))
    problems = projection_problems(df)
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) if problems else f"{df.height} projections consistent",
        metadata={"rows": df.height, "problems": len(problems)},
    )


METRICS_CHECKS = [
    summary_rates_valid,
    attendance_has_enrollment,
    summary_reconciles_with_aeries,
    academic_risk_consistent,
    ranking_dense_and_monotone,
    indicator_suppression_respected,
    growth_values_consistent,
    growth_agrees_with_vendor,
    projection_monotone,
]
