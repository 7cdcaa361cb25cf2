"""Tables pulled from Aeries (contract §3): reference data, the roster, enrollment and attendance; and two
internal tables (not in the contract) holding what the Dashboard's student groups are built from: the
demographic codes of each student record and the program records."""

from __future__ import annotations

import polars as pl

from aptool_assets.storage.warehouse import TableSpec
from aptool_assets.vocabulary import UTC_TS

PULLED = {"source_updated_at": UTC_TS}  # when the platform pulled the row from Aeries (or applied an event)

ATTENDANCE_DAYS_LOCK = "attendance_days"
"""Held (``Warehouse.exclusive``) by a pull from reading the newer webhook cells to writing its window,
by a full roster pull from reading the records changed since it started to replacing the roster, and by
the webhook path from reading stored days and records to writing them back."""

SCHOOLS = TableSpec(
    name="schools",
    columns={
        "school_code": pl.Int32,
        "name": pl.Utf8,
        "inactive_status_code": pl.Utf8,
        "low_grade": pl.Int32,
        "high_grade": pl.Int32,
        "attendance_type": pl.Utf8,
        "attendance_reporting": pl.Utf8,
        "is_real_school": pl.Boolean,
        **PULLED,
    },
    key=("school_code",),
    description="Schools as Aeries lists them, pseudo-schools (0 district, 99, 900-902, 999) flagged.",
)

ABSENCE_CODES = TableSpec(
    name="absence_codes",
    columns={
        "school_year": pl.Int32,
        "school_code": pl.Int32,
        "code": pl.Utf8,
        "title": pl.Utf8,
        "type_code": pl.Int32,
        "counts_for_ada": pl.Boolean,
        "is_suspension": pl.Boolean,
        "is_partial_day_truant": pl.Boolean,
        "is_temporarily_not_enrolled": pl.Boolean,
        **PULLED,
    },
    key=("school_year", "school_code", "code"),
    description="Each school's absence-code table per school year, and the district-wide table (school_code 0) "
    "a school's missing codes are looked up in: the only source of what a code means.",
)

SCHOOL_CALENDAR = TableSpec(
    name="school_calendar",
    columns={
        "school_year": pl.Int32,
        "school_code": pl.Int32,
        "calendar_date": pl.Date,
        "holiday_code": pl.Utf8,
        "calendar_day_number": pl.Int32,
        "is_instructional": pl.Boolean,
    },
    key=("school_code", "calendar_date"),
    description="School calendars; instructional days have HolidayCode '' or '%'.",
)

STUDENTS = TableSpec(
    name="students",
    columns={
        "student_id": pl.Int64,
        "school_code": pl.Int32,
        "student_number": pl.Int64,
        "state_student_id": pl.Utf8,
        "first_name": pl.Utf8,
        "last_name": pl.Utf8,
        "grade": pl.Int32,
        "school_enter_date": pl.Date,
        "school_leave_date": pl.Date,
        "inactive_status_code": pl.Utf8,
        "is_active": pl.Boolean,
        **PULLED,
    },
    key=("student_id", "school_code"),
    description="One row per student record at a school, from Aeries (contract §3).",
)

RACE_CODE_COLUMNS: tuple[str, ...] = tuple(f"race_code_{i}" for i in range(1, 6))
"""Aeries ``RaceCode1``..``RaceCode5`` (CALPADS race codes such as ``"700"``)."""

DEMOGRAPHIC_CODE_COLUMNS: tuple[str, ...] = (
    "ethnicity_code",
    *RACE_CODE_COLUMNS,
    "language_fluency_code",
    "parent_ed_level_code",
)
"""The codes of ``aptool.student_demographics``, as text; a blank or missing code is null."""

STUDENT_DEMOGRAPHICS = TableSpec(
    name="student_demographics",
    columns={
        "student_id": pl.Int64,
        "school_code": pl.Int32,
        **dict.fromkeys(DEMOGRAPHIC_CODE_COLUMNS, pl.Utf8),
        "school_enter_date": pl.Date,
        **PULLED,
    },
    key=("student_id", "school_code"),
    description="Internal (not a contract table): the demographic codes of each student record at a school, "
    "from the same pull as aptool.students (EthnicityCode, RaceCode1..RaceCode5, LanguageFluencyCode, "
    "ParentEdLevelCode; blank codes are null). Codes only, no names: the input of the student groups "
    "(contract §4.5).",
)

PAST_YEAR_ROSTER_COLUMNS: tuple[str, ...] = tuple(c for c in STUDENTS.columns if c not in ("first_name", "last_name"))
"""What a past year's roster keeps of ``aptool.students``: identifiers, grade, dates and status, no names."""

PAST_YEAR_STUDENTS = TableSpec(
    name="past_year_students",
    columns={
        "school_year": pl.Int32,
        **{c: STUDENTS.columns[c] for c in PAST_YEAR_ROSTER_COLUMNS},
        **dict.fromkeys(DEMOGRAPHIC_CODE_COLUMNS, pl.Utf8),
    },
    key=("school_year", "student_id", "school_code"),
    description="Internal (not a contract table): the roster of each past school year a backfill loaded, pulled "
    "with that year's DatabaseYear, with its demographic codes and without names. aptool.students and "
    "aptool.student_demographics stay the current year's: a past year's metrics read its own roster from here.",
)

STUDENT_PROGRAMS = TableSpec(
    name="student_programs",
    columns={
        "school_year": pl.Int32,
        "student_id": pl.Int64,
        "school_code": pl.Int32,
        "program_code": pl.Utf8,
        "program_description": pl.Utf8,
        "start_date": pl.Date,
        "end_date": pl.Date,
        **PULLED,
    },
    key=("school_year", "student_id", "school_code", "program_code", "start_date"),
    description="Internal (not a contract table): Aeries program records (CALPADS program codes: 144 special "
    "education, 181/182 free/reduced meals, 191 homeless, 190 foster, 135 migrant, ...) of the students with a "
    "record at each school, kept per school year when they overlap it. start_date is the participation start, "
    "else the eligibility start, else the school year's first day; end_date likewise, null while open. The "
    "input of the student groups (contract §4.5).",
)

ENROLLMENT = TableSpec(
    name="enrollment",
    columns={
        "student_id": pl.Int64,
        "school_code": pl.Int32,
        "academic_year": pl.Int32,
        "grade": pl.Int32,
        "enter_date": pl.Date,
        "leave_date": pl.Date,
        "exit_reason_code": pl.Utf8,
        **PULLED,
    },
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
    # Every pull, summary and projection reads a window of dates: with years of history, not the whole table.
    lookups=(("calendar_date",),),
    description="One row per student-day carrying a code (negative attendance), contract §3.",
    sql_types={"period_codes": "JSON"},
)

HISTORY_DAY_COLUMNS: tuple[str, ...] = (
    "days_enrolled",
    "days_present",
    "days_absence",
    "days_excused",
    "days_unexcused",
    "days_tardy",
    "days_of_truancy",
    "days_suspension",
    "days_in_school_suspension",
)
"""Aeries' own per-year totals, as the AttendanceHistory summary delivers them."""

ATTENDANCE_HISTORY_SUMMARY = TableSpec(
    name="attendance_history_summary",
    columns={
        "student_id": pl.Int64,
        "school_year": pl.Int32,
        "school_code": pl.Int32,
        **dict.fromkeys(HISTORY_DAY_COLUMNS, pl.Int32),
        **PULLED,
    },
    key=("student_id", "school_year", "school_code"),
    description="Aeries' own attendance-history totals as pulled (recomputed nightly by Aeries).",
)
