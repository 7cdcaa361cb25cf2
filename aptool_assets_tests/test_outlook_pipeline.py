"""Growth and the end-of-year projection end to end on the simulated district (DuckDB and PostgreSQL): Aeries
pulled, the i-Ready results of the same students published, then aptool.iready_growth,
aptool.chronic_absence_projection, their data tests and metadata, and the ranking's reasons that use them."""

from __future__ import annotations

import datetime as dt

import polars as pl

from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY
from aptool_assets.metrics.outlook import IREADY_GROWTH_KEY, PROJECTION_KEY
from aptool_assets.resources import PlatformResource
from aptool_assets.rules.student_ids import map_vendor_ids
from aptool_assets.sources.iready.parser import parse_diagnostic_file
from aptool_assets.storage.warehouse import TableWrite
from aptool_assets.tables.aeries import STUDENTS
from aptool_assets.tables.iready import DIAGNOSTIC_RESULTS
from aptool_assets.tables.metrics import (
    CHRONIC_ABSENCE_PROJECTION,
    IREADY_GROWTH,
    STUDENT_ATTENDANCE_SUMMARY,
    STUDENT_INTERVENTION_RANKING,
)
from aptool_assets_tests.test_aeries_pipeline import THROUGH, YEAR, env, simulator  # noqa: F401 - fixtures, reused
from aptool_demo.diagnostics import synthetic_diagnostics
from aptool_demo.iready_files import write_diagnostic_csv

HEADING = "on track to be chronically absent by June (projected "


def publish_diagnostics(env, tmp_path) -> pl.DataFrame:
    """This year's ELA and math diagnostics of the district's students, parsed from vendor files as delivered."""
    ids = sorted({s["StudentID"] for s in env.sim.district.students})
    parts = []
    for subject, seed in (("ela", 3), ("math", 4)):
        path = tmp_path / f"diagnostic_results_{subject}.csv"
        records = synthetic_diagnostics(
            n_students=len(ids), academic_year=YEAR, subject=subject, seed=seed, student_ids=ids
        ).filter(pl.col("completion_date") <= THROUGH)
        write_diagnostic_csv(path, records, subject=subject, layout="2024-25")
        parsed = parse_diagnostic_file(path, subject=subject, source_file=path.name, expected_academic_year=YEAR)
        parts.append(parsed.results)
    results = map_vendor_ids(pl.concat(parts), env.warehouse.read_table(STUDENTS))
    for subject in ("ela", "math"):
        env.warehouse.write(
            TableWrite(
                DIAGNOSTIC_RESULTS,
                results.filter(pl.col("subject") == subject),
                {"academic_year": YEAR, "subject": subject},
            )
        )
    return results


def test_growth_projection_and_reasons(env, tmp_path):
    env.full_sync()
    results = publish_diagnostics(env, tmp_path)
    run = env.run(
        IREADY_GROWTH_KEY, PROJECTION_KEY, ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, partition_key=str(YEAR)
    )
    assert run.success
    checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
    for name in ("growth_values_consistent", "projection_monotone", "ranking_dense_and_monotone"):
        assert checks[name].passed, checks[name].description
    vendor = checks["growth_agrees_with_vendor"]
    assert "compared with the vendor's percent progress" in vendor.description
    assert vendor.metadata["compared"].value > 0

    wh = env.warehouse
    growth = wh.read_table(IREADY_GROWTH, where={"school_year": YEAR})
    tested = results.filter(pl.col("student_id").is_not_null()).select("student_id", "subject").unique()
    assert (
        growth.select("student_id", "subject")
        .unique()
        .sort(["student_id", "subject"])
        .equals(tested.sort(["student_id", "subject"]))
    )
    assert set(growth.get_column("growth_status")) <= {
        "on_track_stretch",
        "on_track_typical",
        "below_typical",
        "no_progress_data",
    }

    # The projection covers the students enrolled on the as-of date, each with the year so far.
    projection = wh.read_table(CHRONIC_ABSENCE_PROJECTION, where={"school_year": YEAR})
    summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY, where={"school_year": YEAR})
    keys = ["student_id", "school_code"]
    joined = projection.join(summary, on=keys, how="left", suffix="_summary")
    assert joined.get_column("days_enrolled_summary").null_count() == 0
    assert (joined.get_column("days_enrolled") == joined.get_column("days_enrolled_summary")).all()
    assert (joined.get_column("days_absent") == joined.get_column("days_absent_summary")).all()
    assert (projection.get_column("remaining_instructional_days") > 0).all()
    left = summary.join(projection, on=keys, how="anti")
    leavers = {
        (r["StudentID"], r["SchoolCode"])
        for r in env.sim.district.enrollment
        if r["LeaveDate"] is not None and r["LeaveDate"] < THROUGH
    }
    assert set(left.select(keys).iter_rows()) <= leavers | set(
        summary.filter(pl.col("days_enrolled") == 0).select(keys).iter_rows()
    )

    # The reasons say "on track to be chronically absent" exactly for students below 10% today who are
    # projected chronic; growth below typical is named by subject.
    ranking = wh.read_table(STUDENT_INTERVENTION_RANKING, where={"school_year": YEAR}).join(
        projection.select(*keys, "projected_chronic", "projected_rate"), on=keys, how="left"
    )
    said = ranking.get_column("reasons").str.contains(HEADING, literal=True)
    expected = ranking.get_column("projected_chronic").fill_null(False) & (
        ranking.get_column("absence_rate").fill_null(0.0) < 0.1
    )
    assert (said == expected).all()
    below = growth.filter(pl.col("growth_status") == "below_typical").get_column("student_id").unique()
    mentioned = ranking.filter(pl.col("reasons").str.contains("% of typical growth", literal=True))
    assert set(mentioned.get_column("student_id")) == set(below) & set(ranking.get_column("student_id"))

    meta = run.asset_materializations_for_node("aptool__chronic_absence_projection")[0].metadata
    assert meta["as_of_date"].value == THROUGH.isoformat()
    assert "| school | enrolled |" in meta["by_school"].value
    assert "data:image/png;base64," in meta["projected_vs_current_chronic_by_school"].value
    growth_meta = run.asset_materializations_for_node("aptool__iready_growth")[0].metadata
    assert "data:image/png;base64," in growth_meta["growth_status_by_school_and_grade"].value


def test_no_remaining_days_after_the_last_instructional_day(env):
    """As of the year's end the projection is the year itself: no remaining days, projected = current."""
    env.full_sync()
    env.resources["platform"] = PlatformResource(school_year=YEAR, as_of_date=dt.date(YEAR + 1, 6, 30).isoformat())
    assert env.run(PROJECTION_KEY, partition_key=str(YEAR)).success
    projection = env.warehouse.read_table(CHRONIC_ABSENCE_PROJECTION, where={"school_year": YEAR})
    assert projection.height and (projection.get_column("remaining_instructional_days") == 0).all()
    assert (projection.get_column("projected_days_absent") == projection.get_column("days_absent")).all()
