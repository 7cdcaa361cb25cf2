"""Applying webhook events (contract §5) on the simulated district after a full pull: an incremental
update equals a full recompute, and a later pull confirms or overrules what the events wrote."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from aptool_assets.events.resources import WebhookInboxResource
from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, STUDENT_ATTENDANCE_SUMMARY_KEY
from aptool_assets.sources.aeries.assets import ATTENDANCE_DAYS_KEY
from aptool_assets.storage.sync_state import SYNC_STATE
from aptool_assets.tables.aeries import ATTENDANCE_DAYS
from aptool_assets.tables.metrics import STUDENT_ATTENDANCE_SUMMARY, STUDENT_INTERVENTION_RANKING
from aptool_assets_tests.test_aeries_pipeline import YEAR, env, simulator  # noqa: F401 - the fixtures, used as parameters
from aptool_assets_tests.webhook_apply_helpers import UTC, apply_webhook_events_job

# ---------------------------------------------------------------------------------------------
# On the simulated district: incremental equals full recompute; later pulls confirm or overrule


def _post(box, ev_id: str, event_type: str, ts: dt.datetime, **data) -> None:
    body = {"eventId": ev_id, "eventType": event_type, "timestamp": ts.isoformat(), "data": data}
    assert box.store(ev_id, event_type, ts, body, b"{}") == "accepted"


def _apply(env, inbox_resource) -> dg.ExecuteInJobResult:
    result = apply_webhook_events_job.execute_in_process(
        resources={**env.resources, "inbox": inbox_resource}, instance=env.instance, raise_on_error=False
    )
    assert result.success
    return result


@pytest.mark.slow
def test_events_update_only_their_students_and_schools_and_later_pulls_decide(env, tmp_path):
    env.full_sync()
    assert env.run(ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, partition_key=str(YEAR)).success
    wh = env.warehouse
    ranking_before = wh.read_table(STUDENT_INTERVENTION_RANKING)
    schools = sorted(ranking_before.get_column("school_code").unique().to_list())
    school, untouched_school = schools[0], schools[-1]
    attendance = wh.read_table(ATTENDANCE_DAYS)
    days = (
        wh.query(
            f"SELECT calendar_date FROM aptool.school_calendar WHERE school_code = {school} AND is_instructional "
            "AND calendar_date BETWEEN '2026-03-02' AND '2026-03-12' ORDER BY calendar_date"
        )
        .get_column("calendar_date")
        .to_list()
    )
    summary_before = wh.read_table(STUDENT_ATTENDANCE_SUMMARY).filter(pl.col("school_code") == school)
    student = summary_before.sort("days_absent").item(0, "student_id")  # a student with few absences
    present = [
        d
        for d in days
        if attendance.filter((pl.col("student_id") == student) & (pl.col("calendar_date") == d)).height == 0
    ]
    assert len(present) >= 3
    codes = env.sim.district.code_table(school)
    unexcused = next(c for c, row in codes.items() if row["TypeCode"] == 3 and not row["IsSuspension"])

    inbox = WebhookInboxResource(inbox_path=str(tmp_path / "inbox.sqlite"))
    box = inbox.open()
    box.setup()
    t = dt.datetime.now(UTC)  # after the full pull: newer than what it saw
    for i, day in enumerate(present[:3]):
        _post(
            box,
            f"abs-{i}",
            "attendance.updated",
            t,
            studentId=student,
            schoolId=school,
            date=day.isoformat(),
            period=None,
            attendanceCode=unexcused,
        )
    result = _apply(env, inbox)

    summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY)
    mine = summary.filter((pl.col("student_id") == student) & (pl.col("school_code") == school))
    was = summary_before.filter(pl.col("student_id") == student)
    assert mine.item(0, "days_unexcused") == was.item(0, "days_unexcused") + 3
    ranking = wh.read_table(STUDENT_INTERVENTION_RANKING)
    # Only the touched school was re-ranked; every other school's rows are untouched.
    kept = lambda df: df.filter(pl.col("school_code") != school).sort(STUDENT_INTERVENTION_RANKING.key)  # noqa: E731 - a one-line view of the frame, used twice below
    assert kept(ranking).equals(kept(ranking_before))
    assert (
        ranking.filter(pl.col("school_code") == school).get_column("computed_at").min()
        > ranking_before.get_column("computed_at").max()
    )
    assert untouched_school != school
    # What the run reports: the touched day partitions and the refreshed metric years.
    reported = {
        (m.asset_key, m.partition) for m in (e.materialization for e in result.get_asset_materialization_events())
    }
    assert {(ATTENDANCE_DAYS_KEY, d.isoformat()) for d in present[:3]} <= reported
    assert {(STUDENT_ATTENDANCE_SUMMARY_KEY, str(YEAR)), (INTERVENTION_RANKING_KEY, str(YEAR))} <= reported
    assert {box.event(f"abs-{i}")["status"] for i in range(3)} == {"applied"}

    # The incremental rows are exactly what a full recompute gives.
    incremental_summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY).sort(STUDENT_ATTENDANCE_SUMMARY.key)
    incremental_ranking = (
        wh.read_table(STUDENT_INTERVENTION_RANKING).drop("computed_at").sort(STUDENT_INTERVENTION_RANKING.key)
    )
    assert env.run(STUDENT_ATTENDANCE_SUMMARY_KEY, INTERVENTION_RANKING_KEY, partition_key=str(YEAR)).success
    assert wh.read_table(STUDENT_ATTENDANCE_SUMMARY).sort(STUDENT_ATTENDANCE_SUMMARY.key).equals(incremental_summary)
    assert (
        wh.read_table(STUDENT_INTERVENTION_RANKING)
        .drop("computed_at")
        .sort(STUDENT_INTERVENTION_RANKING.key)
        .equals(incremental_ranking)
    )

    # A later pull is the truth for the days it covers: Aeries never had the first two absences, so
    # the pull overrules them; an event newer than the pull's start is laid back over it.
    _post(
        box,
        "future",
        "attendance.updated",
        dt.datetime.now(UTC) + dt.timedelta(seconds=30),
        studentId=student,
        schoolId=school,
        date=present[2].isoformat(),
        period="3",
        attendanceCode=unexcused,
    )
    _apply(env, inbox)
    for day in present[:3]:
        assert env.run(ATTENDANCE_DAYS_KEY, partition_key=day.isoformat()).success
    after = wh.read_table(ATTENDANCE_DAYS).filter(pl.col("student_id") == student)
    assert after.filter(pl.col("calendar_date").is_in(present[:2])).height == 0
    kept_row = after.filter(pl.col("calendar_date") == present[2]).row(0, named=True)
    assert kept_row["all_day_code"] is None and kept_row["source"] == "webhook"
    assert kept_row["period_codes"].replace(" ", "") == f'{{"3":"{unexcused}"}}'
    # And an event older than that pull, arriving late, is superseded.
    _post(
        box,
        "late",
        "attendance.updated",
        t,
        studentId=student,
        schoolId=school,
        date=present[0].isoformat(),
        period=None,
        attendanceCode=unexcused,
    )
    _apply(env, inbox)
    assert box.event("late")["status"] == "superseded"
    box.close()
    # aptool.sync_state says how fresh each entity is, written with the data it describes.
    state = {(r["source"], r["entity"]): r for r in wh.read_table(SYNC_STATE).iter_rows(named=True)}
    assert {("aeries", "students"), ("aeries", "attendance_days"), ("webhooks", "events")} <= set(state)
    assert state[("aeries", "attendance_days")]["cursor"] == f"{present[2]}..{present[2]}"
    assert state[("webhooks", "events")]["last_sync_at"] > state[("aeries", "attendance_days")]["last_sync_at"]
