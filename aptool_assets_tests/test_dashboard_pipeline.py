"""The Dashboard preview end to end on the simulated district (DuckDB and PostgreSQL): roster, programs and
attendance pulled from Aeries → aptool.student_groups → aptool.chronic_absenteeism_indicator, its data test,
its metadata, the prior-year comparison, and `aptool export dashboard-preview` in CDE's layout."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from aptool_assets.metrics.dashboard import INDICATOR_KEY, STUDENT_GROUPS_KEY, dashboard_preview
from aptool_assets.rules.indicator import CDE_COLUMNS
from aptool_assets.sources.aeries.assets import STUDENT_PROGRAMS_KEY
from aptool_assets.storage.warehouse import TableWrite
from aptool_assets.tables.aeries import ENROLLMENT
from aptool_assets.tables.metrics import CHRONIC_ABSENTEEISM_INDICATOR, STUDENT_ATTENDANCE_SUMMARY, STUDENT_GROUPS
from aptool_assets.vocabulary import STUDENT_GROUPS as GROUP_CODES
from aptool_assets_tests.test_aeries_pipeline import YEAR, env, simulator  # noqa: F401 - fixtures, reused

CHECK = "indicator_suppression_respected"


def publish_dashboard(env) -> dict:
    env.full_sync()
    assert env.run(STUDENT_PROGRAMS_KEY, partition_key=str(YEAR)).success
    result = env.run(STUDENT_GROUPS_KEY, INDICATOR_KEY, partition_key=str(YEAR))
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_groups_and_indicator_are_published_with_suppression(env):
    checks = publish_dashboard(env)
    assert checks[CHECK].passed, checks[CHECK].description

    groups = env.warehouse.read_table(STUDENT_GROUPS, where={"school_year": YEAR})
    roster_ids = {s["StudentID"] for s in env.sim.district.students}
    assert set(groups.get_column("student_id")) == roster_ids
    assert groups.get_column("is_socioeconomically_disadvantaged").sum() > 0
    assert groups.get_column("is_student_with_disability").sum() > 0

    indicator = env.warehouse.read_table(CHRONIC_ABSENTEEISM_INDICATOR, where={"school_year": YEAR})
    assert set(indicator.get_column("student_group")) <= set(GROUP_CODES)
    everyone = indicator.filter(pl.col("student_group") == "ALL")
    schools = everyone.filter(pl.col("level") == "school")
    district = everyone.filter(pl.col("level") == "district").row(0, named=True)
    assert district["school_code"] == 0 and schools.height >= 2
    # The district counts each student once: never more than the schools together.
    assert district["eligible_count"] <= schools.get_column("eligible_count").sum()
    small = indicator.filter(pl.col("eligible_count") < 11)
    assert small.height and small.get_column("rate_pct").null_count() == small.height
    assert small.get_column("chronic_count").null_count() == small.height
    # No prior year is held: no prior figures, no change.
    assert indicator.get_column("prior_eligible_count").null_count() == indicator.height
    assert indicator.get_column("change_level").null_count() == indicator.height
    assert (indicator.get_column("n_size_met") == (indicator.get_column("eligible_count") >= 30)).all()

    # The eligible students are the summary's TK–8 students with ≥ 31 days who attended at least a day.
    summary = env.warehouse.read_table(STUDENT_ATTENDANCE_SUMMARY, where={"school_year": YEAR})
    grades = env.warehouse.read_table(ENROLLMENT, where={"academic_year": YEAR}).sort("enter_date")
    grades = grades.group_by("student_id", "school_code").agg(pl.col("grade").last())
    eligible = summary.join(grades, on=["student_id", "school_code"]).filter(
        pl.col("grade").is_between(-1, 8)
        & (pl.col("days_enrolled") >= 31)
        & (pl.col("days_enrolled") > pl.col("days_absent"))
    )
    for school, n in eligible.group_by("school_code").len().iter_rows():
        assert schools.filter(pl.col("school_code") == school).item(0, "eligible_count") == n


def test_the_indicator_compares_with_a_prior_year_the_platform_holds(env):
    """A district backfills last year (`aptool run --year <last year>`); here its summary and enrollment are
    published directly. The indicator then carries prior figures, a change and a change level."""
    publish_dashboard(env)
    wh = env.warehouse
    prior = YEAR - 1
    summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY, where={"school_year": YEAR}).with_columns(
        pl.lit(prior, pl.Int32).alias("school_year"),
        pl.lit(dt.date(prior + 1, 6, 30)).alias("as_of_date"),
        (pl.col("days_absent") // 2).alias("days_absent"),  # last year was better
    )
    enrollment = wh.read_table(ENROLLMENT, where={"academic_year": YEAR}).with_columns(
        pl.lit(prior, pl.Int32).alias("academic_year"), pl.col("enter_date").dt.offset_by("-1y")
    )
    wh.write(
        TableWrite(STUDENT_ATTENDANCE_SUMMARY, summary, {"school_year": prior}),
        TableWrite(ENROLLMENT, enrollment, {"academic_year": prior}),
    )
    result = env.run(INDICATOR_KEY, partition_key=str(YEAR))
    assert result.success
    indicator = wh.read_table(CHRONIC_ABSENTEEISM_INDICATOR, where={"school_year": YEAR})
    district = indicator.filter((pl.col("level") == "district") & (pl.col("student_group") == "ALL")).row(0, named=True)
    assert district["prior_eligible_count"] is not None and district["prior_rate_pct"] is not None
    assert district["change_pct"] == pytest.approx(district["rate_pct"] - district["prior_rate_pct"], abs=1e-9)
    assert district["change_level"] is not None
    meta = result.asset_materializations_for_node("aptool__chronic_absenteeism_indicator")[0].metadata
    assert meta["prior_year_held"].value is True
    table = meta["by_school"].value
    assert table.splitlines()[2].startswith("| district |")
    assert "*" in table or indicator.filter(pl.col("rate_pct").is_null()).height == 0


def test_export_writes_cde_columns_with_blanks_where_suppressed(env):
    publish_dashboard(env)
    preview = dashboard_preview(env.warehouse, YEAR)
    assert tuple(preview.columns) == CDE_COLUMNS
    assert set(preview.get_column("rtype")) == {"S", "D"}
    assert "NR" not in set(preview.get_column("studentgroup"))
    small = preview.filter(pl.col("currdenom").cast(pl.Int64) < 11)
    assert small.height and small.get_column("currnumer").null_count() == small.height
    assert dashboard_preview(env.warehouse, YEAR + 5).height == 0
