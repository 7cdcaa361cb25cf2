"""Applying webhook events (contract §5) on a small hand-built roster in the warehouse (both backends):
who wins per cell, out-of-order delivery, the audit trail of corrections, unknown students and invalid
data, enrolments and withdrawals, and a later pull keeping only the newer events."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl

from aptool_assets.events.apply import WITHDRAWN_STATUS, apply_events
from aptool_assets.rules.attendance_cells import overlay_newer_cells
from aptool_assets.storage.warehouse import TableWrite
from aptool_assets.tables.aeries import ATTENDANCE_DAYS, ENROLLMENT, STUDENTS
from aptool_assets.tables.events import ATTENDANCE_CORRECTIONS, ATTENDANCE_EVENT_CELLS, ATTENDANCE_PULLS
from aptool_assets_tests.webhook_apply_helpers import (  # noqa: F401 - district is a fixture
    DAY,
    OTHER_SCHOOL,
    SCHOOL,
    T0,
    _seq,
    day_row,
    district,
    event,
    mark,
    roster,
)


def test_an_all_day_event_creates_the_day_categorised_by_the_school_table(district):
    result = apply_events(district, [mark(code="U")])
    assert result.applied == [f"evt-{next(_seq) - 1}"] or len(result.applied) == 1
    row = day_row(district)
    assert row["all_day_code"] == "U" and row["absence_category"] == "absent_unexcused"
    assert row["is_full_day_absence"] is True and row["source"] == "webhook" and row["period_codes"] is None
    assert row["source_updated_at"] == T0
    assert result.touched.rows() == [(2025, 1001, SCHOOL)]


def test_period_events_merge_into_the_day_and_clearing_every_code_removes_it(district):
    apply_events(district, [mark(period="2", code="T"), mark(period="3", code="C", ts=T0 + dt.timedelta(seconds=1))])
    row = day_row(district)
    assert row["all_day_code"] is None and row["absence_category"] == "partial"
    assert row["period_codes"].replace(" ", "") == '{"2":"T","3":"C"}'
    apply_events(district, [mark(period="2", code="", ts=T0 + dt.timedelta(seconds=2))])
    assert day_row(district)["period_codes"].replace(" ", "") == '{"3":"C"}'
    apply_events(district, [mark(period="3", code="", ts=T0 + dt.timedelta(seconds=3))])
    assert day_row(district) is None  # negative attendance: a day without codes has no row


def test_latest_timestamp_wins_per_cell_and_a_late_older_event_is_superseded(district):
    newer = mark(code="A", ts=T0 + dt.timedelta(minutes=1), event_id="newer")
    older = mark(code="U", ts=T0, event_id="older")
    other_period = mark(period="4", code="T", ts=T0 - dt.timedelta(minutes=5), event_id="other-period")
    first = apply_events(district, [newer])
    late = apply_events(district, [older, other_period])
    assert first.applied == ["newer"]
    assert late.superseded == ["older"] and late.applied == ["other-period"]  # another cell: no conflict
    row = day_row(district)
    assert row["all_day_code"] == "A" and row["period_codes"].replace(" ", "") == '{"4":"T"}'
    clock = district.read_table(ATTENDANCE_EVENT_CELLS).sort("period")
    assert clock.get_column("event_id").to_list() == ["newer", "other-period"]


def test_out_of_order_delivery_converges_to_the_same_table(warehouse_url, tmp_path):
    """The same 40 events in four different orders and batchings give identical tables."""
    from aptool_assets.storage.warehouse import open_warehouse

    rng = random.Random(7)
    events = [
        mark(
            student=rng.choice([1001, 1002]),
            day=DAY - dt.timedelta(days=rng.randint(0, 2)),
            period=rng.choice([None, "1", "2"]),
            code=rng.choice(["A", "U", "T", ""]),
            ts=T0 + dt.timedelta(seconds=rng.randint(0, 20)),
            event_id=f"e{i:02d}",
        )
        for i in range(40)
    ]
    tables = []
    for trial in range(4):
        url = warehouse_url
        if url.startswith("duckdb"):
            url = f"duckdb:///{tmp_path / f'trial{trial}.duckdb'}"
        else:
            from aptool_assets_tests.conftest import schema_reset

            schema_reset(url)
        wh = open_warehouse(url)
        roster(wh)
        shuffled = events[:]
        rng.shuffle(shuffled)
        size = [2, 5, 13, 40][trial]
        for i in range(0, len(shuffled), size):
            apply_events(wh, shuffled[i : i + size])
        tables.append(wh.read_table(ATTENDANCE_DAYS).drop("source_updated_at").sort(ATTENDANCE_DAYS.key))
    assert tables[0].height > 0
    for other in tables[1:]:
        assert other.equals(tables[0])


def test_reapplying_a_batch_changes_nothing(district):
    batch = [mark(code="U"), mark(period="1", code="T"), mark(student=1002, code="A")]
    apply_events(district, batch)
    before = district.read_table(ATTENDANCE_DAYS).sort(ATTENDANCE_DAYS.key)
    again = apply_events(district, batch)
    assert sorted(again.applied) == sorted(e.event_id for e in batch)  # recognised as already applied
    assert district.read_table(ATTENDANCE_DAYS).sort(ATTENDANCE_DAYS.key).equals(before)


def test_an_event_older_than_the_last_pull_of_its_day_is_superseded(district):
    pulls = pl.DataFrame(
        {"school_code": [SCHOOL], "first_date": [DAY], "last_date": [DAY], "pulled_at": [T0 + dt.timedelta(minutes=1)]},
        schema=ATTENDANCE_PULLS.polars_schema,
    )
    district.write(TableWrite(ATTENDANCE_PULLS, pulls, replace_where=None))
    result = apply_events(district, [mark(ts=T0), mark(ts=T0 + dt.timedelta(minutes=2), period="1", code="T")])
    assert len(result.superseded) == 1 and len(result.applied) == 1
    assert day_row(district)["period_codes"].replace(" ", "") == '{"1":"T"}'


def test_corrections_keep_reason_author_and_what_was_there(district):
    apply_events(district, [mark(code="U", ts=T0)])
    fix = event(
        "attendance.corrected",
        T0 + dt.timedelta(hours=1),
        "fix-1",
        studentId=1001,
        schoolId=SCHOOL,
        date=DAY.isoformat(),
        period=None,
        originalCode="U",
        newCode="A",
        reason="note from home",
        correctedBy="staff-17",
    )
    stale = event(
        "attendance.corrected",
        T0 - dt.timedelta(hours=1),
        "fix-0",
        studentId=1001,
        schoolId=SCHOOL,
        date=DAY.isoformat(),
        period=None,
        originalCode="",
        newCode="T",
        reason="late entry",
        correctedBy="staff-3",
    )
    result = apply_events(district, [fix, stale])
    assert result.applied == ["fix-1"] and result.superseded == ["fix-0"]
    assert day_row(district)["absence_category"] == "absent_excused"
    audit = {r["event_id"]: r for r in district.read_table(ATTENDANCE_CORRECTIONS).iter_rows(named=True)}
    assert audit["fix-1"]["reason"] == "note from home" and audit["fix-1"]["corrected_by"] == "staff-17"
    assert audit["fix-1"]["code_before"] == "U" and audit["fix-1"]["outcome"] == "applied"
    assert audit["fix-0"]["outcome"] == "superseded"


def test_unknown_students_and_invalid_data_are_reported_not_applied(district):
    unknown = mark(student=999999, event_id="who")
    wrong_school = mark(student=1001, school=OTHER_SCHOOL, event_id="where")
    invalid = event(
        "attendance.updated",
        T0,
        "bad",
        studentId=1001,
        schoolId=SCHOOL,
        date="10/03/2026",
        period=None,
        attendanceCode="U",
    )
    unsupported = event("attendance.deleted", T0, "odd", studentId=1001)
    bad_grade = event(
        "student.enrolled", T0, "grade", studentId=1001, schoolId=SCHOOL, grade="fifth", enterDate="2026-03-02"
    )
    result = apply_events(district, [unknown, wrong_school, invalid, unsupported, bad_grade])
    assert set(result.unknown_student) == {"who", "where"}
    assert "999999" in result.unknown_student["who"]
    assert result.invalid == {
        "bad": "data.date must be a date as YYYY-MM-DD",
        "odd": "unsupported event type",
        "grade": "data.grade must be an integer grade from -2 to 18",
    }
    assert district.read_table(ATTENDANCE_DAYS).height == 0


def test_enrolment_at_a_new_school_and_withdrawal(district):
    enrol = event(
        "student.enrolled", T0, "enrol", studentId=1002, schoolId=OTHER_SCHOOL, grade=6, enterDate="2026-03-02"
    )
    leave = event(
        "student.withdrawn", T0, "leave", studentId=1003, schoolId=SCHOOL, leaveDate="2026-03-06", exitReason="E140"
    )
    stale = event(
        "student.enrolled",
        T0 - dt.timedelta(days=3),
        "stale",
        studentId=1003,
        schoolId=SCHOOL,
        grade=5,
        enterDate="2025-08-14",
    )  # older than the roster row (pulled a day before T0)
    result = apply_events(district, [enrol, leave, stale])
    assert sorted(result.applied) == ["enrol", "leave"] and result.superseded == ["stale"]
    students = {(r["student_id"], r["school_code"]): r for r in district.read_table(STUDENTS).iter_rows(named=True)}
    moved = students[(1002, OTHER_SCHOOL)]
    assert moved["student_number"] == 2 and moved["grade"] == 6 and moved["is_active"]  # identity from the roster
    assert moved["school_enter_date"] == dt.date(2026, 3, 2) and moved["source_updated_at"] == T0
    gone = students[(1003, SCHOOL)]
    assert gone["school_leave_date"] == dt.date(2026, 3, 6) and not gone["is_active"]
    assert gone["inactive_status_code"] == WITHDRAWN_STATUS
    stints = district.read_table(ENROLLMENT).filter(pl.col("student_id").is_in([1002, 1003]))
    assert stints.filter(pl.col("school_code") == OTHER_SCHOOL).item(0, "enter_date") == dt.date(2026, 3, 2)
    closed = stints.filter(pl.col("student_id") == 1003)
    assert closed.item(0, "leave_date") == dt.date(2026, 3, 6) and closed.item(0, "exit_reason_code") == "E140"
    # An attendance event at the new school is known in the same batch as the enrolment.
    both = apply_events(
        district,
        [  # grade 0 is kindergarten, a valid grade
            event(
                "student.enrolled",
                T0,
                "enrol-2",
                studentId=1001,
                schoolId=OTHER_SCHOOL,
                grade=0,
                enterDate="2026-03-09",
            ),
            mark(student=1001, school=OTHER_SCHOOL, code="X", event_id="mark-2"),
        ],
    )
    assert sorted(both.applied) == ["enrol-2", "mark-2"]


def test_a_pull_keeps_only_the_events_newer_than_itself():
    codes = pl.DataFrame(
        [
            {
                "school_code": SCHOOL,
                "code": "A",
                "type_code": 2,
                "counts_for_ada": False,
                "is_suspension": False,
                "is_partial_day_truant": False,
                "is_temporarily_not_enrolled": False,
            }
        ]
    )
    pulled = pl.DataFrame(
        {
            "student_id": [1001],
            "school_code": [SCHOOL],
            "calendar_date": [DAY],
            "all_day_code": [None],
            "absence_category": ["partial"],
            "period_codes": ['{"1":"A"}'],
            "is_full_day_absence": [False],
            "source": ["aeries_pull"],
            "source_updated_at": [T0],
        },
        schema=ATTENDANCE_DAYS.polars_schema,
    )
    newer = pl.DataFrame(
        {
            "student_id": [1001, 1002],
            "school_code": [SCHOOL, SCHOOL],
            "calendar_date": [DAY, DAY],
            "period": ["", ""],
            "code": ["A", "A"],
            "event_id": ["n1", "n2"],
            "event_type": ["attendance.updated"] * 2,
            "event_timestamp": [T0 + dt.timedelta(seconds=5)] * 2,
            "applied_at": [T0] * 2,
        },
        schema=ATTENDANCE_EVENT_CELLS.polars_schema,
    )
    out = overlay_newer_cells(pulled, newer, codes).sort("student_id")
    assert out.get_column("all_day_code").to_list() == ["A", "A"]
    assert out.get_column("absence_category").to_list() == ["absent_excused", "absent_excused"]
    assert out.item(0, "period_codes").replace(" ", "") == '{"1":"A"}' and out.item(1, "period_codes") is None
    assert out.get_column("source").to_list() == ["webhook", "webhook"]
