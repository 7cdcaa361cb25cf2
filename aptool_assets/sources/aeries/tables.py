"""Warehouse tables of the Aeries path: what the AP Tool reads (contract §3) and the pulled reference data."""

from __future__ import annotations

import polars as pl

from aptool_assets.sources.aeries import frames
from aptool_assets.storage.warehouse import UTC_TS, TableSpec

PULLED = {"source_updated_at": UTC_TS}  # when the platform pulled the row from Aeries

SCHOOLS = TableSpec(
    name="schools",
    columns={**frames.SCHOOLS_SCHEMA, "is_real_school": pl.Boolean, **PULLED},
    key=("school_code",),
    description="Schools as Aeries lists them, pseudo-schools (0 district, 99, 900-902, 999) flagged.",
)

ABSENCE_CODES = TableSpec(
    name="absence_codes",
    columns={**frames.ABSENCE_CODES_SCHEMA, **PULLED},
    key=("school_code", "code"),
    description="Each school's absence-code table: the only source of what a code means.",
)

SCHOOL_CALENDAR = TableSpec(
    name="school_calendar",
    columns={"school_year": pl.Int32, **frames.CALENDAR_SCHEMA, "is_instructional": pl.Boolean},
    key=("school_code", "calendar_date"),
    description="School calendars; instructional days have HolidayCode '' or '%'.",
)

STUDENTS = TableSpec(
    name="students",
    columns={**frames.STUDENTS_SCHEMA, **PULLED},
    key=("student_id", "school_code"),
    description="One row per student record at a school, from Aeries (contract §3).",
)

ENROLLMENT = TableSpec(
    name="enrollment",
    columns={**frames.ENROLLMENT_SCHEMA, **PULLED},
    key=("student_id", "school_code", "academic_year", "enter_date"),
    description="Enrollment history stints per school year (a transfer gives two rows).",
)

ATTENDANCE_DAYS = TableSpec(
    name="attendance_days",
    columns={
        "student_id": pl.Int64,
        "school_code": pl.Int32,
        "calendar_date": pl.Date,
        "all_day_code": pl.Utf8,
        "absence_category": pl.Utf8,
        "period_codes": pl.Utf8,
        "is_full_day_absence": pl.Boolean,
        "source": pl.Utf8,
        "source_updated_at": UTC_TS,
    },
    key=("student_id", "school_code", "calendar_date"),
    description="One row per student-day carrying a code (negative attendance), contract §3.",
    sql_types={"period_codes": "JSON"},
)

ATTENDANCE_HISTORY_SUMMARY = TableSpec(
    name="attendance_history_summary",
    columns={**frames.HISTORY_SUMMARY_SCHEMA, **PULLED},
    key=("student_id", "school_year", "school_code"),
    description="Aeries' own attendance-history totals as pulled (recomputed nightly by Aeries).",
)

STUDENT_ATTENDANCE_SUMMARY = TableSpec(
    name="student_attendance_summary",
    columns={
        "school_year": pl.Int32,
        "student_id": pl.Int64,
        "school_code": pl.Int32,
        "as_of_date": pl.Date,
        "days_enrolled": pl.Int32,
        "days_absent": pl.Int32,
        "days_excused": pl.Int32,
        "days_unexcused": pl.Int32,
        "days_unverified": pl.Int32,
        "days_suspension_out_of_school": pl.Int32,
        "days_suspension_in_school": pl.Int32,
        "absence_rate": pl.Float64,
        "is_chronically_absent": pl.Boolean,
        "attendance_tier": pl.Utf8,
        "truancy_count": pl.Int32,
        "truancy_letter_level": pl.Int32,
    },
    key=("school_year", "student_id", "school_code"),
    description="Chronic absence and truancy per student, school and year through the as-of date (contract §4.1).",
)
