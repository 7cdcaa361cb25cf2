"""Derived metrics: academic risk (contract §4.2), from the published i-Ready results."""


import dagster as dg
import polars as pl

from aptool_assets.metadata import column_schema, counts_table, table_metadata
from aptool_assets.metrics.tables import STUDENT_ACADEMIC_RISK, STUDENTS_TABLE_NAME
from aptool_assets.partitions import school_year_partitions
from aptool_assets.rules.academic import student_academic_risk as compute_academic_risk
from aptool_assets.sources.iready.assets import DIAGNOSTIC_RESULTS_KEY
from aptool_assets.sources.iready.tables import DIAGNOSTIC_RESULTS
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import TableWrite

GROUP = "metrics"
ACADEMIC_RISK_KEY = dg.AssetKey(["aptool", STUDENT_ACADEMIC_RISK.name])


def roster_student_ids(warehouse, school_year: int) -> pl.Series | None:
    """Every student Aeries knows (active or not), when the Aeries tables have been published."""
    if not warehouse.table_exists(STUDENTS_TABLE_NAME):
        return None
    return warehouse.query(f"SELECT DISTINCT student_id FROM aptool.{STUDENTS_TABLE_NAME}").get_column("student_id")


@dg.asset(
    key=ACADEMIC_RISK_KEY,
    group_name=GROUP,
    partitions_def=school_year_partitions,
    deps=[
        dg.AssetDep(
            DIAGNOSTIC_RESULTS_KEY,
            partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="school_year"),
        )
    ],
    kinds={"polars", "duckdb", "postgres"},
    owners=["team:district-data"],
    automation_condition=dg.AutomationCondition.eager(),
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
    roster = roster_student_ids(wh, school_year)
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
