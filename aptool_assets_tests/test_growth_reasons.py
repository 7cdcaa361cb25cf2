"""The growth part of the ranking's reasons (rules/reasons.py): "reading: 12% of typical growth by mid-year" for a
subject below typical growth, nothing for anyone else, built only from REASON_COLUMNS; and ``growth_columns``,
which turns ``aptool.iready_growth`` into the one row per student those columns come from."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from aptool_assets.rules.growth import GROWTH_SCHEMA, iready_growth
from aptool_assets.rules.reasons import (
    GROWTH_REASON_SCHEMA,
    GROWTH_WINDOW_WORDS,
    REASON_COLUMNS,
    growth_columns,
    growth_reason_expr,
    growth_window_phrase,
    reasons_expr,
)

COLUMNS = {
    "ela_pct_typical_growth": pl.Float64,
    "ela_growth_status": pl.Utf8,
    "ela_growth_window": pl.Utf8,
    "math_pct_typical_growth": pl.Float64,
    "math_growth_status": pl.Utf8,
    "math_growth_window": pl.Utf8,
}


def reason(ela: tuple = (None, None, None), math: tuple = (None, None, None)) -> str | None:
    """The growth reason of one student: (pct_typical_growth, growth_status, growth_window) per subject."""
    frame = pl.DataFrame([(*ela, *math)], schema=COLUMNS, orient="row")
    return frame.select(growth_reason_expr()).item()


def test_below_typical_gives_the_subject_percent_and_window():
    assert reason(ela=(12.0, "below_typical", "MOY")) == "reading: 12% of typical growth by mid-year"
    assert reason(math=(40.5, "below_typical", "BOY")) == "math: 40% of typical growth by fall"
    assert reason(ela=(88.8, "below_typical", "EOY")) == "reading: 88% of typical growth by spring"


def test_both_subjects_are_joined_reading_first():
    text = reason(ela=(12.3, "below_typical", "MOY"), math=(0.0, "below_typical", "MOY"))
    assert text == "reading: 12% of typical growth by mid-year; math: 0% of typical growth by mid-year"


@pytest.mark.parametrize(
    ("pct", "shown"),
    [
        (12.9, "12"),
        (12.0, "12"),
        (99.9, "99"),
        (0.4, "0"),
        (-0.5, "0"),
        (-40.9, "-40"),
        (-152.9, "-152"),
        (1900.0, "1900"),
    ],
)
def test_the_percent_is_truncated_towards_zero(pct, shown):
    assert reason(ela=(pct, "below_typical", "EOY")) == f"reading: {shown}% of typical growth by spring"


@pytest.mark.parametrize("status", ["on_track_stretch", "on_track_typical", "no_progress_data", None])
def test_nothing_to_say_for_students_who_are_not_below_typical(status):
    assert reason(ela=(5.0, status, "MOY"), math=(3.0, status, "EOY")) is None
    # Only the subject below typical is named.
    assert (
        reason(ela=(5.0, status, "MOY"), math=(3.0, "below_typical", "EOY")) == "math: 3% of typical growth by spring"
    )


def test_an_unknown_window_leaves_the_phrase_out():
    assert reason(ela=(12.0, "below_typical", None)) == "reading: 12% of typical growth"
    assert reason(ela=(12.0, "below_typical", "XYZ")) == "reading: 12% of typical growth"


def test_window_phrases():
    assert GROWTH_WINDOW_WORDS == {"BOY": "by fall", "MOY": "by mid-year", "EOY": "by spring"}
    frame = pl.DataFrame({"w": ["BOY", "MOY", "EOY", None, "mid"]})
    assert frame.select(growth_window_phrase("w")).to_series().to_list() == [
        "by fall",
        "by mid-year",
        "by spring",
        None,
        None,
    ]


def test_the_growth_reason_reads_only_reason_columns():
    assert set(growth_reason_expr().meta.root_names()) == set(COLUMNS)
    assert set(COLUMNS) <= set(REASON_COLUMNS)
    assert set(reasons_expr().meta.root_names()) <= set(REASON_COLUMNS)


# --- growth_columns ------------------------------------------------------------------------------------------


def growth_row(student_id: int, subject: str, latest: date, pct: float | None, status: str, year: int = 2024) -> dict:
    return {
        "school_year": year,
        "student_id": student_id,
        "subject": subject,
        "baseline_completion_date": date(year, 8, 20),
        "baseline_scale_score": 500,
        "latest_completion_date": latest,
        "latest_scale_score": 505,
        "growth_to_date": 5,
        "annual_typical_growth": 20,
        "annual_stretch_growth": 40,
        "pct_typical_growth": pct,
        "pct_stretch_growth": None,
        "growth_status": status,
    }


def test_growth_columns_give_one_row_per_student_with_the_latest_window():
    growth = pl.DataFrame(
        [
            growth_row(2, "math", date(2025, 3, 2), 25.0, "below_typical"),
            growth_row(1, "ela", date(2024, 11, 15), 12.5, "below_typical"),
            growth_row(1, "math", date(2024, 11, 16), 80.0, "on_track_typical"),
            growth_row(3, "ela", date(2025, 3, 1), None, "no_progress_data"),
        ],
        schema=GROWTH_SCHEMA,
    )
    cols = growth_columns(growth)
    assert cols.schema == pl.Schema(GROWTH_REASON_SCHEMA)
    assert cols.rows() == [
        (2024, 1, 12.5, "below_typical", "BOY", 80.0, "on_track_typical", "MOY"),
        (2024, 2, None, None, None, 25.0, "below_typical", "EOY"),
        (2024, 3, None, "no_progress_data", "MOY", None, None, None),
    ]
    assert cols.select(growth_reason_expr()).to_series().to_list() == [
        "reading: 12% of typical growth by fall",
        "math: 25% of typical growth by spring",
        None,
    ]


def test_growth_columns_refuse_a_repeated_key():
    row = growth_row(7, "ela", date(2024, 12, 1), 10.0, "below_typical")
    with pytest.raises(ValueError, match=r"repeats .* student IDs \[7\]"):
        growth_columns(pl.DataFrame([row, row], schema=GROWTH_SCHEMA))


def test_from_diagnostics_to_the_ranking_reasons():
    """The wiring the ranking will use: growth → growth_columns → left join → reasons + growth reason."""
    diags = pl.DataFrame(
        [
            (1, "ela", 2024, date(2024, 8, 20), 500, True, 20, 40),
            (1, "ela", 2024, date(2025, 1, 10), 502, False, None, None),
            (2, "math", 2024, date(2024, 8, 20), 500, True, 20, 40),
            (2, "math", 2024, date(2025, 1, 10), 530, False, None, None),
        ],
        schema=[
            "student_id",
            "subject",
            "academic_year",
            "completion_date",
            "overall_scale_score",
            "is_baseline",
            "annual_typical_growth_measure",
            "annual_stretch_growth_measure",
        ],
        orient="row",
    )
    growth = iready_growth(diags, None, None, school_year=2024)
    ranking_frame = pl.DataFrame(
        {
            "school_year": [2024, 2024, 2024],
            "student_id": [1, 2, 3],
            "is_enrolled": [True] * 3,
            "left_on": [None] * 3,
            "as_of_date": [date(2025, 1, 15)] * 3,
            "attendance_tier": ["satisfactory"] * 3,
            "absence_rate": [0.0] * 3,
            "days_absent": [0] * 3,
            "days_enrolled": [90] * 3,
            "overall_risk": ["LOW"] * 3,
            "ela_relative_placement": ["Early On Grade Level"] * 3,
            "math_relative_placement": ["Early On Grade Level"] * 3,
            "truancy_count": [0] * 3,
            "truancy_letter_level": [0] * 3,
        },
        schema_overrides={"school_year": pl.Int32, "left_on": pl.Date},
    )
    joined = ranking_frame.join(growth_columns(growth), on=["school_year", "student_id"], how="left")
    text = joined.select(
        pl.concat_str([reasons_expr(), growth_reason_expr()], separator="; ", ignore_nulls=True)
    ).to_series()
    base = "satisfactory attendance 0% (0 of 90 days); reading and math on grade level"
    # Student 1: 2 of 20 points by Jan 10 (about half the year by calendar days) is 10%; 2 and 3 have nothing to add.
    assert text.to_list() == [base + "; reading: 10% of typical growth by mid-year", base, base]
