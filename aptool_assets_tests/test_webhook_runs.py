"""The webhook path as Dagster runs it: ``webhook_inbox_sensor`` requests a run, the run of
``apply_webhook_events`` applies it. A bad event never holds back a valid one (in one batch or across
batches), and a failed run is retried with a new run key and backoff, so the inbox never stalls.

Each test uses the real sensor and job on a Dagster instance, the inbox store that goes with the
warehouse (SQLite beside DuckDB, PostgreSQL beside PostgreSQL) and bad events stored straight into it.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from aptool_assets.events import sensors
from aptool_assets.events.resources import WebhookInboxResource
from aptool_assets.events.sensors import INBOX_STATE_TAG, run_retry_delay
from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY
from aptool_assets.metrics.compute import attendance_summary
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import TableWrite
from aptool_assets.tables.metrics import STUDENT_ATTENDANCE_SUMMARY, STUDENT_INTERVENTION_RANKING
from aptool_assets_tests.conftest import evaluate_sensor, with_default_resources
from aptool_assets_tests.test_aeries_pipeline import YEAR, env, simulator  # noqa: F401 - the fixtures, used as parameters
from aptool_assets_tests.test_webhook_isolation import bad_payloads, store
from aptool_assets_tests.webhook_apply_helpers import (
    DAY,
    SCHOOL,
    apply_webhook_events_job,
    roster,
    webhook_inbox_sensor,
)

UTC = dt.UTC


def inbox_for(warehouse_url: str, tmp_path: Path) -> WebhookInboxResource:
    """The inbox a deployment with this warehouse uses: PostgreSQL in the same database, else SQLite."""
    return WebhookInboxResource(database_url=warehouse_url, inbox_path=str(tmp_path / "inbox.sqlite"))


def tick(instance: dg.DagsterInstance, inbox: WebhookInboxResource):
    return evaluate_sensor(webhook_inbox_sensor, instance=instance, resources={"inbox": inbox})


def run(instance, resources: dict, request: dg.RunRequest) -> dg.ExecuteInJobResult:
    """The run the daemon would launch for ``request`` (its tags), on the same instance."""
    assert isinstance(request, dg.RunRequest), getattr(request, "skip_message", request)
    return apply_webhook_events_job.execute_in_process(
        resources=resources, instance=instance, tags=request.tags, raise_on_error=False
    )


def tick_and_run(instance, resources: dict) -> dg.ExecuteInJobResult:
    """One sensor tick and the one run it requests: what "one sensor interval plus the apply time" buys."""
    result = run(instance, resources, tick(instance, resources["inbox"]))
    assert result.success
    return result


# ---------------------------------------------------------------------------------------------
# Bad events never hold back a valid one


def _published(wh, student: int, school: int) -> tuple[int, float, dt.datetime]:
    """The student's unexcused days in the published summary, and the ranking row's rate and time."""
    mine = (pl.col("student_id") == student) & (pl.col("school_code") == school)
    summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY).filter(mine).row(0, named=True)
    ranked = wh.read_table(STUDENT_INTERVENTION_RANKING).filter(mine).row(0, named=True)
    assert ranked["absence_rate"] == pytest.approx(summary["absence_rate"])  # ranked on the new summary
    return summary["days_unexcused"], ranked["absence_rate"], ranked["computed_at"]


def _present_student(env) -> tuple[int, int, list[dt.date], str]:
    """A student with few absences, the instructional days in March they were present, an unexcused code."""
    wh = env.warehouse
    school = wh.query("SELECT min(school_code) FROM aptool.schools WHERE is_real_school").item()
    summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY).filter(pl.col("school_code") == school)
    student = summary.sort("days_absent").item(0, "student_id")
    absent = wh.query(f"SELECT calendar_date FROM aptool.attendance_days WHERE student_id = {student}")
    instructional = wh.query(
        f"SELECT calendar_date FROM aptool.school_calendar WHERE school_code = {school} AND is_instructional "
        "AND calendar_date BETWEEN '2026-03-02' AND '2026-03-13' ORDER BY calendar_date"
    )
    days = [d for d in instructional.get_column("calendar_date") if d not in set(absent.get_column("calendar_date"))]
    codes = env.sim.district.code_table(school)
    unexcused = next(c for c, row in codes.items() if row["TypeCode"] == 3 and not row["IsSuspension"])
    return student, school, days, unexcused


@pytest.mark.slow
def test_bad_events_never_hold_back_a_valid_one_in_one_batch_or_across_batches(env, tmp_path):
    env.full_sync()
    assert env.run(ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, partition_key=str(YEAR)).success
    wh = env.warehouse
    student, school, days, code = _present_student(env)
    bad = bad_payloads(student, school, days[0])
    assert len(days) >= len(bad) + 1
    inbox = inbox_for(env.resources["warehouse"].database_url, tmp_path)
    resources = {**env.resources, "inbox": inbox}
    box = inbox.open()
    box.setup()

    def valid(event_id: str, day: dt.date) -> None:
        data = {"studentId": student, "schoolId": school, "date": day.isoformat(), "period": None}
        store(box, event_id, "attendance.updated", {**data, "attendanceCode": code}, dt.datetime.now(UTC))

    unexcused, _, ranked_at = _published(wh, student, school)
    # One batch: the six bad events and a valid one, due together.
    for name, (event_type, data, _) in bad.items():
        store(box, f"batch-{name}", event_type, data, dt.datetime.now(UTC))
    valid("valid-0", days[0])
    tick_and_run(env.instance, resources)
    for name, (_, _, named) in bad.items():
        row = box.event(f"batch-{name}")
        assert row["status"] == "dead_letter" and named in row["last_error"], (name, row["last_error"])
    assert box.event("valid-0")["status"] == "applied"
    now_unexcused, _, now_ranked_at = _published(wh, student, school)
    assert now_unexcused == unexcused + 1 and now_ranked_at > ranked_at

    # Across batches: each bad event alone in a run, then a valid event in the next.
    for i, (name, (event_type, data, _)) in enumerate(bad.items(), start=1):
        day = days[i]
        store(box, f"alone-{name}", event_type, {**data, "date": day.isoformat()}, dt.datetime.now(UTC))
        tick_and_run(env.instance, resources)
        assert box.event(f"alone-{name}")["status"] == "dead_letter"
        valid(f"valid-{i}", day)
        tick_and_run(env.instance, resources)
        assert box.event(f"valid-{i}")["status"] == "applied"
        assert _published(wh, student, school)[0] == unexcused + 1 + i
    assert len(box.dead_letters()) == 2 * len(bad)
    assert "no webhook events due" in tick(env.instance, inbox).skip_message
    box.close()


# ---------------------------------------------------------------------------------------------
# Failed runs are retried: a new run key, then backoff


def _unreachable(warehouse_url: str, tmp_path: Path) -> WarehouseResource:
    """The same warehouse, unreachable: a server that refuses connections, or a DuckDB file whose
    directory cannot be created."""
    if warehouse_url.startswith("postgresql"):
        return WarehouseResource(database_url="postgresql://postgres@127.0.0.1:9/aptool")
    (tmp_path / "not-a-directory").write_text("")
    return WarehouseResource(database_url=f"duckdb:///{tmp_path / 'not-a-directory' / 'warehouse.duckdb'}")


def test_a_failed_run_is_retried_with_a_new_run_key_then_with_backoff(warehouse, warehouse_url, tmp_path, monkeypatch):
    roster(warehouse)
    inbox = inbox_for(warehouse_url, tmp_path)
    good = with_default_resources(warehouse=WarehouseResource(database_url=warehouse_url), inbox=inbox)
    down = {**good, "warehouse": _unreachable(warehouse_url, tmp_path)}
    box = inbox.open()
    box.setup()
    data = {"studentId": 1001, "schoolId": SCHOOL, "date": DAY.isoformat(), "period": None, "attendanceCode": "U"}
    with dg.instance_for_test() as instance:
        store(box, "a", "attendance.updated", data, dt.datetime.now(UTC))
        first = tick(instance, inbox)
        assert not run(instance, down, first).success  # the warehouse is unreachable for one run
        assert box.event("a")["status"] == "pending" and box.dead_letters() == []  # nothing lost or given up
        assert tick(instance, inbox).run_key == first.run_key + "-retry1"  # before: the same key, skipped forever
        assert run(instance, good, tick(instance, inbox)).success
        assert box.event("a")["status"] == "applied"

        # Failing on: retried at the next tick once, then only after the backoff.
        store(box, "b", "attendance.updated", {**data, "studentId": 1002}, dt.datetime.now(UTC))
        third = tick(instance, inbox)
        assert third.tags[INBOX_STATE_TAG] in third.run_key
        assert not run(instance, down, third).success
        fourth = tick(instance, inbox)
        assert fourth.run_key == third.run_key + "-retry1"
        assert not run(instance, down, fourth).success
        waiting = tick(instance, inbox)
        assert isinstance(waiting, dg.SkipReason)
        left = int(re.search(r"the last 2 apply run\(s\) failed; retrying in (\d+) s", waiting.skip_message).group(1))
        assert 0 < left <= 20
        later = time.time() + 21
        monkeypatch.setattr(sensors, "_clock", lambda: later)
        fifth = tick(instance, inbox)
        assert fifth.run_key == third.run_key + "-retry2"
        assert run(instance, good, fifth).success
        assert box.event("b")["status"] == "applied" and box.dead_letters() == []
    box.close()


def test_a_refresh_the_database_refuses_settles_the_events_and_fails_the_run(warehouse, warehouse_url, tmp_path):
    """The events are in the tables but their students' summary cannot be written (a constraint the district
    added): a retry cannot help, so the events are settled (later ones are not held back) and the run fails
    (the failure alert goes out; the next full summary catches up)."""
    roster(warehouse)
    warehouse.execute("CREATE SCHEMA IF NOT EXISTS aptool")
    create = warehouse.create_table_sql(STUDENT_ATTENDANCE_SUMMARY)
    warehouse.execute(f"{create[:-1]}, CHECK (student_id <> 1001))")
    seeded = attendance_summary(warehouse, 2025, DAY, pl.DataFrame({"student_id": [1003], "school_code": [SCHOOL]}))
    warehouse.write(TableWrite(STUDENT_ATTENDANCE_SUMMARY, seeded, replace_where=None))  # the year has a summary
    inbox = inbox_for(warehouse_url, tmp_path)
    resources = with_default_resources(warehouse=WarehouseResource(database_url=warehouse_url), inbox=inbox)
    box = inbox.open()
    box.setup()
    data = {"schoolId": SCHOOL, "date": DAY.isoformat(), "period": None, "attendanceCode": "U"}
    for student in (1001, 1002):
        store(box, f"mark-{student}", "attendance.updated", {**data, "studentId": student}, dt.datetime.now(UTC))
    with dg.instance_for_test() as instance:
        result = run(instance, resources, tick(instance, inbox))
        assert not result.success
        assert {box.event(f"mark-{s}")["status"] for s in (1001, 1002)} == {"applied"}
        assert "no webhook events due" in tick(instance, inbox).skip_message
    box.close()


def test_run_retries_back_off_from_seconds_to_five_minutes():
    assert [run_retry_delay(n).total_seconds() for n in range(9)] == [0, 0, 20, 40, 80, 160, 300, 300, 300]
