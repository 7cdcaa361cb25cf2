"""Data tests on aptool.iready_diagnostic_results.

Each check looks at the partition just materialized (or the whole table when run on its own
from the UI) and names what is wrong with IDs and counts, never names.
"""

import datetime as dt

import dagster as dg
import polars as pl

from aptool_assets.partitions import split_year_subject_key
from aptool_assets.resources import PlatformResource
from aptool_assets.rules.academic import RELATIVE_PLACEMENTS
from aptool_assets.sources.iready.assets import DIAGNOSTIC_RESULTS_KEY
from aptool_assets.sources.iready.schemas import validate_results
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.tables.iready import DIAGNOSTIC_RESULTS, REJECTED_ROWS

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
    ids = dupes.get_column("student_id").unique().sort().head(SAMPLE).to_list()
    return dg.AssetCheckResult(
        passed=dupes.height == 0,
        description=f"{dupes.height} duplicated keys" + (f"; student IDs {ids}" if ids else ""),
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


IREADY_CHECKS = [
    schema_valid,
    key_unique,
    scale_scores_in_range,
    relative_placement_valid,
    rejected_ratio_below_threshold,
    fresh,
]
