"""Data tests on aptool.iready_diagnostic_results.

Each check looks at the partition just materialized (or the whole table when run on its own
from the UI) and names what is wrong with IDs and counts, never names.
"""

import datetime as dt

import dagster as dg
import polars as pl

from aptool_assets.metadata import counts_table
from aptool_assets.partitions import split_year_subject_key
from aptool_assets.resources import PlatformResource
from aptool_assets.rules.academic import RELATIVE_PLACEMENTS
from aptool_assets.rules.student_ids import MATCHED_ERROR_BELOW, MATCHED_WARN_BELOW, match_shares
from aptool_assets.sources.iready.assets import DIAGNOSTIC_RESULTS_KEY, STUDENTS_KEY, roster_ids
from aptool_assets.sources.iready.schemas import validate_results
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.tables.iready import CELL_PROBLEMS, DIAGNOSTIC_RESULTS, REJECTED_ROWS

SAMPLE = 10


def _slice(context: dg.AssetCheckExecutionContext) -> dict:
    if context.has_partition_key:
        year, subject = split_year_subject_key(context.partition_key)
        return {"academic_year": year, "subject": subject}
    return {}


def _scope(where: dict) -> str:
    return f"{where['subject']} {where['academic_year']}" if where else "all partitions"


@dg.asset_check(asset=DIAGNOSTIC_RESULTS_KEY, description="The published rows satisfy the pandera schema.")
def schema_valid(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    where = _slice(context)
    df = warehouse.get().read_table(DIAGNOSTIC_RESULTS, where=where)
    problems = validate_results(df)
    return dg.AssetCheckResult(
        passed=not problems,
        description=("; ".join(problems[:SAMPLE]) if problems else f"{df.height} rows valid ({_scope(where)})"),
        metadata={"rows_checked": df.height, "problems": len(problems)},
    )


@dg.asset_check(
    asset=DIAGNOSTIC_RESULTS_KEY,
    description="The contract key (student, subject, year, completion date, scale score, source file) is unique.",
)
def key_unique(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    where = _slice(context)
    df = warehouse.get().read_table(DIAGNOSTIC_RESULTS, where=where, columns=DIAGNOSTIC_RESULTS.key)
    dupes = df.group_by(list(DIAGNOSTIC_RESULTS.key)).len().filter(pl.col("len") > 1)
    ids = dupes.get_column("vendor_student_id").unique().sort().head(SAMPLE).to_list()
    return dg.AssetCheckResult(
        passed=dupes.height == 0,
        description=f"{dupes.height} duplicated keys" + (f"; vendor student IDs {ids}" if ids else ""),
        metadata={"duplicate_keys": dupes.height, "student_id_sample": dg.MetadataValue.json(ids)},
    )


@dg.asset_check(asset=DIAGNOSTIC_RESULTS_KEY, description="Overall and domain scale scores lie within 100–800.")
def scale_scores_in_range(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    where = _slice(context)
    score_cols = [c for c in DIAGNOSTIC_RESULTS.columns if c.endswith("scale_score")]
    df = warehouse.get().read_table(DIAGNOSTIC_RESULTS, where=where, columns=["student_id", *score_cols])
    out_of_range = df.filter(pl.any_horizontal([~pl.col(c).is_between(100, 800) for c in score_cols]))
    ids = out_of_range.get_column("student_id").unique().sort().head(SAMPLE).to_list()
    return dg.AssetCheckResult(
        passed=out_of_range.height == 0,
        description=f"{out_of_range.height} rows with a scale score outside 100–800"
        + (f"; student IDs {ids}" if ids else ""),
        metadata={"rows_out_of_range": out_of_range.height, "student_id_sample": dg.MetadataValue.json(ids)},
    )


@dg.asset_check(
    asset=DIAGNOSTIC_RESULTS_KEY,
    description="Overall relative placement is one of the five vendor values.",
)
def relative_placement_valid(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    where = _slice(context)
    df = warehouse.get().read_table(
        DIAGNOSTIC_RESULTS, where=where, columns=["student_id", "overall_relative_placement"]
    )
    bad = df.filter(~pl.col("overall_relative_placement").is_in(list(RELATIVE_PLACEMENTS)))
    values = bad.get_column("overall_relative_placement").unique().head(SAMPLE).to_list()
    return dg.AssetCheckResult(
        passed=bad.height == 0,
        description=f"{bad.height} rows with an unknown relative placement" + (f": {values}" if values else ""),
        metadata={"invalid_rows": bad.height},
    )


@dg.asset_check(
    asset=DIAGNOSTIC_RESULTS_KEY,
    description="The share of rejected rows stays under the threshold (a jump usually means a layout change).",
)
def rejected_ratio_below_threshold(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.AssetCheckResult:
    where = _slice(context)
    wh = warehouse.get()
    loaded = wh.read_table(DIAGNOSTIC_RESULTS, where=where, columns=["student_id"]).height
    rejected = wh.read_table(REJECTED_ROWS, where=where, columns=["reason"])
    ratio = rejected.height / (loaded + rejected.height) if (loaded + rejected.height) else 0.0
    limit = platform.iready_max_rejected_ratio
    return dg.AssetCheckResult(
        passed=ratio <= limit,
        description=f"{rejected.height} of {loaded + rejected.height} rows rejected ({ratio:.2%}; limit {limit:.0%}) "
        f"in {_scope(where)}",
        metadata={"rows_rejected": rejected.height, "rows_loaded": loaded, "rejected_ratio": ratio},
    )


@dg.asset_check(
    asset=DIAGNOSTIC_RESULTS_KEY,
    description="The current school year's results were loaded recently (the vendor rewrites files nightly).",
)
def fresh(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.AssetCheckResult:
    settings = platform.settings()
    df = warehouse.get().read_table(
        DIAGNOSTIC_RESULTS, where={"academic_year": settings.school_year}, columns=["loaded_at"]
    )
    latest = df.get_column("loaded_at").max() if df.height else None
    limit = dt.timedelta(hours=platform.iready_freshness_hours)
    age = dt.datetime.now(dt.UTC) - latest if latest else None
    return dg.AssetCheckResult(
        passed=age is not None and age <= limit,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"no results loaded for {settings.school_year} yet"
            if age is None
            else f"last load {age.total_seconds() / 3600:.1f} h ago (limit {platform.iready_freshness_hours:g} h)"
        ),
        metadata={"last_loaded_at": str(latest) if latest else "never"},
    )


@dg.asset_check(
    asset=DIAGNOSTIC_RESULTS_KEY,
    additional_deps=[STUDENTS_KEY],
    description="The share of the year's rows whose Student ID maps to an Aeries student by APTOOL_IREADY_ID_FIELD: "
    f"a warning under {MATCHED_WARN_BELOW:.0%}, an error under {MATCHED_ERROR_BELOW:.0%}; when it is low, the "
    "check says which ID field would match better.",
)
def iready_students_matched(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.AssetCheckResult:
    where = _slice(context) or {"academic_year": platform.settings().school_year}
    wh = warehouse.get()
    rows = wh.read_table(DIAGNOSTIC_RESULTS, where=where, columns=["vendor_student_id", "school_name", "student_id"])
    field = platform.iready_id_field
    matched = int(rows.get_column("student_id").is_not_null().sum())
    share = matched / rows.height if rows.height else 1.0
    advice = ""
    shares: dict[str, float] = {}
    if share < MATCHED_WARN_BELOW:
        shares = match_shares(rows, roster_ids(wh, where.get("academic_year", platform.settings().school_year)))
        best = max(shares, key=lambda f: shares[f])
        if best != field and shares[best] > share:
            advice = f"; APTOOL_IREADY_ID_FIELD={best} would match {shares[best]:.1%}"
    unmatched = rows.filter(pl.col("student_id").is_null()).get_column("vendor_student_id")
    return dg.AssetCheckResult(
        passed=share >= MATCHED_WARN_BELOW,
        severity=dg.AssetCheckSeverity.ERROR if share < MATCHED_ERROR_BELOW else dg.AssetCheckSeverity.WARN,
        description=f"{matched} of {rows.height} rows ({share:.1%}) in {_scope(where)} match an Aeries student by "
        f"{field}{advice}",
        metadata={
            "id_field": field,
            "rows": rows.height,
            "rows_matched": matched,
            "share_matched": share,
            "share_by_id_field": dg.MetadataValue.json({k: round(v, 4) for k, v in shares.items()}),
            "unmatched_vendor_id_sample": dg.MetadataValue.json(unmatched.unique().sort().head(SAMPLE).to_list()),
        },
    )


@dg.asset_check(
    asset=DIAGNOSTIC_RESULTS_KEY,
    description="Secondary cells that could not be read (published as null, listed in aptool.iready_cell_problems), "
    "counted by column and reason: a warning, the diagnostics themselves are published.",
)
def cells_readable(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    where = _slice(context)
    problems = warehouse.get().read_table(CELL_PROBLEMS, where=where, columns=["column_name", "reason"])
    by_cause = problems.group_by("column_name", "reason").len().sort("len", "column_name", descending=[True, False])
    causes = [f"{col} {reason} ({n})" for col, reason, n in by_cause.head(SAMPLE).iter_rows()]
    return dg.AssetCheckResult(
        passed=problems.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{problems.height} unreadable cells published as null in {_scope(where)}"
        + (f": {', '.join(causes)}" if causes else ""),
        metadata={
            "cells_unreadable": problems.height,
            "by_column": counts_table(dict(problems.group_by("column_name").len().iter_rows()), "column"),
        },
    )


IREADY_CHECKS = [
    schema_valid,
    key_unique,
    scale_scores_in_range,
    relative_placement_valid,
    rejected_ratio_below_threshold,
    fresh,
    iready_students_matched,
    cells_readable,
]
