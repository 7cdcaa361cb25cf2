"""Attendance rules (contract §4.1) on small hand-built frames, one boundary at a time.

The last tests compare the fast implementation with a slow reference written plainly below
(one Python set entry per enrolled day) on a few hundred seeded random districts.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, timedelta

import polars as pl
import pytest

from aptool_assets.rules.attendance import (
    ABSENCE_CATEGORIES,
    ABSENCE_CODES_SCHEMA,
    ATTENDANCE_SCHEMA,
    SUMMARY_SCHEMA,
    attendance_tier_expr,
    categorize_attendance,
    student_attendance_summary,
    truancy_letter_level_expr,
)
from aptool_assets.rules.enrollment import CALENDAR_SCHEMA, ENROLLMENT_SCHEMA, instructional_days
from aptool_assets.vocabulary import TIERS

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


def codes_frame(school: int, rows: list[tuple] | None = None) -> pl.DataFrame:
    """rows: (code, type_code, counts_for_ada, is_suspension, is_partial_day_truant, is_tne)."""
    rows = rows if rows is not None else STANDARD_CODES
    return pl.DataFrame([(school, *r) for r in rows], schema=ABSENCE_CODES_SCHEMA, orient="row")


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


# --- instructional days ----------------------------------------------------------------------


def test_minimum_days_count_and_holidays_do_not():
    days = weekdays(5)
    cal = calendar_frame(
        S1, days[:3], {days[3]: "%", days[4]: "#", date(2025, 9, 8): "@", date(2025, 9, 9): "+", date(2025, 9, 10): "$"}
    )
    assert instructional_days(cal)["calendar_date"].to_list() == days[:4]

    att = attendance_frame(
        [(1, S1, days[4], "U", None), (1, S1, date(2025, 9, 9), "U", None), (1, S1, days[3], "U", None)]
    )
    row = summarize(calendar=cal, enrollment=enrollment_frame([(1, S1, FIRST_DAY, None)]), attendance=att)[(1, S1)]
    # 3 regular + 1 minimum day; the codes on the holiday and the conference day are ignored.
    assert (row["days_enrolled"], row["days_absent"], row["truancy_count"]) == (4, 1, 1)


def test_calendar_is_per_school():
    cal = pl.concat([calendar_frame(S1, weekdays(10)), calendar_frame(S2, weekdays(4))])
    enr = enrollment_frame([(1, S1, FIRST_DAY, None), (2, S2, FIRST_DAY, None)])
    result = summarize(calendar=cal, enrollment=enr)
    assert result[(1, S1)]["days_enrolled"] == 10
    assert result[(2, S2)]["days_enrolled"] == 4


# --- chronic absence and tiers ---------------------------------------------------------------


def test_exactly_ten_percent_with_31_or_more_days_is_chronic():
    row = one_school(40, absent_days(4))
    assert row["absence_rate"] == 0.10
    assert row["is_chronically_absent"] is True
    assert row["attendance_tier"] == "moderate_chronic"


def test_just_under_ten_percent_is_not_chronic():
    days = [date(2025, 7, 1) + timedelta(days=i) for i in range(361)]  # every day a school day
    row = summarize(
        calendar=calendar_frame(S1, days),
        enrollment=enrollment_frame([(1, S1, days[0], None)]),
        attendance=attendance_frame([(1, S1, d, "U", None) for d in days[:36]]),
    )[(1, S1)]
    assert (row["days_enrolled"], row["days_absent"]) == (361, 36)  # 9.97 %
    assert row["is_chronically_absent"] is False
    assert row["attendance_tier"] == "at_risk"


def test_thirty_days_at_ten_percent_is_not_chronic_but_tier_is_moderate():
    row = one_school(30, absent_days(3))
    assert row["absence_rate"] == 0.10
    assert row["is_chronically_absent"] is False  # needs days_enrolled >= 31
    assert row["attendance_tier"] == "moderate_chronic"  # tier ignores the 31-day rule


def test_thirty_one_days():
    assert one_school(31, absent_days(4))["is_chronically_absent"] is True  # 12.9 %
    assert one_school(31, absent_days(3))["is_chronically_absent"] is False  # 9.68 %


@pytest.mark.parametrize(
    ("absent", "enrolled", "tier"),
    [
        (0, 20, "satisfactory"),
        (1, 21, "satisfactory"),  # 4.76 %
        (1, 20, "at_risk"),  # exactly 0.05
        (3, 60, "at_risk"),  # 0.05 from other counts
        (2, 21, "at_risk"),  # 9.52 %
        (2, 20, "moderate_chronic"),  # exactly 0.10
        (4, 21, "moderate_chronic"),  # 19.05 %
        (4, 20, "severe_chronic"),  # exactly 0.20
        (12, 60, "severe_chronic"),
        (20, 20, "severe_chronic"),
    ],
)
def test_tier_boundaries_through_the_summary(absent, enrolled, tier):
    row = one_school(enrolled, absent_days(absent))
    assert row["attendance_tier"] == tier


def test_tier_expression_boundaries_and_null_rate():
    rates = [0.0, 0.0499999, 0.05, 0.0999999, 0.10, 0.1999999, 0.20, 1.0, None]
    tiers = (
        pl.DataFrame({"absence_rate": rates}, schema={"absence_rate": pl.Float64})
        .select(attendance_tier_expr())
        .to_series()
        .to_list()
    )
    assert tiers == [
        "satisfactory",
        "satisfactory",
        "at_risk",
        "at_risk",
        "moderate_chronic",
        "moderate_chronic",
        "severe_chronic",
        "severe_chronic",
        "satisfactory",
    ]
    assert set(tiers) <= set(TIERS)


def test_float_drift_does_not_move_the_boundary():
    # 1 - 27/30 = 0.09999999999999998; the rate is computed from counts, so 3/30 is 0.10.
    row = one_school(30, absent_days(3))
    assert row["absence_rate"] == 3 / 30 == 0.10


# --- categories ------------------------------------------------------------------------------


def test_in_school_suspension_is_not_absent_out_of_school_is():
    row = one_school(40, [(0, "S", None), (1, "S", None), (2, "I", None), (3, "I", None), (4, "I", None)])
    assert row["days_suspension_out_of_school"] == 2
    assert row["days_suspension_in_school"] == 3
    assert row["days_absent"] == 2
    assert row["days_enrolled"] == 40


def test_unverified_absences_count_as_absent():
    row = one_school(40, absent_days(4, code="A"))
    assert (row["days_unverified"], row["days_absent"], row["is_chronically_absent"]) == (4, 4, True)
    assert row["truancy_count"] == 0  # unverified is not unexcused


def test_each_count_column():
    row = one_school(
        50,
        [
            (0, "A", None),
            (1, "E", None),
            (2, "E", None),
            (3, "U", None),
            (4, "S", None),
            (5, "I", None),
            (6, "T", None),
            (7, "P", None),
            (8, None, ["T"]),
        ],
    )
    assert {
        k: row[k]
        for k in (
            "days_unverified",
            "days_excused",
            "days_unexcused",
            "days_suspension_out_of_school",
            "days_suspension_in_school",
            "days_absent",
            "days_enrolled",
            "truancy_count",
        )
    } == {
        "days_unverified": 1,
        "days_excused": 2,
        "days_unexcused": 1,
        "days_suspension_out_of_school": 1,
        "days_suspension_in_school": 1,
        "days_absent": 5,
        "days_enrolled": 50,
        "truancy_count": 1,
    }


def test_temporarily_not_enrolled_days_reduce_enrolled_and_are_not_absences():
    row = one_school(40, [(0, "G", None), (1, "G", None), (2, "U", None), (3, "G", ["U", "U"])])
    assert row["days_enrolled"] == 37
    assert row["days_absent"] == 1
    assert row["truancy_count"] == 1  # a not-enrolled day is not a truancy day, even with truant periods


def test_temporarily_not_enrolled_outside_enrollment_changes_nothing():
    days = weekdays(10)
    cal = calendar_frame(S1, days, {date(2025, 9, 20): "#"})
    att = attendance_frame(
        [
            (1, S1, date(2025, 9, 20), "G", None),  # holiday
            (1, S1, days[9], "G", None),
        ]
    )  # after the leave date
    row = summarize(calendar=cal, enrollment=enrollment_frame([(1, S1, FIRST_DAY, days[8])]), attendance=att)
    assert row[(1, S1)]["days_enrolled"] == 9


@pytest.mark.parametrize(
    ("type_code", "ada", "suspension", "tne", "category"),
    [
        (1, False, False, False, "absent_unverified"),
        (2, False, False, False, "absent_excused"),
        (3, False, False, False, "absent_unexcused"),
        (4, True, False, False, "present"),
        (6, True, False, False, "present"),
        (5, True, False, False, "tardy"),
        (8, True, False, False, "tardy"),
        (9, True, False, False, "tardy"),
        (7, False, False, False, None),  # unused TypeCode: no category
        (3, False, True, False, "suspension_out_of_school"),  # flags before TypeCode
        (6, True, True, False, "suspension_in_school"),
        (3, False, True, True, "not_enrolled"),  # IsTemporarilyNotEnrolled first of all
        (6, True, False, True, "not_enrolled"),
    ],
)
def test_category_order(type_code, ada, suspension, tne, category):
    codes = codes_frame(S1, [("X", type_code, ada, suspension, False, tne)])
    out = categorize_attendance(attendance_frame([(1, S1, FIRST_DAY, "X", None)]), codes)
    assert out["absence_category"].to_list() == [category]
    assert out["is_full_day_absence"].to_list() == [
        category in {"absent_unverified", "absent_excused", "absent_unexcused", "suspension_out_of_school"}
    ]
    assert out["unknown_code"].to_list() == [None]
    assert category is None or category in ABSENCE_CATEGORIES


def test_categorize_keeps_rows_columns_and_order():
    att = attendance_frame(
        [
            (3, S1, FIRST_DAY, "E", None),
            (1, S1, FIRST_DAY, "", ["T", ""]),
            (2, S1, FIRST_DAY, None, []),
            (1, S1, FIRST_DAY, " ", None),
        ]
    )
    out = categorize_attendance(att.with_columns(pl.lit("x").alias("extra")), codes_frame(S1))
    assert out.columns == [
        *ATTENDANCE_SCHEMA,
        "extra",
        "absence_category",
        "is_full_day_absence",
        "is_truancy_day",
        "unknown_code",
    ]
    assert out["student_id"].to_list() == [3, 1, 2, 1]
    # '' and ' ' are "no all-day code"; an empty period list is no period code at all.
    assert out["absence_category"].to_list() == ["absent_excused", "partial", None, None]
    assert out.dtypes[-4:] == [pl.Utf8, pl.Boolean, pl.Boolean, pl.Utf8]


# --- partial days and truancy ----------------------------------------------------------------


def test_partial_days_are_not_absences_but_can_be_truancy():
    codes = codes_frame(S1)
    att = attendance_frame(
        [
            (1, S1, FIRST_DAY, None, ["T"]),  # tardy in one period: partial, no truancy
            (1, S1, FIRST_DAY + timedelta(1), None, ["U"]),  # unexcused period (TypeCode 3): truancy
            (1, S1, FIRST_DAY + timedelta(2), None, ["B"]),  # IsPartialDayTruant period: truancy
            (1, S1, FIRST_DAY + timedelta(3), None, ["U"] * 6),  # every period coded: still partial
            (1, S1, FIRST_DAY + timedelta(4), "B", None),  # all-day code flagged partial-day truant
            (1, S1, FIRST_DAY + timedelta(7), "E", ["E", "U"]),  # excused day with a cut period
        ]
    )
    out = categorize_attendance(att, codes)
    assert out["absence_category"].to_list() == ["partial", "partial", "partial", "partial", "tardy", "absent_excused"]
    assert out["is_truancy_day"].to_list() == [False, True, True, True, True, True]
    assert out["is_full_day_absence"].to_list() == [False, False, False, False, False, True]

    result = summarize(
        calendar=calendar_frame(S1, weekdays(40)),
        attendance=att,
        codes=codes,
        enrollment=enrollment_frame([(1, S1, FIRST_DAY, None)]),
    )[(1, S1)]
    assert (result["days_absent"], result["days_excused"], result["truancy_count"]) == (1, 1, 5)


def test_unexcused_day_with_truant_periods_counts_once():
    row = one_school(40, [(0, "U", ["U", "B", "U"]), (1, None, ["U", "B"])])
    assert row["days_unexcused"] == 1
    assert row["truancy_count"] == 2


@pytest.mark.parametrize(("count", "level"), [(0, 0), (2, 0), (3, 1), (5, 1), (6, 2), (8, 2), (9, 3), (40, 3)])
def test_truancy_letter_thresholds(count, level):
    row = one_school(60, absent_days(count))
    assert row["truancy_count"] == count
    assert row["truancy_letter_level"] == level


def test_truancy_letter_expression():
    df = pl.DataFrame({"truancy_count": [0, 2, 3, 5, 6, 8, 9, 100, None]}, schema={"truancy_count": pl.Int32})
    out = df.select(truancy_letter_level_expr()).to_series()
    assert out.dtype == pl.Int32
    assert out.to_list() == [0, 0, 1, 1, 2, 2, 3, 3, 0]


# --- enrollment ------------------------------------------------------------------------------


def test_mid_year_transfer_gives_one_row_per_school():
    days = weekdays(40)
    cal = pl.concat([calendar_frame(S1, days), calendar_frame(S2, days)])
    enr = enrollment_frame([(1, S1, FIRST_DAY, days[14]), (1, S2, days[15], None)])
    att = attendance_frame(
        [
            (1, S1, days[3], "U", None),
            (1, S1, days[14], "E", None),
            (1, S1, days[20], "U", None),  # coded at the old school after leaving: ignored
            (1, S2, days[10], "U", None),  # coded at the new school before entering: ignored
            (1, S2, days[15], "A", None),
            (1, S2, days[39], "S", None),
        ]
    )
    codes = pl.concat([codes_frame(S1), codes_frame(S2)])
    result = summarize(calendar=cal, enrollment=enr, attendance=att, codes=codes)
    assert set(result) == {(1, S1), (1, S2)}
    old, new = result[(1, S1)], result[(1, S2)]
    assert (old["days_enrolled"], old["days_absent"], old["days_unexcused"], old["days_excused"]) == (15, 2, 1, 1)
    assert (new["days_enrolled"], new["days_absent"], new["days_unverified"]) == (25, 2, 1)
    assert new["days_suspension_out_of_school"] == 1


def test_withdrawal_leave_date_is_inclusive_and_later_days_do_not_count():
    days = weekdays(40)
    att = attendance_frame([(1, S1, days[9], "U", None), (1, S1, days[10], "U", None)])
    row = summarize(
        calendar=calendar_frame(S1, days), attendance=att, enrollment=enrollment_frame([(1, S1, days[0], days[9])])
    )[(1, S1)]
    assert (row["days_enrolled"], row["days_absent"], row["truancy_count"]) == (10, 1, 1)


def test_enter_date_is_inclusive():
    days = weekdays(10)
    att = attendance_frame([(1, S1, days[3], "U", None), (1, S1, days[4], "U", None)])
    row = summarize(
        calendar=calendar_frame(S1, days), attendance=att, enrollment=enrollment_frame([(1, S1, days[4], None)])
    )[(1, S1)]
    assert (row["days_enrolled"], row["days_absent"]) == (6, 1)


def test_overlapping_stints_count_each_day_once():
    days = weekdays(30)
    enr = enrollment_frame(
        [(1, S1, days[0], days[19]), (1, S1, days[10], None), (1, S1, days[5], days[8]), (1, S1, days[0], days[19])]
    )
    att = attendance_frame([(1, S1, days[12], "U", None)])
    result = summarize(calendar=calendar_frame(S1, days), enrollment=enr, attendance=att)
    assert len(result) == 1
    assert (result[(1, S1)]["days_enrolled"], result[(1, S1)]["days_absent"]) == (30, 1)


def test_gap_between_stints_is_not_enrolled():
    days = weekdays(30)
    enr = enrollment_frame([(1, S1, days[0], days[9]), (1, S1, days[20], None)])
    att = attendance_frame([(1, S1, days[15], "U", None), (1, S1, days[25], "U", None)])
    row = summarize(calendar=calendar_frame(S1, days), enrollment=enr, attendance=att)[(1, S1)]
    assert (row["days_enrolled"], row["days_absent"]) == (20, 1)


def test_school_year_clipping_and_roster():
    cal = calendar_frame(
        S1,
        [date(2025, 6, 20), date(2025, 6, 30), date(2025, 7, 1), date(2025, 9, 2), date(2026, 6, 30), date(2026, 7, 1)],
    )
    enr = enrollment_frame(
        [
            (1, S1, date(2024, 8, 15), None),  # enrolled since last year: counted from July 1
            (2, S1, date(2024, 8, 15), date(2025, 6, 30)),  # left before the year: no row
            (3, S1, date(2026, 7, 1), None),  # next year: no row
            (4, S1, date(2025, 6, 1), date(2025, 7, 1)),  # overlaps the year by one day
        ]
    )
    att = attendance_frame(
        [
            (1, S1, date(2025, 6, 30), "U", None),
            (1, S1, date(2026, 7, 1), "U", None),
            (1, S1, date(2025, 7, 1), "E", None),
        ]
    )
    result = summarize(calendar=cal, enrollment=enr, attendance=att)
    assert set(result) == {(1, S1), (4, S1)}
    assert (result[(1, S1)]["days_enrolled"], result[(1, S1)]["days_absent"]) == (3, 1)
    assert result[(4, S1)]["days_enrolled"] == 1


def test_codes_after_as_of_date_are_ignored():
    days = weekdays(40)
    as_of = days[19]
    row = one_school(
        40, [(5, "U", None), (19, "U", None), (20, "U", None), (30, "S", None), (25, None, ["U"])], as_of=as_of
    )
    assert row["days_enrolled"] == 20
    assert (row["days_absent"], row["truancy_count"]) == (2, 2)
    assert row["as_of_date"] == as_of


def test_student_entering_after_as_of_date_has_no_row():
    days = weekdays(20)
    enr = enrollment_frame([(1, S1, days[0], None), (2, S1, days[11], None), (3, S1, days[10], None)])
    result = summarize(calendar=calendar_frame(S1, days), enrollment=enr, as_of=days[10])
    assert set(result) == {(1, S1), (3, S1)}
    assert result[(3, S1)]["days_enrolled"] == 1


def test_as_of_date_after_year_end_is_capped():
    days = weekdays(10, start=date(2026, 6, 22))  # runs into July 2026
    result = summarize(
        calendar=calendar_frame(S1, days),
        enrollment=enrollment_frame([(1, S1, days[0], None)]),
        as_of=date(2026, 12, 31),
    )
    assert result[(1, S1)]["days_enrolled"] == 7  # June 22-30 weekdays
    assert result[(1, S1)]["as_of_date"] == date(2026, 6, 30)


def test_zero_enrolled_days_gives_null_rate():
    saturday = date(2025, 9, 6)
    cal = calendar_frame(S1, weekdays(5), {saturday: "@"})
    enr = enrollment_frame([(1, S1, saturday, None), (2, S2, FIRST_DAY, None)])  # S2 sent no calendar
    result = summarize(calendar=cal, enrollment=enr, as_of=saturday)
    for key in [(1, S1), (2, S2)]:
        row = result[key]
        assert row["days_enrolled"] == 0
        assert row["absence_rate"] is None
        assert row["is_chronically_absent"] is False
        assert row["attendance_tier"] == "satisfactory"
        assert row["truancy_letter_level"] == 0


def test_every_enrolled_day_not_enrolled_gives_null_rate():
    row = one_school(2, [(0, "G", None), (1, "G", None)])
    assert (row["days_enrolled"], row["absence_rate"]) == (0, None)


# --- per-school code tables ------------------------------------------------------------------


def test_same_letter_means_different_things_at_two_schools():
    days = weekdays(40)
    cal = pl.concat([calendar_frame(S1, days), calendar_frame(S2, days)])
    codes = pl.concat(
        [
            codes_frame(S1, [("X", 3, False, False, False, False)]),  # unexcused at S1
            codes_frame(S2, [("X", 6, True, True, False, False)]),  # in-school suspension at S2
        ]
    )
    enr = enrollment_frame([(1, S1, FIRST_DAY, None), (2, S2, FIRST_DAY, None)])
    att = attendance_frame(
        [(1, S1, days[i], "X", None) for i in range(4)] + [(2, S2, days[i], "X", None) for i in range(4)]
    )
    result = summarize(calendar=cal, enrollment=enr, attendance=att, codes=codes)
    a, b = result[(1, S1)], result[(2, S2)]
    assert (a["days_unexcused"], a["days_absent"], a["truancy_count"], a["is_chronically_absent"]) == (4, 4, 4, True)
    assert (b["days_suspension_in_school"], b["days_absent"], b["truancy_count"]) == (4, 0, 0)


def test_unknown_code_neither_crashes_nor_counts():
    codes = codes_frame(S1)
    att = attendance_frame(
        [
            (1, S1, FIRST_DAY, "Z", None),
            (1, S1, FIRST_DAY + timedelta(1), None, ["Q", "T"]),
            (1, S1, FIRST_DAY + timedelta(2), "U", None),
        ]
    )
    out = categorize_attendance(att, codes)
    assert out["absence_category"].to_list() == [None, "partial", "absent_unexcused"]
    assert out["unknown_code"].to_list() == ["Z", "Q", None]
    assert out["is_truancy_day"].to_list() == [False, False, True]

    row = summarize(
        calendar=calendar_frame(S1, weekdays(10)),
        enrollment=enrollment_frame([(1, S1, FIRST_DAY, None)]),
        attendance=att,
        codes=codes,
    )[(1, S1)]
    assert (row["days_enrolled"], row["days_absent"], row["truancy_count"]) == (10, 1, 1)


def test_code_defined_only_at_another_school_is_unknown():
    codes = codes_frame(S2)  # S1 has no table at all
    out = categorize_attendance(attendance_frame([(1, S1, FIRST_DAY, "U", ["U"])]), codes)
    assert out["absence_category"].to_list() == [None]
    assert out["is_truancy_day"].to_list() == [False]
    assert out["unknown_code"].to_list() == ["U"]


# --- output shape ----------------------------------------------------------------------------


def test_summary_columns_and_dtypes():
    out = student_attendance_summary(
        calendar=calendar_frame(S1, weekdays(5)),
        enrollment=enrollment_frame([(2, S1, FIRST_DAY, None), (1, S1, FIRST_DAY, None)]),
        attendance=attendance_frame([]),
        absence_codes=codes_frame(S1),
        school_year=YEAR,
        as_of_date=AS_OF,
    )
    assert out.schema == pl.Schema(SUMMARY_SCHEMA)
    assert out["student_id"].to_list() == [1, 2]
    assert out["school_year"].to_list() == [YEAR, YEAR]


def test_empty_inputs():
    out = student_attendance_summary(
        calendar=pl.DataFrame(schema=CALENDAR_SCHEMA),
        enrollment=pl.DataFrame(schema=ENROLLMENT_SCHEMA),
        attendance=pl.DataFrame(schema=ATTENDANCE_SCHEMA),
        absence_codes=pl.DataFrame(schema=ABSENCE_CODES_SCHEMA),
        school_year=YEAR,
        as_of_date=AS_OF,
    )
    assert out.height == 0
    assert out.schema == pl.Schema(SUMMARY_SCHEMA)


# --- property: fast == slow reference on random districts ------------------------------------

FULL_DAY = {"absent_unverified", "absent_excused", "absent_unexcused", "suspension_out_of_school"}
TYPE_CATEGORY = {
    1: "absent_unverified",
    2: "absent_excused",
    3: "absent_unexcused",
    4: "present",
    6: "present",
    5: "tardy",
    8: "tardy",
    9: "tardy",
}


def _clean(code):
    code = (code or "").strip()
    return code or None


def reference_day(school, all_day, periods, codes):
    """(category, is_truancy_day) of one attendance row (periods: list of codes), per contract §4.1."""
    code = _clean(all_day)
    period_codes = [c for c in map(_clean, periods or []) if c]
    if code is None:
        category = "partial" if period_codes else None
    elif (school, code) not in codes:
        category = None
    else:
        type_code, ada, suspension, partial_truant, tne = codes[(school, code)]
        if tne:
            category = "not_enrolled"
        elif suspension:
            category = "suspension_in_school" if ada else "suspension_out_of_school"
        else:
            category = TYPE_CATEGORY.get(type_code)
    truant = False
    if code is not None and (school, code) in codes:
        type_code, _, _, partial_truant, _ = codes[(school, code)]
        truant = type_code == 3 or partial_truant
    for c in period_codes:
        if (school, c) in codes:
            type_code, _, _, partial_truant, _ = codes[(school, c)]
            truant = truant or type_code == 3 or partial_truant
    return category, truant and category != "not_enrolled"


def reference_summary(calendar, enrollment, attendance, codes, school_year, as_of):
    """Explode every enrolled day into a set, then count: slow and obviously right."""
    year_start, year_end = date(school_year, 7, 1), date(school_year + 1, 6, 30)
    as_of = min(as_of, year_end)
    school_days = {(sc, d) for sc, d, holiday in calendar if (holiday or "").strip() in ("", "%")}
    roster, enrolled = set(), defaultdict(set)
    for sid, sc, enter, leave in enrollment:
        if enter > as_of or (leave is not None and leave < year_start):
            continue
        roster.add((sid, sc))
        day, last = max(enter, year_start), min(leave or as_of, as_of)
        while day <= last:
            if (sc, day) in school_days:
                enrolled[(sid, sc)].add(day)
            day += timedelta(days=1)
    coded = {}
    for sid, sc, d, all_day, periods in attendance:  # the last row for a day wins
        coded[(sid, sc, d)] = reference_day(sc, all_day, periods, codes)
    out = {}
    for sid, sc in roster:
        days = {d for d in enrolled[(sid, sc)] if coded.get((sid, sc, d), (None,))[0] != "not_enrolled"}
        cats = [coded[(sid, sc, d)] for d in days if (sid, sc, d) in coded]

        def n(category, cats=cats):
            return sum(1 for c, _ in cats if c == category)

        absent = sum(1 for c, _ in cats if c in FULL_DAY)
        rate = absent / len(days) if days else None
        tier = (
            "satisfactory"
            if rate is None or rate < 0.05
            else "at_risk"
            if rate < 0.10
            else "moderate_chronic"
            if rate < 0.20
            else "severe_chronic"
        )
        truancy = sum(1 for _, t in cats if t)
        out[(sid, sc)] = {
            "school_year": school_year,
            "student_id": sid,
            "school_code": sc,
            "as_of_date": as_of,
            "days_enrolled": len(days),
            "days_absent": absent,
            "days_excused": n("absent_excused"),
            "days_unexcused": n("absent_unexcused"),
            "days_unverified": n("absent_unverified"),
            "days_suspension_out_of_school": n("suspension_out_of_school"),
            "days_suspension_in_school": n("suspension_in_school"),
            "absence_rate": rate,
            "is_chronically_absent": rate is not None and rate >= 0.10 and len(days) >= 31,
            "attendance_tier": tier,
            "truancy_count": truancy,
            "truancy_letter_level": 3 if truancy >= 9 else 2 if truancy >= 6 else 1 if truancy >= 3 else 0,
        }
    return out


def random_district(rng: random.Random):
    """A tiny district that hits the edges: year boundaries, holidays, overlaps, unknown codes."""
    schools = rng.sample([11, 22, 33], rng.randint(1, 3))
    window = (date(2025, 6, 10), date(2026, 7, 20))
    span = (window[1] - window[0]).days

    def any_day():
        return window[0] + timedelta(days=rng.randrange(span))

    pool = sorted({any_day() for _ in range(rng.choice([30, 60, 150]))} | {date(2025, 7, 1), date(2026, 6, 30)})
    holiday_codes = ["", "", "", "", "%", "#", "@", "+", "$", None, " "]
    calendar = [(sc, d, rng.choice(holiday_codes)) for sc in schools for d in pool if rng.random() < 0.85]

    letters = "ABCDEFGH"
    codes = {}
    for sc in schools:
        for letter in letters:
            if rng.random() < 0.8:
                codes[(sc, letter)] = (
                    rng.choice([1, 2, 3, 3, 4, 5, 6, 7, 8, 9]),
                    rng.random() < 0.5,
                    rng.random() < 0.15,
                    rng.random() < 0.2,
                    rng.random() < 0.1,
                )
    code_rows = [(sc, c, *v) for (sc, c), v in codes.items()]

    def near_pool_day():
        d = rng.choice(pool)
        return d + timedelta(days=rng.choice([0, 0, 0, -1, 1]))

    enrollment = []
    students = list(range(1, rng.randint(2, 9)))
    for sid in students:
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
            sc = rng.choice(schools)
            enter = near_pool_day()
            leave = None if rng.random() < 0.4 else near_pool_day()
            enrollment.append((sid, sc, enter, leave))

    def inside_a_stint(sid):
        """Mostly a day of one of the student's stints, so the codes land on enrolled days."""
        stints = [(sc, enter, leave) for s, sc, enter, leave in enrollment if s == sid]
        if stints and rng.random() < 0.7:
            sc, enter, leave = rng.choice(stints)
            days = [d for d in pool if enter <= d <= (leave or window[1])]
            if days:
                return sc, rng.choice(days)
        return rng.choice(schools + [44]), near_pool_day()

    attendance = []
    for sid in students + [99]:  # 99 has codes but no enrollment
        for _ in range(rng.randint(0, len(pool) // 3 + 10)):
            sc, day = inside_a_stint(sid)
            all_day = rng.choice([None, "", " ", "Z", *letters, *letters, *letters])
            periods = rng.choice([None, [], [rng.choice(["", "Z", *letters]) for _ in range(rng.randint(1, 4))]])
            if all_day is None and not periods and rng.random() < 0.7:
                periods = [rng.choice(letters)]
            attendance.append((sid, sc, day, all_day, periods))
    as_of = rng.choice([*pool, date(2026, 9, 1), date(2025, 6, 20)])
    return calendar, enrollment, attendance, codes, code_rows, as_of


@pytest.mark.parametrize("seed", range(4))
def test_fast_summary_equals_reference_on_random_districts(seed):
    rng = random.Random(seed)
    for _ in range(75):  # 4 x 75 = 300 districts
        calendar, enrollment, attendance, codes, code_rows, as_of = random_district(rng)
        att = attendance_frame(attendance)
        code_frame = pl.DataFrame(code_rows, schema=ABSENCE_CODES_SCHEMA, orient="row")

        categorized = categorize_attendance(att, code_frame)
        expected_days = [reference_day(sc, a, p, codes) for _, sc, _, a, p in attendance]
        assert list(zip(categorized["absence_category"], categorized["is_truancy_day"], strict=True)) == expected_days
        assert categorized["is_full_day_absence"].to_list() == [c in FULL_DAY for c, _ in expected_days]

        fast = student_attendance_summary(
            calendar=pl.DataFrame(calendar, schema=CALENDAR_SCHEMA, orient="row"),
            enrollment=enrollment_frame(enrollment),
            attendance=att,
            absence_codes=code_frame,
            school_year=YEAR,
            as_of_date=as_of,
        )
        assert fast.schema == pl.Schema(SUMMARY_SCHEMA)
        got = {(r["student_id"], r["school_code"]): r for r in fast.iter_rows(named=True)}
        assert fast.height == len(got)
        expected = reference_summary(calendar, enrollment, attendance, codes, YEAR, as_of)
        assert got == expected
