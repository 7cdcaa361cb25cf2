"""i-Ready growth (contract §3 ``aptool.iready_growth``, §4.6) on small hand-built frames, one boundary at a time,
then against a plain-Python reference (exact fractions, one loop per student) on seeded random districts."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from aptool_assets.rules.growth import GROWTH_SCHEMA, GROWTH_STATUSES, iready_growth, one_decimal

YEAR = 2024
SCHOOL = 101
DIAG_SCHEMA = {
    "student_id": pl.Int64,
    "subject": pl.Utf8,
    "academic_year": pl.Int32,
    "completion_date": pl.Date,
    "overall_scale_score": pl.Int32,
    "is_baseline": pl.Boolean,
    "annual_typical_growth_measure": pl.Int32,
    "annual_stretch_growth_measure": pl.Int32,
}


def diag(rows: list[tuple]) -> pl.DataFrame:
    """rows: (student_id, subject, completion_date, score, is_baseline, typical, stretch[, academic_year])."""
    full = [(r[0], r[1], r[7] if len(r) > 7 else YEAR, r[2], r[3], r[4], r[5], r[6]) for r in rows]
    return pl.DataFrame(full, schema=DIAG_SCHEMA, orient="row")


def calendar(school_code: int, first: date, n_days: int, holidays: dict[int, str] | None = None) -> pl.DataFrame:
    """``n_days`` consecutive calendar days from ``first``; day i carries ``holidays[i]`` (default '')."""
    holidays = holidays or {}
    return pl.DataFrame(
        {
            "school_code": [school_code] * n_days,
            "calendar_date": [first + timedelta(days=i) for i in range(n_days)],
            "holiday_code": [holidays.get(i, "") for i in range(n_days)],
        },
        schema={"school_code": pl.Int32, "calendar_date": pl.Date, "holiday_code": pl.Utf8},
    )


def schools(*pairs: tuple[int, int]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema={"student_id": pl.Int64, "school_code": pl.Int32}, orient="row")


# Ten instructional days at school 101: Sep 2..11; completing on Sep 6 means 5 of 10 have elapsed.
SEP = date(2024, 9, 2)
CAL = calendar(SCHOOL, SEP, 10)
HALF = SEP + timedelta(days=4)


def growth(rows: list[tuple], cal: pl.DataFrame | None = CAL, students=None, year: int = YEAR) -> pl.DataFrame:
    students = schools(*{(r[0], SCHOOL) for r in rows if r[0] is not None}) if students is None else students
    return iready_growth(diag(rows), cal, students, school_year=year)


def only(frame: pl.DataFrame) -> dict:
    assert frame.height == 1, frame
    return frame.row(0, named=True)


def status_at_half(growth_points: int, typical: int = 20, stretch: int = 40) -> str:
    """Baseline 500 on Sep 2, latest 500 + growth on Sep 6 (share 1/2)."""
    rows = [(1, "ela", SEP, 500, True, typical, stretch), (1, "ela", HALF, 500 + growth_points, False, None, None)]
    return only(growth(rows))["growth_status"]


# --- the table's shape ---------------------------------------------------------------------------------


def test_schema_and_one_row_per_student_subject():
    rows = [
        (1, "ela", SEP, 500, True, 20, 40),
        (1, "ela", HALF, 512, False, 20, 40),
        (1, "math", SEP, 480, True, 15, 30),
        (2, "math", HALF, 470, True, 15, 30),
    ]
    out = growth(rows)
    assert out.schema == pl.Schema(GROWTH_SCHEMA)
    assert out.select("student_id", "subject").rows() == [(1, "ela"), (1, "math"), (2, "math")]
    first = out.row(0, named=True)
    assert first == {
        "school_year": YEAR,
        "student_id": 1,
        "subject": "ela",
        "baseline_completion_date": SEP,
        "baseline_scale_score": 500,
        "latest_completion_date": HALF,
        "latest_scale_score": 512,
        "growth_to_date": 12,
        "annual_typical_growth": 20,
        "annual_stretch_growth": 40,
        "pct_typical_growth": 60.0,
        "pct_stretch_growth": 30.0,
        "growth_status": "on_track_typical",
    }
    assert set(out.get_column("growth_status")) <= set(GROWTH_STATUSES)


def test_empty_inputs_give_an_empty_typed_table():
    out = iready_growth(diag([]), None, None, school_year=YEAR)
    assert out.is_empty() and out.schema == pl.Schema(GROWTH_SCHEMA)


def test_null_student_ids_and_other_years_are_ignored():
    rows = [
        (None, "ela", SEP, 500, True, 20, 40),
        (None, "ela", HALF, 600, False, 20, 40),
        (3, "ela", SEP, 500, True, 20, 40, YEAR - 1),
        (3, "ela", HALF, 400, False, 20, 40, YEAR + 1),
        (4, "math", SEP, 500, True, 20, 40),
    ]
    out = growth(rows)
    assert out.select("student_id", "subject").rows() == [(4, "math")]


# --- no_progress_data ------------------------------------------------------------------------------------


def test_a_single_diagnostic_has_no_progress_data():
    row = only(growth([(1, "ela", SEP, 500, True, 20, 40)]))
    assert row["growth_status"] == "no_progress_data"
    assert (row["growth_to_date"], row["pct_typical_growth"], row["pct_stretch_growth"]) == (0, 0.0, 0.0)
    assert row["baseline_completion_date"] == row["latest_completion_date"] == SEP


def test_one_diagnostic_delivered_twice_is_still_a_single_diagnostic():
    rows = [(1, "ela", SEP, 500, True, 20, 40), (1, "ela", SEP, 500, True, 20, 40)]
    assert only(growth(rows))["growth_status"] == "no_progress_data"


def test_a_flagged_baseline_with_nothing_after_it_has_no_progress_data():
    rows = [(1, "ela", SEP, 470, False, None, None), (1, "ela", HALF, 500, True, 20, 40)]
    row = only(growth(rows))
    assert row["baseline_completion_date"] == HALF and row["growth_to_date"] == 0
    assert row["growth_status"] == "no_progress_data"


def test_no_growth_measure_on_the_baseline_has_no_progress_data():
    # The latest row carries measures; only the baseline's count.
    rows = [(1, "ela", SEP, 500, True, None, None), (1, "ela", HALF, 530, False, 20, 40)]
    row = only(growth(rows))
    assert row["annual_typical_growth"] is None and row["pct_typical_growth"] is None
    assert row["growth_status"] == "no_progress_data"


def test_a_measure_of_zero_gives_no_percent():
    rows = [(1, "ela", SEP, 500, True, 0, 0), (1, "ela", HALF, 530, False, 0, 0)]
    row = only(growth(rows))
    assert (row["annual_typical_growth"], row["pct_typical_growth"], row["pct_stretch_growth"]) == (0, None, None)
    assert row["growth_status"] == "no_progress_data"
    # A zero (or missing) stretch measure with a typical one: never on_track_stretch, typical still counts.
    rows = [(1, "ela", SEP, 500, True, 20, 0), (1, "ela", HALF, 530, False, None, None)]
    row = only(growth(rows))
    assert (row["pct_typical_growth"], row["pct_stretch_growth"], row["growth_status"]) == (
        150.0,
        None,
        "on_track_typical",
    )


# --- baseline and latest ----------------------------------------------------------------------------------


def test_baseline_not_flagged_uses_the_earliest_diagnostic():
    rows = [(1, "ela", HALF, 520, False, 25, 45), (1, "ela", SEP, 500, False, 20, 40)]
    row = only(growth(rows))
    assert (row["baseline_completion_date"], row["baseline_scale_score"]) == (SEP, 500)
    assert (row["annual_typical_growth"], row["growth_to_date"]) == (20, 20)


def test_the_flagged_baseline_wins_over_an_earlier_diagnostic_and_the_earliest_flag_over_later_flags():
    day = SEP + timedelta(days=1)
    rows = [
        (1, "ela", SEP, 450, False, 11, 22),
        (1, "ela", day, 500, True, 20, 40),
        (1, "ela", HALF - timedelta(days=1), 505, True, 30, 60),
        (1, "ela", HALF, 510, False, None, None),
    ]
    row = only(growth(rows))
    assert (row["baseline_completion_date"], row["baseline_scale_score"], row["annual_typical_growth"]) == (
        day,
        500,
        20,
    )
    assert row["growth_to_date"] == 10


def test_ties_same_day_retests_take_the_highest_score_as_baseline_and_as_latest():
    rows = [
        (1, "ela", SEP, 480, False, 21, 41),
        (1, "ela", SEP, 500, False, 20, 40),
        (1, "ela", HALF, 505, False, None, None),
        (1, "ela", HALF, 515, False, None, None),
        (1, "ela", HALF, 510, False, None, None),
    ]
    row = only(growth(rows))
    assert (row["baseline_scale_score"], row["annual_typical_growth"], row["latest_scale_score"]) == (500, 20, 515)
    # A day of retests and nothing else: the same diagnostic is both, so there is no progress to show.
    rows = [(2, "math", SEP, 480, False, 20, 40), (2, "math", SEP, 500, False, 20, 40)]
    row = only(growth(rows))
    assert (row["baseline_scale_score"], row["latest_scale_score"], row["growth_status"]) == (
        500,
        500,
        "no_progress_data",
    )


# --- statuses at their boundaries (share 1/2: typical 20 → 10 points, stretch 40 → 20 points) -----------------


def test_growth_exactly_at_typical_times_share_is_on_track_typical():
    assert status_at_half(10) == "on_track_typical"
    assert status_at_half(9) == "below_typical"


def test_growth_exactly_at_stretch_times_share_is_on_track_stretch():
    assert status_at_half(20) == "on_track_stretch"
    assert status_at_half(19) == "on_track_typical"


def test_boundaries_are_exact_where_the_share_has_no_finite_decimal():
    # 1 of 3 instructional days: 10 points of a 30-point measure is exactly a third (pct shows 33.3 < 33.33…).
    cal = calendar(SCHOOL, SEP, 3)
    before = SEP - timedelta(days=1)
    rows = [(1, "ela", before, 500, True, 30, 90), (1, "ela", SEP, 510, False, None, None)]
    row = only(growth(rows, cal))
    assert (row["pct_typical_growth"], row["growth_status"]) == (33.3, "on_track_typical")
    rows[1] = (1, "ela", SEP, 509, False, None, None)
    assert only(growth(rows, cal))["growth_status"] == "below_typical"


def test_negative_growth_is_below_typical_with_negative_percents():
    row = only(growth([(1, "ela", SEP, 500, True, 20, 40), (1, "ela", HALF, 487, False, None, None)]))
    assert row["growth_to_date"] == -13
    assert (row["pct_typical_growth"], row["pct_stretch_growth"], row["growth_status"]) == (
        -65.0,
        -32.5,
        "below_typical",
    )


def test_no_growth_is_on_track_before_the_first_instructional_day():
    # Completed on a non-school day before the calendar's first day: 0 of 10 elapsed, 0 growth is enough.
    rows = [
        (1, "ela", SEP - timedelta(days=5), 500, True, 20, 40),
        (1, "ela", SEP - timedelta(days=1), 500, False, 0, 0),
    ]
    assert only(growth(rows))["growth_status"] == "on_track_stretch"
    rows[1] = (1, "ela", SEP - timedelta(days=1), 499, False, 0, 0)
    assert only(growth(rows))["growth_status"] == "below_typical"


@pytest.mark.parametrize(
    ("points", "measure", "pct"),
    [
        (1, 8, 12.5),  # exact
        (1, 16, 6.3),  # 6.25 → half up
        (-1, 16, -6.2),  # −6.25 → half up is towards +∞
        (1, 3, 33.3),
        (2, 3, 66.7),
        (1, 7, 14.3),
        (-2, 3, -66.7),
        (1, 80, 1.3),  # 1.25
        (3, 80, 3.8),  # 3.75
        (7, 40, 17.5),
        (133, 7, 1900.0),
    ],
)
def test_percent_is_rounded_half_up_to_one_decimal(points, measure, pct):
    row = only(growth([(1, "ela", SEP, 500, True, measure, measure), (1, "ela", HALF, 500 + points, False, 1, 1)]))
    assert row["pct_typical_growth"] == pct and row["pct_stretch_growth"] == pct


def test_one_decimal_is_the_literal_not_a_float_product():
    tenths = pl.Series([33, -7, 0, -25, 123456789, None], dtype=pl.Int64)
    assert pl.select(one_decimal(pl.lit(tenths))).to_series().to_list() == [3.3, -0.7, 0.0, -2.5, 12345678.9, None]


# --- which calendar ------------------------------------------------------------------------------------------


def test_instructional_days_are_regular_and_minimum_days_only():
    # Sep 3..6 are not school days ('#', 'H', ...), Sep 8 is a minimum day: by Sep 6, 1 of 6 days.
    cal = calendar(SCHOOL, SEP, 10, {1: "#", 2: "H", 3: "@", 4: "$", 6: "%"})
    rows = [(1, "ela", SEP, 500, True, 60, 120), (1, "ela", HALF, 510, False, None, None)]
    assert only(growth(rows, cal))["growth_status"] == "on_track_typical"  # 10/60 = 1/6 ≥ 1/6 exactly
    rows[1] = (1, "ela", HALF, 509, False, None, None)
    assert only(growth(rows, cal))["growth_status"] == "below_typical"


def test_a_student_without_a_school_uses_the_district_calendar():
    # District (school 0): 4 instructional days, Sep 6 is the 4th → share 1. School 101: share 1/2.
    cal = pl.concat([CAL, calendar(0, SEP + timedelta(days=1), 4)])
    rows = [(1, "ela", SEP, 500, True, 20, 40), (1, "ela", HALF, 515, False, None, None)]
    assert only(growth(rows, cal))["growth_status"] == "on_track_typical"  # own school: 15 ≥ 10
    assert only(growth(rows, cal, students=schools()))["growth_status"] == "below_typical"  # district: 15 < 20
    assert only(growth(rows, cal, students=schools((2, SCHOOL))))["growth_status"] == "below_typical"
    # A school without a calendar (or without school days that year) falls back to the district's too.
    assert only(growth(rows, cal, students=schools((1, 999))))["growth_status"] == "below_typical"
    assert only(iready_growth(diag(rows), cal, None, school_year=YEAR))["growth_status"] == "below_typical"


def test_without_any_calendar_the_share_is_of_calendar_days():
    # July 1 .. Dec 30 2024 is 183 of the 365 days of 2024-25: exactly 183/365 of a 365-point measure.
    day = date(2024, 12, 30)
    rows = [(1, "ela", date(2024, 8, 1), 300, True, 365, 730), (1, "ela", day, 483, False, None, None)]
    assert only(growth(rows, None))["growth_status"] == "on_track_typical"
    rows[1] = (1, "ela", day, 482, False, None, None)
    assert only(growth(rows, None))["growth_status"] == "below_typical"
    # Another year's calendar is no calendar for this one.
    assert only(growth(rows, calendar(SCHOOL, date(2023, 9, 1), 5)))["growth_status"] == "below_typical"


def test_the_school_entered_last_is_the_students_school():
    other = calendar(202, SEP, 5)  # Sep 6 is the 5th of 5 days: share 1
    cal = pl.concat([CAL, other])
    rows = [(1, "ela", SEP, 500, True, 20, 40), (1, "ela", HALF, 515, False, None, None)]
    by_code = schools((1, 202), (1, SCHOOL))
    assert only(growth(rows, cal, students=by_code))["growth_status"] == "on_track_typical"  # lowest code: 101
    entered = by_code.with_columns(pl.Series("school_enter_date", [date(2024, 8, 20), date(2024, 8, 1)]))
    assert only(growth(rows, cal, students=entered))["growth_status"] == "below_typical"  # entered last: 202
