"""Academic rules (contract §4.2-4.3) on small hand-built frames, one boundary at a time."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest

from aptool_assets.rules.academic import (
    DEFAULT_WINDOWS,
    RELATIVE_PLACEMENTS,
    RISK_BY_RELATIVE_PLACEMENT,
    AssessmentWindows,
    assessment_window_expr,
    latest_diagnostics,
    student_academic_risk,
)


def _windows(dates: list[date], year: int = 2024, windows: AssessmentWindows = DEFAULT_WINDOWS) -> list[str | None]:
    df = pl.DataFrame(
        {"completion_date": dates, "academic_year": [year] * len(dates)},
        schema={"completion_date": pl.Date, "academic_year": pl.Int32},
    )
    return df.select(assessment_window_expr(windows)).to_series().to_list()


def _diag(rows: list[tuple]) -> pl.DataFrame:
    """rows: (student_id, subject, academic_year, completion_date, scale score, relative placement)."""
    return pl.DataFrame(
        rows,
        schema={
            "student_id": pl.Int64,
            "subject": pl.Utf8,
            "academic_year": pl.Int32,
            "completion_date": pl.Date,
            "overall_scale_score": pl.Int32,
            "overall_relative_placement": pl.Utf8,
        },
        orient="row",
    )


# --- windows ---------------------------------------------------------------------------------


def test_default_window_boundaries():
    assert _windows([date(2024, 11, 15), date(2024, 11, 16)]) == ["BOY", "MOY"]
    assert _windows([date(2025, 3, 1), date(2025, 3, 2)]) == ["MOY", "EOY"]
    assert _windows([date(2024, 7, 1), date(2025, 6, 30)]) == ["BOY", "EOY"]
    assert _windows([date(2024, 12, 31), date(2025, 1, 1)]) == ["MOY", "MOY"]


def test_window_of_leap_year_february():
    # Feb 29 of the 2023-24 year is still MOY; Mar 1 is the last MOY day in a leap year too.
    assert _windows([date(2024, 2, 29), date(2024, 3, 1), date(2024, 3, 2)], year=2023) == ["MOY", "MOY", "EOY"]


def test_window_dates_outside_the_year_clamp_instead_of_wrapping():
    # A June date labelled with the *next* academic year is before its BOY end, not EOY.
    assert _windows([date(2024, 6, 20)], year=2024) == ["BOY"]
    assert _windows([date(2025, 7, 3)], year=2024) == ["EOY"]


def test_window_accepts_datetime_columns():
    df = pl.DataFrame(
        {
            "completion_date": [datetime(2024, 11, 15, 23, 59), datetime(2024, 11, 16, 0, 1)],
            "academic_year": [2024, 2024],
        }
    )
    assert df.select(assessment_window_expr()).to_series().to_list() == ["BOY", "MOY"]


def test_window_nulls():
    df = pl.DataFrame(
        {"completion_date": [None, date(2024, 9, 1)], "academic_year": [2024, None]},
        schema={"completion_date": pl.Date, "academic_year": pl.Int32},
    )
    assert df.select(assessment_window_expr()).to_series().to_list() == [None, None]


def test_configurable_windows_pre_2020_vendor_dates():
    old = AssessmentWindows(boy_last_day=(11, 30), moy_last_day=(3, 15))
    got = _windows([date(2019, 11, 30), date(2019, 12, 1), date(2020, 3, 15), date(2020, 3, 16)], 2019, old)
    assert got == ["BOY", "MOY", "MOY", "EOY"]


def test_window_year_derived_from_date():
    df = pl.DataFrame({"d": [date(2025, 3, 1), date(2025, 3, 2), date(2024, 11, 16)]})
    got = df.select(assessment_window_expr(date_col="d", year_col=None)).to_series().to_list()
    assert got == ["MOY", "EOY", "MOY"]


@pytest.mark.parametrize(
    "boy, moy",
    [((13, 1), (3, 1)), ((11, 31), (3, 1)), ((2, 29), (3, 1)), ((3, 1), (11, 15)), ((11, 15), (6, 30))],
)
def test_invalid_windows_are_refused(boy, moy):
    with pytest.raises(ValueError):
        AssessmentWindows(boy_last_day=boy, moy_last_day=moy)


# --- latest diagnostic -----------------------------------------------------------------------


def test_latest_takes_latest_completion_date():
    df = _diag(
        [
            (1, "ela", 2024, date(2024, 9, 1), 500, "1 Grade Level Below"),
            (1, "ela", 2024, date(2025, 1, 10), 450, "2 Grade Levels Below"),
            (1, "ela", 2024, date(2024, 12, 1), 600, "Mid or Above Grade Level"),
        ]
    )
    out = latest_diagnostics(df)
    assert out.height == 1
    assert out.row(0, named=True)["completion_date"] == date(2025, 1, 10)
    assert out.row(0, named=True)["overall_scale_score"] == 450


def test_latest_tie_on_completion_date_takes_highest_score():
    df = _diag(
        [
            (1, "math", 2024, date(2025, 1, 10), 480, "1 Grade Level Below"),
            (1, "math", 2024, date(2025, 1, 10), 510, "Early On Grade Level"),
            (1, "math", 2024, date(2025, 1, 10), 495, "1 Grade Level Below"),
        ]
    )
    out = latest_diagnostics(df)
    assert out.select("overall_scale_score", "overall_relative_placement").row(0) == (510, "Early On Grade Level")


def test_latest_is_per_student_subject_and_year():
    df = _diag(
        [
            (1, "ela", 2024, date(2024, 9, 1), 500, "Mid or Above Grade Level"),
            (1, "math", 2024, date(2024, 9, 2), 510, "Mid or Above Grade Level"),
            (1, "ela", 2023, date(2024, 5, 1), 490, "Mid or Above Grade Level"),
            (2, "ela", 2024, date(2024, 9, 3), 400, "Mid or Above Grade Level"),
        ]
    )
    out = latest_diagnostics(df)
    assert out.height == 4
    assert out.select("student_id", "subject", "academic_year").rows() == [
        (1, "ela", 2023),
        (1, "ela", 2024),
        (1, "math", 2024),
        (2, "ela", 2024),
    ]


# --- risk ------------------------------------------------------------------------------------


def test_risk_mapping_covers_every_relative_placement():
    assert set(RISK_BY_RELATIVE_PLACEMENT) == set(RELATIVE_PLACEMENTS)
    assert RELATIVE_PLACEMENTS[0] == "Mid or Above Grade Level"
    assert RELATIVE_PLACEMENTS[-1] == "3 or More Grade Levels Below"


@pytest.mark.parametrize(
    "placement, risk",
    [
        ("Mid or Above Grade Level", "LOW"),
        ("Early On Grade Level", "LOW"),
        ("1 Grade Level Below", "MEDIUM"),
        ("2 Grade Levels Below", "HIGH"),
        ("3 or More Grade Levels Below", "HIGH"),
    ],
)
def test_every_relative_placement_maps_to_its_risk(placement, risk):
    out = student_academic_risk(_diag([(7, "ela", 2024, date(2024, 9, 1), 500, placement)]), 2024)
    row = out.row(0, named=True)
    assert (row["ela_relative_placement"], row["ela_risk"], row["overall_risk"]) == (placement, risk, risk)
    assert row["math_risk"] is None and row["math_relative_placement"] is None


def test_overall_risk_is_the_worse_subject():
    df = _diag(
        [
            (1, "ela", 2024, date(2024, 9, 1), 500, "Mid or Above Grade Level"),
            (1, "math", 2024, date(2024, 9, 1), 500, "2 Grade Levels Below"),
            (2, "ela", 2024, date(2024, 9, 1), 500, "1 Grade Level Below"),
            (2, "math", 2024, date(2024, 9, 1), 500, "Early On Grade Level"),
        ]
    )
    out = student_academic_risk(df, 2024)
    assert out.select("student_id", "ela_risk", "math_risk", "overall_risk").rows() == [
        (1, "LOW", "HIGH", "HIGH"),
        (2, "MEDIUM", "LOW", "MEDIUM"),
    ]


def test_risk_uses_the_latest_diagnostic_per_subject():
    df = _diag(
        [
            (1, "math", 2024, date(2024, 9, 1), 420, "3 or More Grade Levels Below"),
            (1, "math", 2024, date(2025, 3, 2), 520, "Early On Grade Level"),
        ]
    )
    row = student_academic_risk(df, 2024).row(0, named=True)
    assert row["math_risk"] == "LOW"
    assert row["math_completion_date"] == date(2025, 3, 2)
    assert row["ela_completion_date"] is None


def test_roster_only_students_are_unknown_and_other_years_ignored():
    df = _diag(
        [
            (1, "ela", 2024, date(2024, 9, 1), 500, "1 Grade Level Below"),
            (3, "ela", 2023, date(2024, 3, 1), 500, "3 or More Grade Levels Below"),  # last year: ignored
        ]
    )
    roster = pl.Series([3, 2, 2, None, 1], dtype=pl.Int64)
    out = student_academic_risk(df, 2024, roster_student_ids=roster)
    assert out.select("student_id", "overall_risk").rows() == [(1, "MEDIUM"), (2, "UNKNOWN"), (3, "UNKNOWN")]
    unknown = out.filter(pl.col("student_id") == 2).row(0, named=True)
    assert unknown["ela_risk"] is None and unknown["math_risk"] is None
    assert unknown["ela_relative_placement"] is None and unknown["math_completion_date"] is None


def test_results_of_no_roster_student_get_no_risk_row():
    """Contract v2: one row per roster student; results that map to no student (null or off the roster) are
    counted by the iready_students_matched check, not given a risk row."""
    df = _diag(
        [
            (9, "math", 2024, date(2024, 9, 1), 500, "Mid or Above Grade Level"),
            (None, "ela", 2024, date(2024, 9, 1), 500, "3 or More Grade Levels Below"),
        ]
    )
    out = student_academic_risk(df, 2024, roster_student_ids=pl.Series([1], dtype=pl.Int64))
    assert out.select("student_id", "overall_risk").rows() == [(1, "UNKNOWN")]
    without_roster = student_academic_risk(df, 2024)
    assert without_roster.get_column("student_id").to_list() == [9]


def test_risk_output_schema_and_empty_input():
    out = student_academic_risk(_diag([]), 2024)
    assert out.is_empty()
    assert out.schema == pl.Schema(
        {
            "school_year": pl.Int32,
            "student_id": pl.Int64,
            "ela_relative_placement": pl.Utf8,
            "math_relative_placement": pl.Utf8,
            "ela_risk": pl.Utf8,
            "math_risk": pl.Utf8,
            "overall_risk": pl.Utf8,
            "ela_completion_date": pl.Date,
            "math_completion_date": pl.Date,
        }
    )
    roster_only = student_academic_risk(_diag([]), 2024, pl.Series([5, 4]))
    assert roster_only.select("school_year", "student_id", "overall_risk").rows() == [
        (2024, 4, "UNKNOWN"),
        (2024, 5, "UNKNOWN"),
    ]
