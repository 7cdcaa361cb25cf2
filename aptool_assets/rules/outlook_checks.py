"""What must hold in published growth and projection tables (contract §4.6, §4.7): the data tests' rules, kept
beside the rules and tested without Dagster. Each function returns problems in words with IDs and counts."""

from __future__ import annotations

import polars as pl

GROWTH_STATUSES: tuple[str, ...] = ("on_track_stretch", "on_track_typical", "below_typical", "no_progress_data")
_EPSILON = 0.05 + 1e-9  # one-decimal rounding of a percentage


def _ids(df: pl.DataFrame, n: int = 10) -> list[int]:
    return df.get_column("student_id").unique().sort().head(n).to_list()


def growth_problems(growth: pl.DataFrame) -> list[str]:
    """Growth equals latest minus baseline score; the percentages follow from the measures (one decimal); a
    status is one of the four; a row with progress data has a baseline before (or on) its latest diagnostic."""
    problems = []
    rules = {
        "growth_to_date is not latest minus baseline score": pl.col("growth_to_date")
        != pl.col("latest_scale_score") - pl.col("baseline_scale_score"),
        "pct_typical_growth does not follow from the typical measure": (
            (pl.col("pct_typical_growth") - 100 * pl.col("growth_to_date") / pl.col("annual_typical_growth")).abs()
            > _EPSILON
        ),
        "pct_stretch_growth does not follow from the stretch measure": (
            (pl.col("pct_stretch_growth") - 100 * pl.col("growth_to_date") / pl.col("annual_stretch_growth")).abs()
            > _EPSILON
        ),
        "growth_status is not a known status": ~pl.col("growth_status").is_in(GROWTH_STATUSES),
        "baseline after the latest diagnostic": pl.col("baseline_completion_date") > pl.col("latest_completion_date"),
    }
    for words, bad in rules.items():
        rows = growth.filter(bad.fill_null(False))
        if rows.height:
            problems.append(f"{rows.height} rows: {words}; student IDs {_ids(rows)}")
    return problems


def projection_problems(projection: pl.DataFrame) -> list[str]:
    """The projection is monotone and consistent: projected absences lie between today's absences and today's
    plus every remaining day, the projected rate is projected absences over the projected days (so more remaining
    absences never lower it), and the absences still allowed keep the year just under 10%."""
    total = pl.col("days_enrolled") + pl.col("remaining_instructional_days")
    further = pl.col("max_further_absences_to_stay_below_10pct")
    rules = {
        "projected absences below today's or above today's plus every remaining day": (
            (pl.col("projected_days_absent") < pl.col("days_absent") - 1e-9)
            | (pl.col("projected_days_absent") > pl.col("days_absent") + pl.col("remaining_instructional_days") + 1e-9)
        ),
        "projected_rate is not projected absences over projected days": (
            (pl.col("projected_rate") - pl.col("projected_days_absent") / total).abs() > 1e-9
        ),
        "projected_chronic disagrees with the projected rate and days": pl.col("projected_chronic")
        != ((pl.col("projected_rate") >= 0.1 - 1e-12) & (total >= 31)),
        "max_further_absences_to_stay_below_10pct is not the largest that stays under 10%": (
            ((pl.col("days_absent") + further) * 10 >= total)
            | (
                (further < pl.col("remaining_instructional_days"))
                & ((pl.col("days_absent") + further + 1) * 10 < total)
            )
            | (further.is_null() & (pl.col("days_absent") * 10 < total))
        ),
    }
    problems = []
    for words, bad in rules.items():
        rows = projection.filter(bad.fill_null(False))
        if rows.height:
            problems.append(f"{rows.height} rows: {words}; student IDs {_ids(rows)}")
    return problems
