"""A full roster pull is the truth as of when it started (README "Who wins"): it replaces
``aptool.students`` wholesale but lays back the records that webhook enrol/withdraw events changed
after it started, and it overrules an event older than itself. Against the loopback Aeries simulator,
with events applied from another thread while the pull is waiting on Aeries, on both warehouses."""

from __future__ import annotations

import datetime as dt
import threading
import time

import polars as pl

from aptool_assets.events.apply import WITHDRAWN_STATUS, apply_events
from aptool_assets.sources.aeries.assets import SCHOOLS_KEY, STUDENTS_KEY
from aptool_assets.storage.sync_state import SYNC_STATE
from aptool_assets.tables.aeries import STUDENTS
from aptool_assets_tests.test_aeries_pipeline import YEAR, env, simulator  # noqa: F401 - the fixtures, used as parameters
from aptool_assets_tests.webhook_apply_helpers import event

UTC = dt.UTC
PULL_LATENCY_S = 4.0  # each roster request waits this long in the simulator: the window events land in


def _records(wh) -> dict[tuple[int, int], dict]:
    return {(r["student_id"], r["school_code"]): r for r in wh.read_table(STUDENTS).iter_rows(named=True)}


def _enrol(student: dict, school: int, ts: dt.datetime, event_id: str):
    return event(
        "student.enrolled",
        ts,
        event_id,
        studentId=student["student_id"],
        schoolId=school,
        grade=7,
        enterDate="2026-03-09",
    )


def _withdraw(student: dict, ts: dt.datetime, event_id: str):
    return event(
        "student.withdrawn",
        ts,
        event_id,
        studentId=student["student_id"],
        schoolId=student["school_code"],
        leaveDate="2026-03-06",
        exitReason="E140",
    )


def test_a_full_roster_pull_keeps_newer_events_and_overrules_older_ones(env):
    assert env.run(SCHOOLS_KEY, STUDENTS_KEY, partition_key=str(YEAR)).success
    wh = env.warehouse
    schools = wh.query("SELECT school_code FROM aptool.schools WHERE is_real_school ORDER BY 1").to_series()
    active = wh.read_table(STUDENTS).filter(pl.col("is_active") & (pl.col("school_code") == schools[0]))
    mover, leaver, old_leaver, late_leaver = active.sort("student_id").head(4).iter_rows(named=True)

    # Before the pull starts: an event the pull will overrule (Aeries still has the student active).
    older = apply_events(wh, [_withdraw(old_leaver, dt.datetime.now(UTC), "before-pull")])
    assert older.applied == ["before-pull"]
    time.sleep(0.01)  # the pull starts strictly after that event

    env.sim.faults.paths_matching, env.sim.faults.latency_s = r"/students$", PULL_LATENCY_S
    env.sim.reset_stats()
    pull_done = threading.Event()
    during: dict = {}

    def apply_while_pulling() -> None:
        while env.sim.max_in_flight == 0:  # the pull has started and is waiting on Aeries
            time.sleep(0.01)
        during["ts"] = dt.datetime.now(UTC)
        during["result"] = apply_events(
            wh, [_enrol(mover, schools[1], during["ts"], "moved"), _withdraw(leaver, during["ts"], "left")]
        )
        during["before_pull_ended"] = not pull_done.is_set()

    worker = threading.Thread(target=apply_while_pulling)
    worker.start()
    try:
        result = env.run(STUDENTS_KEY, partition_key=str(YEAR))
    finally:
        pull_done.set()
        worker.join(timeout=60)
    env.sim.faults.latency_s = 0.0
    assert result.success
    assert sorted(during["result"].applied) == ["left", "moved"] and during["before_pull_ended"]

    # Applied after the pull, but newer than its start: the pull could not have seen it, so it wins.
    late = apply_events(wh, [_withdraw(late_leaver, during["ts"], "after-pull")])
    assert late.applied == ["after-pull"]

    records = _records(wh)
    moved = records[(mover["student_id"], schools[1])]
    assert moved["is_active"] and moved["grade"] == 7 and moved["school_enter_date"] == dt.date(2026, 3, 9)
    for student in (leaver, late_leaver):
        gone = records[(student["student_id"], student["school_code"])]
        assert not gone["is_active"] and gone["inactive_status_code"] == WITHDRAWN_STATUS
        assert gone["school_leave_date"] == dt.date(2026, 3, 6)
    overruled = records[(old_leaver["student_id"], old_leaver["school_code"])]
    assert overruled["is_active"] and overruled["inactive_status_code"] == old_leaver["inactive_status_code"]
    # Every other record is Aeries' own, as pulled.
    pulled = len(env.sim.district.students)
    assert len(records) == pulled + 1  # the enrolment at a second school is the one record Aeries lacks
    detail = wh.read_table(SYNC_STATE).filter(pl.col("entity") == "students").item(0, "detail")
    assert detail == f"{pulled + 1} records, 2 newer kept"
