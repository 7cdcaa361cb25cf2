"""Academic rules over i-Ready diagnostics (contract §4.2 and §4.3).

Pure functions over polars frames: no Dagster, no I/O, so every boundary can be tested with
small hand-built frames and the assets stay thin.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass

import polars as pl

from aptool_assets.vocabulary import RISK_ORDER, SUBJECTS, UNKNOWN_RISK, YEAR_START_MONTH, school_year_expr

RELATIVE_PLACEMENTS: tuple[str, ...] = (
    "Mid or Above Grade Level",
    "Early On Grade Level",
    "1 Grade Level Below",
    "2 Grade Levels Below",
    "3 or More Grade Levels Below",
)
"""The five vendor relative placements, best first (reference §8: digits, never words)."""

RISK_BY_RELATIVE_PLACEMENT: dict[str, str] = {
    "Mid or Above Grade Level": "LOW",
    "Early On Grade Level": "LOW",
    "1 Grade Level Below": "MEDIUM",
    "2 Grade Levels Below": "HIGH",
    "3 or More Grade Levels Below": "HIGH",
}


def _academic_ordinal(month: int, day: int) -> int:
    """Position of a (month, day) inside a July-June year, comparable with ``<=``."""
    return ((month - YEAR_START_MONTH) % 12) * 32 + day


def _epoch_day(year: pl.Expr, month: int, day: int) -> pl.Expr:
    """Days since 1970-01-01 of (year, month, day) for a year column, in integer arithmetic
    (H. Hinnant's days_from_civil): several times faster than building a date per row."""
    y = year - (1 if month <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


@dataclass(frozen=True)
class AssessmentWindows:
    """Last day (month, day) of BOY and MOY; EOY runs from the day after MOY to June 30.

    Configurable because districts (and the vendor before 2020-21: Nov 30 / Mar 15) differ.
    """

    boy_last_day: tuple[int, int] = (11, 15)
    moy_last_day: tuple[int, int] = (3, 1)

    def __post_init__(self) -> None:
        for name in ("boy_last_day", "moy_last_day"):
            month, day = getattr(self, name)
            if not 1 <= month <= 12:
                raise ValueError(f"{name}: month {month} is not 1..12")
            # A non-leap year's calendar: Feb 29 would not exist in most years.
            if not 1 <= day <= calendar.monthrange(2001, month)[1]:
                raise ValueError(f"{name}: day {day} does not exist in month {month} every year")
        if _academic_ordinal(*self.boy_last_day) >= _academic_ordinal(*self.moy_last_day):
            raise ValueError("boy_last_day must fall before moy_last_day within the July-June year")
        if _academic_ordinal(*self.moy_last_day) >= _academic_ordinal(6, 30):
            raise ValueError("moy_last_day must leave room for EOY before June 30")


DEFAULT_WINDOWS = AssessmentWindows()


def assessment_window_expr(
    windows: AssessmentWindows = DEFAULT_WINDOWS,
    date_col: str = "completion_date",
    year_col: str | None = "academic_year",
) -> pl.Expr:
    """BOY/MOY/EOY from the completion date within the academic year (null date → null).

    Boundaries are absolute dates of the row's academic year, so a date before the year
    counts as BOY and one after it as EOY instead of wrapping around. With ``year_col=None``
    the year is derived from the date.
    """
    d = pl.col(date_col)
    year = (school_year_expr(date_col) if year_col is None else pl.col(year_col)).cast(pl.Int32)

    def last_day(month_day: tuple[int, int]) -> pl.Expr:
        month, day = month_day
        return _epoch_day(year + (0 if month >= YEAR_START_MONTH else 1), month, day)

    days = d.cast(pl.Date).cast(pl.Int32)  # a Datetime column works too
    return (
        pl.when(days <= last_day(windows.boy_last_day))
        .then(pl.lit("BOY"))
        .when(days <= last_day(windows.moy_last_day))
        .then(pl.lit("MOY"))
        .when(days.is_not_null() & year.is_not_null())
        .then(pl.lit("EOY"))
        .alias("assessment_window")
    )


_LATEST_KEY = ["student_id", "subject", "academic_year"]


def latest_diagnostics(diagnostics: pl.DataFrame) -> pl.DataFrame:
    """One row per (student_id, subject, academic_year): latest completion date, ties → highest score.

    Remaining ties (same date and score, e.g. the same test in two files) are broken by the
    input order so the result is deterministic for a given input.
    """
    return (
        diagnostics.with_row_index("_order")
        .sort(
            ["completion_date", "overall_scale_score", "_order"],
            descending=[True, True, False],
            nulls_last=True,
        )
        .unique(subset=_LATEST_KEY, keep="first", maintain_order=True)
        .sort(_LATEST_KEY)
        .drop("_order")
    )


_RISK_RANK = {risk: rank for risk, rank in RISK_ORDER.items() if risk != UNKNOWN_RISK}
_RANK_RISK = {rank: risk for risk, rank in _RISK_RANK.items()}


def _risk_expr(col: str) -> pl.Expr:
    return pl.col(col).replace_strict(RISK_BY_RELATIVE_PLACEMENT, default=None, return_dtype=pl.Utf8)


def student_academic_risk(
    diagnostics: pl.DataFrame,
    school_year: int,
    roster_student_ids: pl.Series | None = None,
) -> pl.DataFrame:
    """Per-student academic risk for one school year (contract §4.2, table student_academic_risk).

    One row per roster student (a student without results is UNKNOWN rather than silently missing);
    diagnostics whose ``student_id`` is null (mapped to no student) or not on the roster get no row.
    Without a roster (None: none published yet), the students with mapped results.
    """
    latest = latest_diagnostics(
        diagnostics.filter(pl.col("academic_year") == school_year).select(
            pl.col("student_id").cast(pl.Int64),
            "subject",
            "academic_year",
            "completion_date",
            "overall_scale_score",
            "overall_relative_placement",
        )
    )
    if roster_student_ids is None:
        students = latest.select("student_id")
    else:
        students = pl.DataFrame({"student_id": roster_student_ids.cast(pl.Int64)})
    students = students.drop_nulls().unique().sort("student_id")

    out = students
    for subject in SUBJECTS:
        per_subject = latest.filter(pl.col("subject") == subject).select(
            "student_id",
            pl.col("overall_relative_placement").alias(f"{subject}_relative_placement"),
            pl.col("completion_date").alias(f"{subject}_completion_date"),
        )
        out = out.join(per_subject, on="student_id", how="left")

    out = out.with_columns(
        _risk_expr("ela_relative_placement").alias("ela_risk"),
        _risk_expr("math_relative_placement").alias("math_risk"),
    )
    worst = pl.max_horizontal(
        pl.col("ela_risk").replace_strict(_RISK_RANK, default=None, return_dtype=pl.Int8),
        pl.col("math_risk").replace_strict(_RISK_RANK, default=None, return_dtype=pl.Int8),
    )
    overall = worst.replace_strict(_RANK_RISK, default=UNKNOWN_RISK, return_dtype=pl.Utf8)
    return out.select(
        pl.lit(school_year, dtype=pl.Int32).alias("school_year"),
        "student_id",
        pl.col("ela_relative_placement").cast(pl.Utf8),
        pl.col("math_relative_placement").cast(pl.Utf8),
        "ela_risk",
        "math_risk",
        overall.alias("overall_risk"),
        pl.col("ela_completion_date").cast(pl.Date),
        pl.col("math_completion_date").cast(pl.Date),
    ).sort("student_id")
