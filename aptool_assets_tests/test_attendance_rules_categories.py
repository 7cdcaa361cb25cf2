"""Attendance rules (contract §4.1), one boundary at a time: which calendar days count, chronic absence
and the tiers, how each code is categorized, partial days, truancy and the truancy letters."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from aptool_assets.rules.attendance import (
    ABSENCE_CATEGORIES,
    ATTENDANCE_SCHEMA,
    attendance_tier_expr,
    categorize_attendance,
    truancy_letter_level_expr,
)
from aptool_assets.rules.enrollment import instructional_days
from aptool_assets.vocabulary import TIERS
from aptool_assets_tests.attendance_helpers import (
    FIRST_DAY,
    S1,
    S2,
    absent_days,
    attendance_frame,
    calendar_frame,
    codes_frame,
    enrollment_frame,
    one_school,
    summarize,
    weekdays,
)

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
