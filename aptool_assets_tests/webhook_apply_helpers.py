"""Helpers for the webhook-apply tests: a small hand-built roster (three students, two schools and their
absence codes), inbox events and attendance marks to apply, the day row they produce, the apply job and
the inbox sensor of the definitions, and the ``district`` fixture (the roster in the test's warehouse)."""

from __future__ import annotations

import datetime as dt
import itertools

import polars as pl
import pytest

from aptool_assets.definitions import defs
from aptool_assets.storage.inbox import InboxEvent
from aptool_assets.storage.warehouse import TableWrite
from aptool_assets.tables.aeries import ABSENCE_CODES, ATTENDANCE_DAYS, ENROLLMENT, STUDENTS
from aptool_assets.vocabulary import school_year_of

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
DAY = dt.date(2026, 3, 10)
SCHOOL, OTHER_SCHOOL = 10, 20
CODES = [  # school, code, type_code, is_suspension, counts_for_ada, partial_truant, not_enrolled
    (SCHOOL, "A", 2, False, False, False, False),  # excused
    (SCHOOL, "U", 3, False, False, False, False),  # unexcused
    (SCHOOL, "T", 5, False, True, False, False),  # tardy
    (SCHOOL, "C", 8, False, True, True, False),  # truant tardy (period)
    (OTHER_SCHOOL, "X", 2, False, False, False, False),
]


def roster(wh) -> None:
    codes = pl.DataFrame(
        [
            {
                "school_year": school_year_of(T0.date()),
                "school_code": s,
                "code": c,
                "title": f"code {c}",
                "type_code": t,
                "is_suspension": susp,
                "counts_for_ada": ada,
                "is_partial_day_truant": pt,
                "is_temporarily_not_enrolled": ne,
                "source_updated_at": T0 - dt.timedelta(days=30),
            }
            for s, c, t, susp, ada, pt, ne in CODES
        ]
    )
    students = pl.DataFrame(
        [
            {
                "student_id": sid,
                "school_code": SCHOOL,
                "student_number": sid - 1000,
                "state_student_id": f"S{sid}",
                "first_name": "Fn",
                "last_name": "Ln",
                "grade": 5,
                "school_enter_date": dt.date(2025, 8, 14),
                "school_leave_date": None,
                "inactive_status_code": "",
                "is_active": True,
                "source_updated_at": T0 - dt.timedelta(days=1),
            }
            for sid in (1001, 1002, 1003)
        ]
    )
    enrollment = students.select(
        "student_id",
        "school_code",
        pl.lit(2025).alias("academic_year"),
        "grade",
        pl.col("school_enter_date").alias("enter_date"),
        pl.lit(None, pl.Date).alias("leave_date"),
        pl.lit("").alias("exit_reason_code"),
        "source_updated_at",
    )
    wh.write(TableWrite(ABSENCE_CODES, codes), TableWrite(STUDENTS, students), TableWrite(ENROLLMENT, enrollment))


apply_webhook_events_job = defs.get_job_def("apply_webhook_events")
webhook_inbox_sensor = next(s for s in defs.sensors if s.name == "webhook_inbox_sensor")
_seq = itertools.count(1)


def event(event_type: str, ts: dt.datetime, event_id: str | None = None, **data) -> InboxEvent:
    seq = next(_seq)
    return InboxEvent(
        seq=seq,
        event_id=event_id or f"evt-{seq}",
        event_type=event_type,
        event_timestamp=ts,
        received_at=ts,
        payload={"eventType": event_type, "data": data},
        status="pending",
        attempts=0,
        next_attempt_at=None,
        last_error=None,
    )


def mark(student=1001, day=DAY, period=None, code="U", ts=T0, event_id=None, school=SCHOOL) -> InboxEvent:
    return event(
        "attendance.updated",
        ts,
        event_id,
        studentId=student,
        schoolId=school,
        date=day.isoformat(),
        period=period,
        attendanceCode=code,
    )


def day_row(wh, student=1001, day=DAY) -> dict | None:
    rows = wh.read_table(ATTENDANCE_DAYS).filter((pl.col("student_id") == student) & (pl.col("calendar_date") == day))
    return rows.row(0, named=True) if rows.height else None


@pytest.fixture
def district(warehouse):
    roster(warehouse)
    return warehouse
