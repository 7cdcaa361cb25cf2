"""The School Dashboard preview (contract §4.5): student groups and the Chronic Absenteeism Indicator.

Thin assets over the pure rules in :mod:`aptool_assets.rules.indicator`: they read the year's attendance
summary, enrollment grades, Aeries demographics and program records from the warehouse, and publish
``aptool.student_groups`` and ``aptool.chronic_absenteeism_indicator``. The indicator compares with the
previous school year when the platform holds that year's summary (``aptool run --year <previous>``).
The metadata shows counts and rates per school and group, with suppressed cells as ``*``: no student
detail, the table is the one a district may share.
"""

import datetime as dt

import dagster as dg
import polars as pl

from aptool_assets.metadata import table_metadata
from aptool_assets.metrics.assets import AFTER_ANY_UPDATE, STUDENT_ATTENDANCE_SUMMARY_KEY, metric_asset
from aptool_assets.metrics.plots import group_rates_png, png_markdown
from aptool_assets.partitions import THIS_YEAR_AND_THE_PREVIOUS
from aptool_assets.resources import PlatformResource
from aptool_assets.rules.indicator import cde_layout, chronic_absenteeism_indicator
from aptool_assets.rules.student_groups import student_groups
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import TableWrite, Warehouse
from aptool_assets.tables import asset_key
from aptool_assets.tables.aeries import ENROLLMENT, STUDENT_PROGRAMS, STUDENTS
from aptool_assets.tables.metrics import CHRONIC_ABSENTEEISM_INDICATOR, STUDENT_ATTENDANCE_SUMMARY, STUDENT_GROUPS
from aptool_assets.tables.rosters import demographics_of_year
from aptool_assets.vocabulary import RACE_ETHNICITY_GROUPS, clip_to_school_year, school_year_bounds

STUDENT_GROUPS_KEY = asset_key(STUDENT_GROUPS)
INDICATOR_KEY = asset_key(CHRONIC_ABSENTEEISM_INDICATOR)
TOP_GROUPS = 3
SUPPRESSED = "*"


def groups_of_year(wh: Warehouse, school_year: int, as_of: dt.date, foster_program_code: str) -> pl.DataFrame:
    """The year's student groups from the roster's demographics and the year's program records."""
    return student_groups(
        demographics_of_year(wh, school_year),
        wh.read_table(STUDENT_PROGRAMS, where={"school_year": school_year}),
        school_year=school_year,
        as_of_date=as_of,
        foster_program_code=foster_program_code,
    )


def indicator_inputs(wh: Warehouse, school_year: int, groups: pl.DataFrame) -> pl.DataFrame:
    """Per student and school of the year's summary: days, the grade and enter date of the latest stint at
    that school (enrollment history), and the student's groups."""
    keys = ["student_id", "school_code"]
    summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY, where={"school_year": school_year}).select(
        "school_year", *keys, "days_enrolled", "days_absent"
    )
    stints = (
        wh.read_table(ENROLLMENT, where={"academic_year": school_year})
        .sort("enter_date")
        .group_by(keys)
        .agg(pl.col("grade").last(), pl.col("enter_date").last())
    )
    return summary.join(stints, on=keys, how="left").join(
        groups.drop("school_year", "source_updated_at"), on="student_id", how="left"
    )


@metric_asset(
    STUDENT_GROUPS,
    deps=[asset_key(STUDENTS), asset_key(STUDENT_PROGRAMS)],
    automation_condition=AFTER_ANY_UPDATE,
    description=(
        "aptool.student_groups (contract §4.5): per student and school year, the Dashboard's student groups — "
        "race/ethnicity from the Aeries record (CALPADS codes), English learner, and from program records active "
        "in the year through the as-of date: students with disabilities (144), homeless (191), foster "
        "(APTOOL_FOSTER_PROGRAM_CODE), socioeconomically disadvantaged (181/182 meals, parent education, "
        "migrant, homeless or foster)."
    ),
)
def student_groups_asset(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.MaterializeResult:
    school_year = int(context.partition_key)
    as_of = clip_to_school_year(school_year, platform.settings().as_of_date)
    wh = warehouse.get()
    groups = groups_of_year(wh, school_year, as_of, platform.foster_program_code)
    wh.write(TableWrite(STUDENT_GROUPS, groups, {"school_year": school_year}))
    counts = {
        "students": groups.height,
        **{f"race_{race}": int((groups.get_column("race_ethnicity") == race).sum()) for race in RACE_ETHNICITY_GROUPS},
        **{flag: int(groups.get_column(flag).sum()) for flag in groups.columns if flag.startswith("is_")},
    }
    context.log.info(f"student groups {school_year}: {counts}")
    return dg.MaterializeResult(metadata=table_metadata(STUDENT_GROUPS, groups.height, counts))


@metric_asset(
    CHRONIC_ABSENTEEISM_INDICATOR,
    deps=[
        # The change from the prior year reads that year's summary too.
        dg.AssetDep(STUDENT_ATTENDANCE_SUMMARY_KEY, partition_mapping=THIS_YEAR_AND_THE_PREVIOUS),
        STUDENT_GROUPS_KEY,
        asset_key(ENROLLMENT),
    ],
    automation_condition=AFTER_ANY_UPDATE.ignore(dg.AssetSelection.assets(asset_key(ENROLLMENT))),
    description=(
        "aptool.chronic_absenteeism_indicator (contract §4.5): a preview of the California School Dashboard's "
        "Chronic Absenteeism Indicator through the as-of date, per school and for the district, for all students "
        "and each student group — eligible TK–8 students (≥ 31 days enrolled, ≥ 1 day attended), chronically "
        "absent count and rate, the change from the previous school year, status and change levels, n-size, "
        "with every group under 11 students suppressed (and NR when a race group is). Safe to share."
    ),
)
def chronic_absenteeism_indicator_asset(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, platform: PlatformResource
) -> dg.MaterializeResult:
    school_year = int(context.partition_key)
    as_of = clip_to_school_year(school_year, platform.settings().as_of_date)
    wh = warehouse.get()
    current = indicator_inputs(wh, school_year, wh.read_table(STUDENT_GROUPS, where={"school_year": school_year}))
    prior_year = school_year - 1
    prior_groups = groups_of_year(wh, prior_year, school_year_bounds(prior_year)[1], platform.foster_program_code)
    prior = indicator_inputs(wh, prior_year, prior_groups)
    indicator = chronic_absenteeism_indicator(
        current, prior if prior.height else None, school_year=school_year, as_of_date=as_of
    )
    wh.write(TableWrite(CHRONIC_ABSENTEEISM_INDICATOR, indicator, {"school_year": school_year}))
    context.log.info(
        f"chronic absenteeism indicator {school_year} as of {as_of}: {indicator.height} rows, "
        f"prior year {'held' if prior.height else 'not held'}"
    )
    return dg.MaterializeResult(
        metadata=table_metadata(
            CHRONIC_ABSENTEEISM_INDICATOR,
            indicator.height,
            {
                "as_of_date": str(as_of),
                "prior_year_held": bool(prior.height),
                "by_school": dg.MetadataValue.md(preview_markdown(indicator)),
                "rate_by_group": rate_plot_md(indicator, as_of),
            },
        )
    )


def _cell(value, fmt: str = "{}") -> str:
    return SUPPRESSED if value is None else fmt.format(value)


def preview_markdown(indicator: pl.DataFrame) -> str:
    """Per school (and the district): ALL's status and change, then the three groups with the highest rates;
    suppressed cells show ``*``."""
    if indicator.height == 0:
        return "_no eligible students_"
    lines = [
        "| school | eligible | ALL rate | status | change | top groups by rate |",
        "|---:|---:|---:|---|---|---|",
    ]
    for (level, school), rows in sorted(
        indicator.partition_by("level", "school_code", as_dict=True).items(),
        key=lambda kv: (kv[0][0] != "district", kv[0][1]),
    ):
        everyone = rows.filter(pl.col("student_group") == "ALL")
        if everyone.height == 0:
            continue
        all_row = everyone.row(0, named=True)
        groups = rows.filter(pl.col("student_group") != "ALL").sort(
            "rate_pct", "student_group", descending=[True, False], nulls_last=True
        )
        top = ", ".join(
            f"{r['student_group']} {_cell(r['rate_pct'], '{:.1f}%')}"
            for r in groups.head(TOP_GROUPS).iter_rows(named=True)
        )
        change = _cell(all_row["change_pct"], "{:+.1f}") if all_row["prior_eligible_count"] is not None else "–"
        name = "district" if level == "district" else str(school)
        lines.append(
            f"| {name} | {all_row['eligible_count']} | {_cell(all_row['rate_pct'], '{:.1f}%')} | "
            f"{_cell(all_row['status_level'])} | {change} {all_row['change_level'] or ''} | {top or '–'} |"
        )
    return "\n".join(lines)


def rate_plot_md(indicator: pl.DataFrame, as_of: dt.date) -> dg.MetadataValue:
    """The district's rate per group against the status cut points, as an inline PNG."""
    district = indicator.filter((pl.col("level") == "district") & pl.col("rate_pct").is_not_null())
    if district.height == 0:
        return dg.MetadataValue.md("_no group large enough to show_")
    png = group_rates_png(district, title=f"District chronic absenteeism rate by group, as of {as_of}")
    return dg.MetadataValue.md(png_markdown(png, "chronic absenteeism rate by group"))


def dashboard_preview(wh: Warehouse, school_year: int) -> pl.DataFrame:
    """The published indicator of ``school_year`` in CDE's downloadable-file layout (blanks where suppressed),
    for ``aptool export dashboard-preview``; empty when the year was never computed."""
    return cde_layout(wh.read_table(CHRONIC_ABSENTEEISM_INDICATOR, where={"school_year": school_year}))


DASHBOARD_ASSETS = [student_groups_asset, chronic_absenteeism_indicator_asset]
