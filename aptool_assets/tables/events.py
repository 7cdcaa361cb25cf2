"""Tables of the webhook path: the per-cell clock of applied attendance events, the corrections audit
trail and the record of attendance pulls that decides who wins. (The inbox and the dead letters
themselves live in the inbox store, ``storage/inbox``.)"""

from __future__ import annotations

import polars as pl

from aptool_assets.storage.warehouse import TableSpec
from aptool_assets.vocabulary import UTC_TS

ATTENDANCE_EVENT_CELLS = TableSpec(
    name="attendance_event_cells",
    columns={
        "student_id": pl.Int64,
        "school_code": pl.Int32,
        "calendar_date": pl.Date,
        "period": pl.Utf8,  # '' = the all-day code
        "code": pl.Utf8,  # '' = cleared
        "event_id": pl.Utf8,
        "event_type": pl.Utf8,
        "event_timestamp": UTC_TS,
        "applied_at": UTC_TS,
    },
    key=("student_id", "school_code", "calendar_date", "period"),
    description=(
        "The latest webhook event applied to each attendance cell (student, school, date, period; '' = "
        "all-day): the clock that makes a late, older event lose (contract §5) and that a pull consults "
        "to keep events newer than itself."
    ),
)

ATTENDANCE_CORRECTIONS = TableSpec(
    name="attendance_corrections",
    columns={
        "event_id": pl.Utf8,
        "student_id": pl.Int64,
        "school_code": pl.Int32,
        "calendar_date": pl.Date,
        "period": pl.Utf8,
        "original_code": pl.Utf8,
        "new_code": pl.Utf8,
        "code_before": pl.Utf8,  # what aptool.attendance_days held for that cell when the event arrived
        "reason": pl.Utf8,
        "corrected_by": pl.Utf8,
        "event_timestamp": UTC_TS,
        "outcome": pl.Utf8,  # applied | superseded
        "recorded_at": UTC_TS,
    },
    key=("event_id",),
    description="Audit trail of attendance.corrected events: who corrected what, why, and what happened to it.",
)

ATTENDANCE_PULLS = TableSpec(
    name="attendance_pulls",
    columns={
        "school_code": pl.Int32,
        "first_date": pl.Date,
        "last_date": pl.Date,
        "pulled_at": UTC_TS,
    },
    key=("school_code", "first_date", "last_date", "pulled_at"),
    description=(
        "Every Aeries attendance pull (school and date window, and when it started): a webhook event "
        "older than the last pull of its day is already reflected or overruled by that pull."
    ),
)
