"""Chronic Absenteeism Indicator (contract §4.5): rates rounded half up at exact fractions, every status and
change cut after rounding, who is eligible (grades, 31 days, one day attended), exactly 10%, students at two
schools, no prior year, n-size, and students without a groups row."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import polars as pl
import pytest

from aptool_assets.rules.indicator import INDICATOR_SCHEMA, chronic_absenteeism_indicator
from aptool_assets.vocabulary import STUDENT_GROUPS
from aptool_assets_tests.indicator_helpers import (
    AS_OF,
    NOW,
    S1,
    S2,
    YEAR,
    cohort,
    frame,
    groups_at,
    indicator,
    rec,
    row,
)

# --- rates and status levels ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("eligible", "chronic", "rate", "status"),
    [
        (11, 0, 0.0, "very_low"),
        (2000, 49, 2.5, "very_low"),  # 2.45 → 2.5
        (40, 1, 2.5, "very_low"),  # exactly 2.5
        (1961, 50, 2.5, "very_low"),  # 2.5497… → 2.5
        (2000, 51, 2.6, "low"),  # exactly 2.55 → 2.6 (half up)
        (500, 13, 2.6, "low"),
        (30, 1, 3.3, "low"),  # 3.333…
        (40, 2, 5.0, "low"),
        (2000, 101, 5.1, "medium"),  # 5.05 → 5.1
        (40, 4, 10.0, "medium"),
        (2000, 201, 10.1, "high"),  # 10.05 → 10.1
        (2000, 399, 20.0, "high"),  # 19.95 → 20.0
        (40, 8, 20.0, "high"),
        (2000, 401, 20.1, "very_high"),  # 20.05 → 20.1
        (11, 11, 100.0, "very_high"),
    ],
)
def test_rate_is_rounded_half_up_and_status_follows_the_rounded_rate(eligible, chronic, rate, status):
    table = indicator(cohort(1, eligible, chronic))
    got = row(table)
    assert (got["eligible_count"], got["chronic_count"]) == (eligible, chronic)
    assert got["rate_pct"] == rate  # the one-decimal value as the nearest double: 2.6 is the literal 2.6
    assert got["status_level"] == status


# --- change ----------------------------------------------------------------------------------------


def change(current: tuple[int, int], prior: tuple[int, int]) -> dict:
    """The ALL row of a school with (eligible, chronic) this year and last year."""
    return row(indicator(cohort(1, *current), cohort(1, *prior, year=YEAR - 1)))


@pytest.mark.parametrize(
    ("current", "prior", "rates", "delta", "level"),
    [
        ((40, 1), (50, 1), (2.5, 2.0), 0.5, "increased"),
        ((40, 1), (1000, 21), (2.5, 2.1), 0.4, "maintained"),
        ((40, 1), (40, 1), (2.5, 2.5), 0.0, "maintained"),
        ((40, 1), (1000, 29), (2.5, 2.9), -0.4, "maintained"),
        ((40, 1), (100, 3), (2.5, 3.0), -0.5, "declined"),
        ((40, 2), (1000, 21), (5.0, 2.1), 2.9, "increased"),
        ((40, 2), (50, 1), (5.0, 2.0), 3.0, "increased_significantly"),
        ((1000, 21), (40, 2), (2.1, 5.0), -2.9, "declined"),
        ((50, 1), (40, 2), (2.0, 5.0), -3.0, "declined_significantly"),
        ((40, 8), (40, 1), (20.0, 2.5), 17.5, "increased_significantly"),
        # The change is taken between the *rounded* rates: 2.55 → 2.6 and 2.142… → 2.1 differ by 0.5
        # (increased) though the exact rates differ by 0.41; 2.5497… → 2.5 and 2.05 → 2.1 differ by 0.4
        # (maintained) though the exact rates differ by 0.4997…, and the same the other way round.
        ((2000, 51), (140, 3), (2.6, 2.1), 0.5, "increased"),
        ((1961, 50), (2000, 41), (2.5, 2.1), 0.4, "maintained"),
        ((2000, 41), (1961, 50), (2.1, 2.5), -0.4, "maintained"),
    ],
)
def test_change_of_the_rounded_rates_and_its_level(current, prior, rates, delta, level):
    got = change(current, prior)
    assert (got["rate_pct"], got["prior_rate_pct"]) == rates
    assert got["change_pct"] == delta  # exact one-decimal value, not 2.6 - 2.1 = 0.5000000000000004
    assert got["change_level"] == level
    assert (got["prior_eligible_count"], got["prior_chronic_count"]) == prior


# --- eligibility -----------------------------------------------------------------------------------


def filler(first_id: int = 1000, n: int = 20, **fields) -> list[dict]:
    """Eligible students who were never absent, so the counts of interest are published."""
    return cohort(first_id, n, 0, **fields)


@pytest.mark.parametrize(
    ("grade", "counted"),
    [(-2, False), (-1, True), (0, True), (5, True), (8, True), (9, False), (12, False), (None, False)],
)
def test_grades_tk_through_8(grade, counted):
    table = indicator([*filler(), rec(1, grade=grade, absent=10)])
    got = row(table)
    assert (got["eligible_count"], got["chronic_count"]) == ((21, 1) if counted else (20, 0))


@pytest.mark.parametrize(
    ("enrolled", "absent", "eligible", "chronic"),
    [
        (30, 3, False, False),  # 30 days: too few
        (31, 3, True, False),  # 31 days, 9.7%
        (31, 4, True, True),  # 31 days, 12.9%
        (40, 4, True, True),  # exactly 10%
        (40, 3, True, False),
        (41, 4, True, False),  # 9.76%
        (50, 5, True, True),
        (40, 39, True, True),  # one day attended
        (40, 40, False, False),  # never attended
        (40, 0, True, False),
        (0, 0, False, False),
    ],
)
def test_days_enrolled_attended_and_exactly_ten_percent(enrolled, absent, eligible, chronic):
    table = indicator([*filler(), rec(1, enrolled=enrolled, absent=absent)])
    got = row(table)
    assert got["eligible_count"] == 20 + eligible
    assert got["chronic_count"] == int(chronic)
    assert row(table, level="district")["chronic_count"] == int(chronic)


def test_a_group_with_no_eligible_student_has_no_row():
    table = indicator([*filler(race="HI"), rec(1, race="WH", grade=9), rec(2, race="AA", enrolled=20)])
    assert groups_at(table) == ["ALL", "HI"]
    assert groups_at(table, level="district") == ["ALL", "HI"]


# --- students at two schools -----------------------------------------------------------------------


def test_a_student_at_two_schools_counts_at_each_and_once_in_the_district():
    rows = [
        *filler(1000, 20, school=S1),
        *filler(2000, 20, school=S2),
        rec(1, school=S1, enrolled=40, absent=4, entered=date(2025, 8, 13)),  # chronic here
        rec(1, school=S2, enrolled=40, absent=0, entered=date(2025, 11, 3)),  # not here
    ]
    table = indicator(rows)
    assert (row(table, school=S1)["eligible_count"], row(table, school=S1)["chronic_count"]) == (21, 1)
    assert (row(table, school=S2)["eligible_count"], row(table, school=S2)["chronic_count"]) == (21, 0)
    district = row(table, level="district")
    # Once, on the summed days: 4 of 80 = 5% → not chronic in the district.
    assert (district["eligible_count"], district["chronic_count"]) == (41, 0)


def test_district_sums_days_that_are_too_few_at_each_school():
    rows = [
        *filler(1000, 20, school=S1),
        *filler(2000, 20, school=S2),
        rec(1, school=S1, grade=3, enrolled=20, absent=2, entered=date(2025, 8, 13)),
        rec(1, school=S2, grade=4, enrolled=25, absent=3, entered=date(2025, 11, 3)),
    ]
    table = indicator(rows)
    assert row(table, school=S1)["eligible_count"] == 20
    assert row(table, school=S2)["eligible_count"] == 20
    district = row(table, level="district")
    assert (district["eligible_count"], district["chronic_count"]) == (41, 1)  # 5 of 45 days


@pytest.mark.parametrize(
    ("first_grade", "last_grade", "district_counted"),
    [(8, 9, False), (9, 8, True), (-1, 0, True)],
)
def test_district_takes_the_grade_of_the_record_entered_last(first_grade, last_grade, district_counted):
    rows = [
        *filler(1000, 20, school=S1),
        rec(1, school=S2, grade=last_grade, absent=4, entered=date(2026, 1, 5)),  # row order does not matter
        rec(1, school=S1, grade=first_grade, absent=4, entered=date(2025, 8, 13)),
    ]
    table = indicator(rows)
    assert row(table, school=S1)["eligible_count"] == 20 + (first_grade <= 8)
    assert row(table, level="district")["eligible_count"] == 20 + district_counted


def test_district_takes_the_groups_of_the_record_entered_last():
    rows = [
        *filler(1000, 20, school=S1, race="HI"),
        rec(1, school=S1, race="WH", entered=date(2025, 8, 13)),
        rec(1, school=S2, race="AA", entered=date(2025, 12, 1)),
    ]
    table = indicator(rows)
    assert "WH" in groups_at(table, school=S1) and "AA" in groups_at(table, school=S2)
    assert groups_at(table, level="district") == ["ALL", "AA", "HI"]


# --- prior year, n-size, groups --------------------------------------------------------------------


@pytest.mark.parametrize("prior", [None, [], "other year"])
def test_no_prior_year_leaves_prior_figures_and_change_null(prior):
    if prior == "other year":
        prior = cohort(1, 40, 4, year=YEAR - 2)  # rows of another year are not the prior year
    got = row(indicator(cohort(1, 40, 1), prior))
    assert got["rate_pct"] == 2.5 and got["status_level"] == "very_low"
    for col in ("prior_eligible_count", "prior_chronic_count", "prior_rate_pct", "change_pct", "change_level"):
        assert got[col] is None, col


def test_a_group_new_this_year_has_zero_prior_eligible_students():
    table = indicator([*cohort(1, 20, 1, race="HI"), *cohort(100, 12, 1, race="WH")], cohort(1, 20, 2, year=YEAR - 1))
    got = row(table, "WH")
    assert got["prior_eligible_count"] == 0
    assert got["prior_chronic_count"] is None and got["prior_rate_pct"] is None and got["change_pct"] is None
    assert row(table, "HI")["change_pct"] == -5.0


@pytest.mark.parametrize(("eligible", "met"), [(29, False), (30, True), (11, False), (400, True)])
def test_n_size_met_from_30_eligible(eligible, met):
    assert row(indicator(cohort(1, eligible, 1)))["n_size_met"] is met


def test_each_group_counts_its_flagged_students():
    rows = [
        *cohort(1, 12, 2, race="AS", is_english_learner=True),
        *cohort(100, 13, 1, race="MR", is_socioeconomically_disadvantaged=True, is_homeless=True),
        *cohort(200, 14, 3, race="NR", is_student_with_disability=True, is_foster_youth=True),
    ]
    table = indicator(rows)
    counts = {g: (r["eligible_count"], r["chronic_count"]) for g in STUDENT_GROUPS if (r := row(table, g))}
    assert counts == {
        "ALL": (39, 6),
        "AS": (12, 2),
        "MR": (13, 1),
        "NR": (14, 3),
        "EL": (12, 2),
        "SED": (13, 1),
        "SWD": (14, 3),
        "FOS": (14, 3),
        "HOM": (13, 1),
    }


def test_a_student_without_a_groups_row_counts_only_in_all():
    rows = [*cohort(1, 12, 0, race="HI", is_english_learner=True), rec(99, absent=4, groups=False)]
    table = indicator(rows)
    assert (row(table)["eligible_count"], row(table)["chronic_count"]) == (13, 1)
    assert (row(table, "HI")["eligible_count"], row(table, "HI")["chronic_count"]) == (12, 0)
    assert (row(table, "EL")["eligible_count"], row(table, "EL")["chronic_count"]) == (12, 0)
    assert row(table, "NR") is None
    assert groups_at(table) == ["ALL", "HI", "EL"]


# --- shape and inputs ------------------------------------------------------------------------------


def test_shape_order_and_stamps():
    rows = [*filler(1000, 12, school=S2, race="WH"), *filler(2000, 12, school=S1, race="HI", is_homeless=True)]
    table = indicator(rows, as_of_date=date(2026, 8, 15))
    assert table.schema == pl.Schema(INDICATOR_SCHEMA)
    keys = table.select("level", "school_code", "student_group").rows()
    assert keys == [
        ("district", 0, "ALL"),
        ("district", 0, "HI"),
        ("district", 0, "WH"),
        ("district", 0, "HOM"),
        ("school", S1, "ALL"),
        ("school", S1, "HI"),
        ("school", S1, "HOM"),
        ("school", S2, "ALL"),
        ("school", S2, "WH"),
    ]
    assert table["school_year"].unique().to_list() == [YEAR]
    assert table["as_of_date"].unique().to_list() == [date(2026, 6, 30)]  # capped at the year's end
    assert table["computed_at"].unique().to_list() == [NOW]


def test_computed_at_is_utc_and_defaults_to_now():
    before = datetime.now(UTC)
    stamped = indicator(filler(), computed_at=None)["computed_at"][0]
    assert before <= stamped <= datetime.now(UTC)
    pacific = datetime(2025, 10, 1, 5, 0, tzinfo=timezone(timedelta(hours=-7)))
    assert indicator(filler(), computed_at=pacific)["computed_at"][0] == datetime(2025, 10, 1, 12, 0, tzinfo=UTC)


def test_rows_of_other_years_are_ignored():
    table = indicator([*filler(), *cohort(1, 40, 40, year=YEAR + 1)])
    assert row(table)["eligible_count"] == 20


def test_empty_current_gives_an_empty_table():
    table = indicator([], cohort(1, 20, 2, year=YEAR - 1))
    assert table.height == 0 and table.schema == pl.Schema(INDICATOR_SCHEMA)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([rec(1), rec(1)], r"repeats \(student_id, school_code\): \[\(1, 101\)\]"),
        ([rec(1, race="XX")], r"unknown race_ethnicity \['XX'\]"),
    ],
)
def test_inputs_that_cannot_be_right_are_refused(rows, message):
    with pytest.raises(ValueError, match=message):
        indicator(rows)


def test_missing_input_column_is_named():
    with pytest.raises(ValueError, match="grade"):
        chronic_absenteeism_indicator(frame([rec(1)]).drop("grade"), None, school_year=YEAR, as_of_date=AS_OF)
