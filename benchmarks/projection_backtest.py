"""The back-test of contract §4.7 behind bench_projection_backtest.py: predict year-end chronic absence from the
data as of Nov 1, Jan 15 and Mar 15 of complete past years, and score each projection method against the naive
"chronically absent today" flag.

For one year and cut-off the population is every (student, school) enrolled on the cut-off date (the projection's
rows: a student who already left cannot be acted on). The truth is ``is_chronically_absent`` of the attendance
summary as of June 30 (the year's last day) for that (student, school); the naive flag is the summary's
``is_chronically_absent`` as of the cut-off; a method flags ``projected_chronic``. For each rule: how many it
flagged, how many of those were right (hits), precision = hits / flagged, recall = hits / chronic at year end.
A method *beats* the naive flag when its recall is higher and its precision at least as high.

Imported by the benchmark script, which puts the repository on sys.path first (run as
``python benchmarks/bench_projection_backtest.py``, this directory is on sys.path already).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import polars as pl

from aptool_assets.rules.attendance import summary_from_attendance_days
from aptool_assets.rules.enrollment import STUDENT_KEY
from aptool_assets.rules.projection import chronic_absence_projection
from aptool_assets.vocabulary import school_year_bounds
from aptool_demo.attendance_years import AttendanceYear

CUTOFFS: tuple[tuple[int, int], ...] = ((11, 1), (1, 15), (3, 15))
"""(month, day) of each cut-off, in school-year order."""

NAIVE = "naive"
COUNTS = ["enrolled", "chronic_at_end", "flagged", "hits"]


def cutoff_label(month: int, day: int) -> str:
    return date(2000, month, day).strftime("%b ") + str(day)


def cutoff_date(school_year: int, month: int, day: int) -> date:
    """The cut-off's date in a school year (July–June): Nov 1 of the start year, Jan 15 of the next."""
    return date(school_year if month >= 7 else school_year + 1, month, day)


def _summary(year: AttendanceYear, as_of: date) -> pl.DataFrame:
    return summary_from_attendance_days(
        calendar=year.calendar,
        enrollment=year.enrollment,
        attendance_days=year.attendance_days,
        school_year=year.school_year,
        as_of_date=as_of,
    )


def _score(rule: str, flags: pl.DataFrame, truth: pl.Series) -> dict:
    flagged = flags.get_column("flag")
    return {
        "rule": rule,
        "enrolled": flags.height,
        "chronic_at_end": int(truth.sum()),
        "flagged": int(flagged.sum()),
        "hits": int((flagged & truth).sum()),
    }


def evaluate_year(year: AttendanceYear, methods: Sequence[str], cutoffs=CUTOFFS) -> pl.DataFrame:
    """One row per cut-off and rule (the naive flag, then ``methods``): the counts of the module docstring."""
    _, year_end = school_year_bounds(year.school_year)
    at_end = _summary(year, year_end).select(*STUDENT_KEY, pl.col("is_chronically_absent").alias("_truth"))
    rows = []
    for month, day in cutoffs:
        as_of = cutoff_date(year.school_year, month, day)
        projections = {
            method: chronic_absence_projection(
                calendar=year.calendar,
                enrollment=year.enrollment,
                attendance_days=year.attendance_days,
                school_year=year.school_year,
                as_of_date=as_of,
                method=method,
            )
            for method in methods
        }
        population = next(iter(projections.values())).select(STUDENT_KEY)
        truth = population.join(at_end, on=STUDENT_KEY, how="left", maintain_order="left")["_truth"].fill_null(False)
        today = population.join(
            _summary(year, as_of).select(*STUDENT_KEY, pl.col("is_chronically_absent").alias("flag")),
            on=STUDENT_KEY,
            how="left",
            maintain_order="left",
        ).with_columns(pl.col("flag").fill_null(False))
        scored = [_score(NAIVE, today, truth)]
        for method, frame in projections.items():
            if not frame.select(STUDENT_KEY).equals(population):
                raise AssertionError(f"{method}: the projection's rows differ from the other methods'")
            scored.append(_score(method, frame.select(pl.col("projected_chronic").alias("flag")), truth))
        for row in scored:
            rows.append(
                {"school_year": year.school_year, "cutoff": cutoff_label(month, day), "as_of_date": as_of, **row}
            )
    return pl.DataFrame(rows)


def backtest(years: Sequence[AttendanceYear], methods: Sequence[str], cutoffs=CUTOFFS) -> pl.DataFrame:
    """Per year, cut-off and rule, then the years aggregated (``school_year`` null, counts summed), with
    precision and recall."""
    per_year = pl.concat([evaluate_year(year, methods, cutoffs) for year in years])
    order = {cutoff_label(m, d): i for i, (m, d) in enumerate(cutoffs)}
    aggregated = (
        per_year.group_by("cutoff", "rule", maintain_order=True)
        .agg(pl.col(COUNTS).sum())
        .with_columns(pl.lit(None, pl.Int32).alias("school_year"), pl.lit(None, pl.Date).alias("as_of_date"))
        .select(per_year.columns)
        .sort(pl.col("cutoff").replace_strict(order), maintain_order=True)
    )
    return pl.concat([per_year.with_columns(pl.col("school_year").cast(pl.Int32)), aggregated]).with_columns(
        (pl.col("hits") / pl.col("flagged")).alias("precision"),
        (pl.col("hits") / pl.col("chronic_at_end")).alias("recall"),
    )


def with_verdicts(table: pl.DataFrame) -> pl.DataFrame:
    """``beats_naive`` per method row (null on the naive rows): recall higher, precision at least as high."""
    naive = table.filter(pl.col("rule") == NAIVE).select(
        "school_year", "cutoff", pl.col("precision").alias("_p0"), pl.col("recall").alias("_r0")
    )
    verdict = (pl.col("recall") > pl.col("_r0")) & (pl.col("precision").fill_nan(0) >= pl.col("_p0").fill_nan(0))
    return (
        table.join(naive, on=["school_year", "cutoff"], how="left", nulls_equal=True, maintain_order="left")
        .with_columns(pl.when(pl.col("rule") == NAIVE).then(None).otherwise(verdict).alias("beats_naive"))
        .drop("_p0", "_r0")
    )
