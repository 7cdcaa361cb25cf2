"""The Aeries path end to end against the loopback simulator, on DuckDB and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from aptool_assets import definitions
from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, STUDENT_ATTENDANCE_SUMMARY_KEY
from aptool_assets.resilience.policy import AERIES_POLICY
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.aeries.assets import (
    ABSENCE_CODES_KEY,
    ATTENDANCE_DAYS_KEY,
    CALENDAR_KEY,
    ENROLLMENT_KEY,
    HISTORY_KEY,
    SCHOOLS_KEY,
    STUDENTS_KEY,
    month_windows,
)
from aptool_assets.sources.aeries.client import AeriesResource
from aptool_assets.sources.aeries.schedules import RANGE_END, RANGE_START
from aptool_assets.sources.aeries.sensors import aeries_student_changes_sensor
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import open_warehouse
from aptool_assets.tables.aeries import ABSENCE_CODES, ATTENDANCE_DAYS, STUDENTS
from aptool_assets.tables.metrics import STUDENT_ATTENDANCE_SUMMARY, STUDENT_INTERVENTION_RANKING
from aptool_assets_tests.conftest import evaluate_sensor, with_default_resources
from aptool_demo.codes import DISTRICT_ONLY_LETTER
from aptool_demo.district import build_district
from aptool_demo.simulator import build_sim_district, start_simulator

YEAR = 2025
THROUGH = dt.date(2026, 3, 13)
FIRST = dt.date(2025, 7, 1)


@pytest.fixture
def simulator():
    """A fresh simulated district per test: tests mutate it (corrections, withdrawals)."""
    sim = build_sim_district(build_district(YEAR), through=THROUGH)
    with start_simulator(sim) as running:
        yield running


class AeriesEnv:
    def __init__(self, simulator, warehouse_url: str, instance: dg.DagsterInstance):
        self.sim = simulator
        self.instance = instance
        self.warehouse = open_warehouse(warehouse_url)
        self.resources = with_default_resources(
            aeries=AeriesResource(
                base_url=simulator.base_url, cert=simulator.cert, resilience=AERIES_POLICY.but(retry_base_delay_s=0.01)
            ),
            warehouse=WarehouseResource(database_url=warehouse_url),
            platform=PlatformResource(school_year=YEAR, as_of_date=THROUGH.isoformat()),
        )

    def run(self, *keys, partition_key=None, tags=None, run_config=None) -> dg.ExecuteInJobResult:
        return dg.materialize(
            assets=[*definitions.ASSETS, *definitions.ASSET_CHECKS],
            selection=dg.AssetSelection.assets(*keys),
            partition_key=partition_key,
            resources=self.resources,
            instance=self.instance,
            tags=tags,
            run_config=run_config,
            raise_on_error=False,
        )

    def full_sync(self) -> None:
        assert self.run(SCHOOLS_KEY, STUDENTS_KEY, partition_key=str(YEAR)).success
        assert self.run(ABSENCE_CODES_KEY, CALENDAR_KEY, ENROLLMENT_KEY, HISTORY_KEY, partition_key=str(YEAR)).success
        result = self.run(ATTENDANCE_DAYS_KEY, tags={RANGE_START: FIRST.isoformat(), RANGE_END: THROUGH.isoformat()})
        assert result.success, failed_checks(result)
        self.attendance_result = result
        self.summary_result = self.run(STUDENT_ATTENDANCE_SUMMARY_KEY, partition_key=str(YEAR))
        assert self.summary_result.success


def failed_checks(result) -> dict:
    return {e.check_name: e.description for e in result.get_asset_check_evaluations() if not e.passed}


@pytest.fixture
def env(simulator, warehouse_url):
    # In-memory run storage: a year-long ranged run writes one event per daily partition.
    with dg.DagsterInstance.ephemeral() as instance:
        yield AeriesEnv(simulator, warehouse_url, instance)


def test_full_sync_publishes_students_attendance_and_summary(env):
    env.sim.reset_stats()
    env.full_sync()
    checks = {
        e.check_name: e for r in (env.attendance_result, env.summary_result) for e in r.get_asset_check_evaluations()
    }
    for name in ("attendance_key_unique", "attendance_students_known", "attendance_codes_known", "summary_rates_valid"):
        assert checks[name].passed, checks[name].description

    students = env.warehouse.read_table(STUDENTS)
    assert students.height == len(env.sim.district.students)
    attendance = env.warehouse.read_table(ATTENDANCE_DAYS)
    assert attendance.get_column("calendar_date").max() <= THROUGH
    assert set(attendance.get_column("absence_category").unique()) >= {"absent_excused", "absent_unexcused", "partial"}
    assert (attendance.get_column("source") == "aeries_pull").all()
    summary = env.warehouse.read_table(STUDENT_ATTENDANCE_SUMMARY)
    assert summary.get_column("is_chronically_absent").sum() > 0
    assert (summary.get_column("as_of_date") == THROUGH).all()

    # Academic risk covers the roster even without i-Ready results; the ranking covers the summary.
    ranked = env.run(ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, partition_key=str(YEAR))
    assert ranked.success
    check = {e.check_name: e for e in ranked.get_asset_check_evaluations()}["ranking_dense_and_monotone"]
    assert check.passed, check.description
    ranking = env.warehouse.read_table(STUDENT_INTERVENTION_RANKING)
    assert ranking.height == summary.height
    assert set(ranking.get_column("overall_risk").unique()) == {"UNKNOWN"}
    top = ranking.filter(pl.col("rank") == 1)
    worst = summary.group_by("school_code").agg(pl.col("attendance_tier").is_in(["severe_chronic"]).any())
    for school, has_severe in worst.iter_rows():
        if has_severe:
            assert top.filter(pl.col("school_code") == school).item(0, "attendance_tier") == "severe_chronic"


def test_full_year_pull_costs_one_request_per_school_and_month(env):
    assert env.run(SCHOOLS_KEY).success and env.run(ABSENCE_CODES_KEY, partition_key=str(YEAR)).success
    env.sim.reset_stats()
    result = env.run(ATTENDANCE_DAYS_KEY, tags={RANGE_START: FIRST.isoformat(), RANGE_END: THROUGH.isoformat()})
    assert result.success
    attendance_requests = [p for _, p, _ in env.sim.requests if "/attendance" in p.lower()]
    schools = env.warehouse.query("SELECT count(*) FROM aptool.schools WHERE is_real_school").item()
    assert len(attendance_requests) == schools * len(month_windows(FIRST, THROUGH))


def test_reconciliation_warns_while_aeries_totals_lag_and_passes_after_its_nightly_job(env):
    district = env.sim.district
    district.run_nightly_history_job(THROUGH)
    env.full_sync()
    consistent = {e.check_name: e for e in env.summary_result.get_asset_check_evaluations()}
    assert consistent["summary_reconciles_with_aeries"].passed, consistent["summary_reconciles_with_aeries"].description

    # A back-dated unexcused absence is entered; Aeries' totals only catch up at its nightly job.
    school = env.warehouse.query("SELECT min(school_code) FROM aptool.schools WHERE is_real_school").item()
    enrolled = env.warehouse.read_table(STUDENT_ATTENDANCE_SUMMARY).filter(pl.col("school_code") == school)
    student = enrolled.sort("days_absent").item(0, "student_id")
    day = dt.date(2026, 3, 11)
    unexcused = next(
        c for c, row in district.code_table(school).items() if row["TypeCode"] == 3 and not row["IsSuspension"]
    )
    district.set_attendance(school, student, day, all_day=unexcused)
    assert env.run(ATTENDANCE_DAYS_KEY, partition_key=day.isoformat()).success
    result = env.run(STUDENT_ATTENDANCE_SUMMARY_KEY, partition_key=str(YEAR))
    lagging = {e.check_name: e for e in result.get_asset_check_evaluations()}["summary_reconciles_with_aeries"]
    assert not lagging.passed and lagging.severity == dg.AssetCheckSeverity.WARN
    assert str(student) in lagging.description and "1 differ" in lagging.description

    district.run_nightly_history_job(THROUGH)
    assert env.run(HISTORY_KEY, partition_key=str(YEAR)).success
    result = env.run(STUDENT_ATTENDANCE_SUMMARY_KEY, partition_key=str(YEAR))
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["summary_reconciles_with_aeries"]
    assert check.passed, check.description


def test_repulling_one_day_picks_up_a_back_dated_correction_and_leaves_other_days(env):
    env.full_sync()
    before = env.warehouse.read_table(ATTENDANCE_DAYS)
    day = dt.date(2026, 3, 10)
    school = env.warehouse.query("SELECT min(school_code) FROM aptool.schools WHERE is_real_school").item()
    student = before.filter(pl.col("school_code") == school).get_column("student_id")[0]
    table = env.sim.district.code_table(school)
    unexcused = next(code for code, row in table.items() if row["TypeCode"] == 3 and not row["IsSuspension"])
    env.sim.district.set_attendance(school, student, day, all_day=unexcused)

    assert env.run(ATTENDANCE_DAYS_KEY, partition_key=day.isoformat()).success
    after = env.warehouse.read_table(ATTENDANCE_DAYS)
    row = after.filter(
        (pl.col("student_id") == student) & (pl.col("calendar_date") == day) & (pl.col("school_code") == school)
    )
    assert row.item(0, "absence_category") == "absent_unexcused"
    others = lambda df: df.filter(pl.col("calendar_date") != day).sort(ATTENDANCE_DAYS.key).drop("source_updated_at")  # noqa: E731 - a one-line view of the frame, used twice below
    assert others(after).equals(others(before))


def test_change_feed_sensor_repulls_only_changed_students(env):
    env.full_sync()
    sensor_resources = {"aeries": env.resources["aeries"], "platform": env.resources["platform"]}
    first = evaluate_sensor(aeries_student_changes_sensor, resources=sensor_resources, instance=env.instance)
    cursor = first.cursor

    record = env.sim.district.students[0]
    sid, sc = record["StudentID"], record["SchoolCode"]
    env.sim.district.withdraw(sid, sc, dt.date(2026, 3, 12))
    result = evaluate_sensor(
        aeries_student_changes_sensor, cursor=cursor, resources=sensor_resources, instance=env.instance
    )
    students_run = next(r for r in result.run_requests if r.job_name == "aeries_student_changes")
    changed = students_run.run_config["ops"]["aptool__students"]["config"]["changed"]
    assert [sc, sid] in changed
    assert any(r.job_name == "aeries_year_sync" for r in result.run_requests)  # enrollment area changed too

    untouched_before = env.warehouse.read_table(STUDENTS).filter(pl.col("student_id") != sid)
    run = env.run(STUDENTS_KEY, partition_key=str(YEAR), run_config=students_run.run_config)
    assert run.success
    students = env.warehouse.read_table(STUDENTS)
    row = students.filter((pl.col("student_id") == sid) & (pl.col("school_code") == sc))
    assert row.item(0, "school_leave_date") == dt.date(2026, 3, 12) and not row.item(0, "is_active")
    assert students.filter(pl.col("student_id") != sid).sort(STUDENTS.key).equals(untouched_before.sort(STUDENTS.key))


def test_district_codes_and_withdrawn_students_through_the_pipeline(env):
    """Contract v2 on the demo district: a suspension entered under a code only the district table (SchoolCode 0)
    defines is an out-of-school suspension, not an unknown code and never truancy; the student who left the
    district with many absences ranks after every student still at the school, with "left on <date>"."""
    env.full_sync()
    codes = env.warehouse.read_table(ABSENCE_CODES)
    assert set(codes.get_column("school_year")) == {YEAR}
    district_only = codes.filter(pl.col("school_code") == 0).join(
        codes.filter(pl.col("school_code") != 0).select("code"), on="code", how="anti"
    )
    assert district_only.get_column("code").to_list() == [DISTRICT_ONLY_LETTER]
    days = env.warehouse.read_table(ATTENDANCE_DAYS).filter(pl.col("all_day_code") == DISTRICT_ONLY_LETTER)
    assert days.height > 0 and set(days.get_column("absence_category")) == {"suspension_out_of_school"}
    checks = {e.check_name: e for e in env.attendance_result.get_asset_check_evaluations()}
    assert checks["attendance_codes_known"].passed, checks["attendance_codes_known"].description
    summary_checks = {e.check_name: e for e in env.summary_result.get_asset_check_evaluations()}
    assert summary_checks["attendance_has_enrollment"].passed, summary_checks["attendance_has_enrollment"].description
    suspended = days.get_column("student_id").unique().to_list()
    summary = env.warehouse.read_table(STUDENT_ATTENDANCE_SUMMARY).filter(pl.col("student_id").is_in(suspended))
    assert (summary.get_column("days_suspension_out_of_school") > 0).all()

    assert env.run(ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, partition_key=str(YEAR)).success
    ranking = env.warehouse.read_table(STUDENT_INTERVENTION_RANKING)
    leavers = [r for r in env.sim.district.enrollment if r["LeaveDate"] and r.get("ExitReasonCode") == "T200"]
    assert leavers, "the demo district must have a student who left the district"
    for stint in leavers:
        row = ranking.filter(
            (pl.col("student_id") == stint["StudentID"]) & (pl.col("school_code") == stint["SchoolCode"])
        ).row(0, named=True)
        assert row["is_enrolled"] is False
        assert row["reasons"].startswith(f"left on {stint['LeaveDate']:%Y-%m-%d}; ")
        assert row["attendance_tier"] in ("moderate_chronic", "severe_chronic")
        school = ranking.filter(pl.col("school_code") == stint["SchoolCode"])
        enrolled = school.filter(pl.col("is_enrolled"))
        assert enrolled.height and row["rank"] > enrolled.get_column("rank").max()
