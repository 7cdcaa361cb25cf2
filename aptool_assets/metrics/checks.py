"""Data tests on the derived metric tables."""

import dagster as dg
import polars as pl

from aptool_assets.partitions import school_year_slice
from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY
from aptool_assets.metrics.tables import STUDENT_ACADEMIC_RISK, STUDENT_INTERVENTION_RANKING
from aptool_assets.rules.ranking import ranking_problems
from aptool_assets.storage.resources import WarehouseResource

RISKS = ("HIGH", "MEDIUM", "LOW")


@dg.asset_check(
    asset=ACADEMIC_RISK_KEY,
    description="One row per (school_year, student_id); risks are HIGH/MEDIUM/LOW (overall also UNKNOWN) "
    "and overall_risk is the higher of the subject risks.",
)
def academic_risk_consistent(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    df = warehouse.get().read_table(STUDENT_ACADEMIC_RISK, where=school_year_slice(context))
    dupes = df.group_by(["school_year", "student_id"]).len().filter(pl.col("len") > 1).height
    rank = {"HIGH": 3, "MEDIUM": 2, "LOW": 1}
    expected = (
        pl.max_horizontal(
            pl.col("ela_risk").replace_strict(rank, default=0, return_dtype=pl.Int8),
            pl.col("math_risk").replace_strict(rank, default=0, return_dtype=pl.Int8),
        )
        .replace_strict({3: "HIGH", 2: "MEDIUM", 1: "LOW", 0: "UNKNOWN"}, return_dtype=pl.Utf8)
    )
    bad = df.filter(
        (pl.col("overall_risk") != expected)
        | (pl.col("ela_risk").is_not_null() & ~pl.col("ela_risk").is_in(RISKS))
        | (pl.col("math_risk").is_not_null() & ~pl.col("math_risk").is_in(RISKS))
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
        description="; ".join(problems[:10]) if problems else f"{df.height} students ranked in "
        f"{df.get_column('school_code').n_unique() if df.height else 0} schools",
        metadata={"rows": df.height, "problems": len(problems)},
    )


METRICS_CHECKS = [academic_risk_consistent, ranking_dense_and_monotone]
