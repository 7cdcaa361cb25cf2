"""Helpers for the attendance-rule tests: small hand-built calendars, code tables, attendance and
enrollment frames, and the summary of one student or a whole frame keyed by (student, school)."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from aptool_assets.rules.attendance import ABSENCE_CODES_SCHEMA, ATTENDANCE_SCHEMA, student_attendance_summary
from aptool_assets.rules.enrollment import CALENDAR_SCHEMA, ENROLLMENT_SCHEMA

YEAR = 2025
FIRST_DAY = date(2025, 9, 1)  # a Monday
AS_OF = date(2026, 6, 30)
S1, S2 = 101, 202


def weekdays(n: int, start: date = FIRST_DAY) -> list[date]:
    """n consecutive Monday-Friday dates from start."""
    out, day = [], start
    while len(out) < n:
        if day.weekday() < 5:
            out.append(day)
        day += timedelta(days=1)
    return out


def calendar_frame(school: int, days: list[date], holidays: dict[date, str] | None = None) -> pl.DataFrame:
    rows = [(school, d, "") for d in days] + [(school, d, code) for d, code in (holidays or {}).items()]
    return pl.DataFrame(rows, schema=CALENDAR_SCHEMA, orient="row")


def codes_frame(school: int, rows: list[tuple] | None = None, *, year: int | None = None) -> pl.DataFrame:
    """rows: (code, type_code, counts_for_ada, is_suspension, is_partial_day_truant, is_tne).

    School ``DISTRICT_SCHOOL_CODE`` (0) is the district-wide table. With ``year`` the frame carries a
    ``school_year`` column: the table then applies only to dates of that school year.
    """
    rows = rows if rows is not None else STANDARD_CODES
    frame = pl.DataFrame([(school, *r) for r in rows], schema=ABSENCE_CODES_SCHEMA, orient="row")
    return frame if year is None else frame.with_columns(pl.lit(year, dtype=pl.Int32).alias("school_year"))


STANDARD_CODES = [
    ("A", 1, False, False, False, False),  # unverified
    ("E", 2, False, False, False, False),  # excused
    ("U", 3, False, False, False, False),  # unexcused
    ("T", 5, True, False, False, False),  # tardy
    ("P", 6, True, False, False, False),  # present (e.g. field trip)
    ("S", 2, False, True, False, False),  # out-of-school suspension
    ("I", 6, True, True, False, False),  # in-school suspension
    ("G", 2, False, False, False, True),  # temporarily not enrolled
    ("B", 5, True, False, True, False),  # tardy 30+ minutes, partial-day truant
]


def attendance_frame(rows: list[tuple]) -> pl.DataFrame:
    """rows: (student_id, school_code, date, all_day_code, [period codes] or None)."""
    data = [
        (
            sid,
            sc,
            d,
            code,
            None
            if periods is None
            else [{"period": str(i + 1), "section_number": 1000 + i, "code": c} for i, c in enumerate(periods)],
        )
        for sid, sc, d, code, periods in rows
    ]
    return pl.DataFrame(data, schema=ATTENDANCE_SCHEMA, orient="row")


def enrollment_frame(rows: list[tuple]) -> pl.DataFrame:
    """rows: (student_id, school_code, enter_date, leave_date or None)."""
    return pl.DataFrame(rows, schema=ENROLLMENT_SCHEMA, orient="row")


def summarize(
    *,
    calendar: pl.DataFrame,
    enrollment: pl.DataFrame,
    attendance: pl.DataFrame | None = None,
    codes: pl.DataFrame | None = None,
    as_of: date = AS_OF,
    year: int = YEAR,
) -> dict[tuple[int, int], dict]:
    out = student_attendance_summary(
        calendar=calendar,
        enrollment=enrollment,
        attendance=attendance if attendance is not None else attendance_frame([]),
        absence_codes=codes if codes is not None else codes_frame(S1),
        school_year=year,
        as_of_date=as_of,
    )
    return {(r["student_id"], r["school_code"]): r for r in out.iter_rows(named=True)}


def one_school(
    n_days: int, absences: list[tuple], *, student: int = 1, codes: pl.DataFrame | None = None, as_of: date = AS_OF
) -> dict:
    """The single summary row of one student enrolled all year at S1 with n_days school days.

    absences: (index into the school days, all-day code, period codes or None).
    """
    days = weekdays(n_days)
    att = attendance_frame([(student, S1, days[i], code, periods) for i, code, periods in absences])
    result = summarize(
        calendar=calendar_frame(S1, days),
        enrollment=enrollment_frame([(student, S1, date(2025, 8, 1), None)]),
        attendance=att,
        codes=codes,
        as_of=as_of,
    )
    return result[(student, S1)]


def absent_days(n: int, code: str = "U") -> list[tuple]:
    return [(i, code, None) for i in range(n)]
