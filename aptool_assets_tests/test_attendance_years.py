"""The generated school years behind the projection back-test (``aptool_demo.attendance_years``): the same seed
gives the same year, the profile and enrollment mix is the documented one, and the dynamics are there (worse
after winter break, better after the turning point, about 14% chronically absent at the end of the year)."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from aptool_assets.rules.attendance import ABSENCE_CATEGORIES, FULL_DAY_ABSENCE_CATEGORIES, summary_from_attendance_days
from aptool_assets.rules.enrollment import CALENDAR_SCHEMA, ENROLLMENT_SCHEMA
from aptool_demo.attendance_years import ENROLLMENT_SHARES, PROFILES, generate_year, generate_years

STUDENTS = 4_000


@pytest.fixture(scope="module")
def year():
    return generate_year(2023, n_students=STUDENTS, seed=5)


def test_the_same_seed_gives_the_same_year(year):
    again = generate_year(2023, n_students=STUDENTS, seed=5)
    for name in ("calendar", "enrollment", "attendance_days", "students"):
        assert getattr(again, name).equals(getattr(year, name)), name
    other = generate_year(2023, n_students=STUDENTS, seed=6)
    assert not other.attendance_days.equals(year.attendance_days)
    assert [y.school_year for y in generate_years(range(2021, 2023), n_students=50)] == [2021, 2022]


def test_the_frames_have_the_shapes_the_rules_read(year):
    assert year.calendar.schema == pl.Schema(CALENDAR_SCHEMA)
    assert year.enrollment.schema == pl.Schema(ENROLLMENT_SCHEMA)
    assert set(year.attendance_days["absence_category"].unique()) <= set(ABSENCE_CATEGORIES)
    assert year.attendance_days.select("student_id", "school_code", "calendar_date").is_duplicated().sum() == 0
    assert year.students["student_id"].n_unique() == STUDENTS
    school_days = year.calendar.filter(pl.col("holiday_code").is_in(["", "%"])).group_by("school_code").len()
    assert set(school_days["len"]) == {180}


@pytest.mark.parametrize(("column", "shares"), [("profile", PROFILES), ("enrollment_kind", ENROLLMENT_SHARES)])
def test_the_mix_is_the_documented_one(year, column, shares):
    counts = dict(year.students.group_by(column).len().iter_rows())
    for name, share in shares.items():
        expected = share[0] if isinstance(share, tuple) else share
        assert abs(counts[name] / STUDENTS - expected) < 0.02, name


def test_transfers_move_to_another_school(year):
    moved = year.students.filter(pl.col("enrollment_kind") == "transfer")["student_id"]
    stints = year.enrollment.filter(pl.col("student_id").is_in(moved.implode())).sort("student_id", "enter_date")
    per_student = stints.group_by("student_id", maintain_order=True).agg(
        pl.col("school_code").n_unique().alias("schools"),
        pl.col("leave_date").first().alias("left"),
        pl.col("enter_date").last().alias("entered"),
    )
    assert (per_student["schools"] == 2).all()
    assert (per_student["entered"] > per_student["left"]).all()


def _rates(year, profile: str, first: date, last: date) -> float:
    """Absences per enrolled school day of a profile's full-year students between two dates."""
    who = year.students.filter((pl.col("profile") == profile) & (pl.col("enrollment_kind") == "full_year"))
    days = year.calendar.filter(
        pl.col("holiday_code").is_in(["", "%"]) & pl.col("calendar_date").is_between(first, last)
    )
    per_school = days.group_by("school_code").len()
    enrolled = who.join(year.enrollment, on="student_id").join(per_school, on="school_code")["len"].sum()
    absent = year.attendance_days.filter(
        pl.col("student_id").is_in(who["student_id"].implode())
        & pl.col("absence_category").is_in(FULL_DAY_ABSENCE_CATEGORIES)
        & pl.col("calendar_date").is_between(first, last)
    ).height
    return absent / enrolled


def test_worsening_students_get_worse_after_winter_break_and_improving_ones_better(year):
    autumn, spring = (date(2023, 9, 1), date(2023, 11, 30)), (date(2024, 3, 1), date(2024, 5, 10))
    assert _rates(year, "worsening", *spring) > 3 * _rates(year, "worsening", *autumn)
    assert _rates(year, "improving", *spring) < 0.5 * _rates(year, "improving", *autumn)
    steady_autumn, steady_spring = _rates(year, "steady", *autumn), _rates(year, "steady", *spring)
    assert 0.5 < steady_spring / steady_autumn < 2


def test_about_one_in_seven_ends_the_year_chronically_absent(year):
    summary = summary_from_attendance_days(
        calendar=year.calendar,
        enrollment=year.enrollment,
        attendance_days=year.attendance_days,
        school_year=2023,
        as_of_date=date(2024, 6, 30),
    )
    assert 0.12 <= summary["is_chronically_absent"].mean() <= 0.15
