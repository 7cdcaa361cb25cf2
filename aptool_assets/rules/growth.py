"""i-Ready growth toward the vendor's annual measures (contract §3 ``aptool.iready_growth``, §4.6), and the
comparison with the vendor's own "Percent Progress to Annual Typical Growth (%)".

Pure functions over polars frames: no Dagster, no I/O.

Decisions the contract leaves open, made here once:

- **Rows**: one per (student_id, subject) of the school year with at least one diagnostic; rows whose
  ``student_id`` is null (mapped to no student), other years, and rows without a completion date or
  overall scale score take no part.
- **Baseline**: the diagnostic flagged ``is_baseline`` (several flagged: the earliest of them), else the
  earliest of the year. Ties on the completion date go to the **highest** scale score, then the input order:
  the same tie rule as the latest (§4.2), so a day with a same-day retest contributes one and the same
  diagnostic whichever role it plays, and a retest never counts as growth.
- **Growth measures** come from the baseline row. A measure that is null, 0 or negative is no measure:
  its ``pct_*`` is null.
- ``pct_* = 100 × growth_to_date / measure`` rounded half up (towards +∞, so −12.25 → −12.2) to one decimal,
  computed in integer tenths.
- ``growth_status``: ``no_progress_data`` when the baseline is the latest diagnostic (one diagnostic that year,
  possibly delivered twice, or a flagged baseline with nothing after it) or the typical measure is missing;
  otherwise ``on_track_stretch`` / ``on_track_typical`` / ``below_typical`` by comparing the **unrounded**
  ratio growth / measure with the share of the year's instructional days elapsed, exactly in integers
  (growth · total ≥ elapsed · measure): growth exactly at typical × share is on track, whatever the
  one-decimal ``pct_*`` shows.
- **Share** = instructional days (HolidayCode '' or '%') from July 1 through the latest diagnostic's completion
  date / instructional days of the whole school year (July 1 – June 30), on the calendar of the student's
  school. The student's school: among ``students_schools`` records, the latest ``school_enter_date`` when that
  column is given (null dates last), then the lowest ``school_code``. A school "has a calendar" when its calendar
  holds at least one instructional day that year; otherwise, and for a student without a school record, the
  district calendar (school_code 0); when neither exists, calendar days (July 1 through the completion date /
  days of the year, clipped to 0..1).
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from aptool_assets.rules.academic import latest_diagnostics
from aptool_assets.rules.attendance import DISTRICT_SCHOOL_CODE
from aptool_assets.rules.enrollment import conform, count_school_days, instructional_days
from aptool_assets.vocabulary import school_year_bounds

GROWTH_SCHEMA: dict[str, pl.DataType] = {
    "school_year": pl.Int32(),
    "student_id": pl.Int64(),
    "subject": pl.Utf8(),
    "baseline_completion_date": pl.Date(),
    "baseline_scale_score": pl.Int32(),
    "latest_completion_date": pl.Date(),
    "latest_scale_score": pl.Int32(),
    "growth_to_date": pl.Int32(),
    "annual_typical_growth": pl.Int32(),
    "annual_stretch_growth": pl.Int32(),
    "pct_typical_growth": pl.Float64(),
    "pct_stretch_growth": pl.Float64(),
    "growth_status": pl.Utf8(),
}
"""``aptool.iready_growth``: column name → dtype, in the published order. Key (school_year, student_id, subject)."""

GROWTH_STATUSES: tuple[str, ...] = ("on_track_stretch", "on_track_typical", "below_typical", "no_progress_data")

DIAGNOSTIC_COLUMNS: dict[str, pl.DataType] = {
    "student_id": pl.Int64(),
    "subject": pl.Utf8(),
    "academic_year": pl.Int32(),
    "completion_date": pl.Date(),
    "overall_scale_score": pl.Int32(),
    "is_baseline": pl.Boolean(),
    "annual_typical_growth_measure": pl.Int32(),
    "annual_stretch_growth_measure": pl.Int32(),
}
"""What :func:`iready_growth` reads from ``aptool.iready_diagnostic_results``; other columns are ignored."""

STUDENT_SCHOOL_COLUMNS: dict[str, pl.DataType] = {"student_id": pl.Int64(), "school_code": pl.Int32()}
"""What :func:`iready_growth` reads from the students' school records (``school_enter_date`` too when present)."""

_KEY = ["student_id", "subject"]


def one_decimal(tenths: pl.Expr) -> pl.Expr:
    """Integer tenths as the nearest double of the one-decimal value (33 → 3.3, −7 → −0.7); null stays null.

    Through text, because polars' float division by a literal 10 is not correctly rounded (33 / 10 gives
    3.3000000000000003) and Python's would need a row-by-row call.
    """
    magnitude = tenths.abs()
    text = pl.concat_str(
        [
            pl.when(tenths < 0).then(pl.lit("-")).otherwise(pl.lit("")),
            (magnitude // 10).cast(pl.Utf8),
            pl.lit("."),
            (magnitude % 10).cast(pl.Utf8),
        ]
    )
    return text.cast(pl.Float64)


def _pct_tenths(growth: pl.Expr, measure: pl.Expr) -> pl.Expr:
    """100 · growth / measure in tenths, rounded half up: floor((2000·g + m) / 2m), exact; null unless measure > 0."""
    g, m = growth.cast(pl.Int64), measure.cast(pl.Int64)
    return pl.when(m > 0).then((2000 * g + m) // (2 * m)).otherwise(pl.lit(None, dtype=pl.Int64))


def _year_rows(diagnostics: pl.DataFrame, school_year: int) -> pl.DataFrame:
    """The year's usable diagnostics, typed, in input order."""
    rows = conform(diagnostics.select(list(DIAGNOSTIC_COLUMNS)), DIAGNOSTIC_COLUMNS, "diagnostics")
    return rows.filter(
        pl.col("student_id").is_not_null()
        & pl.col("subject").is_not_null()
        & (pl.col("academic_year") == school_year)
        & pl.col("completion_date").is_not_null()
        & pl.col("overall_scale_score").is_not_null()
    )


def _baselines(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per key: flagged first, then the earliest date, the highest score, the input order."""
    return (
        rows.with_row_index("_row")
        .with_columns((~pl.col("is_baseline").fill_null(False)).alias("_unflagged"))
        .sort(["_unflagged", "completion_date", "overall_scale_score", "_row"], descending=[False, False, True, False])
        .unique(subset=_KEY, keep="first", maintain_order=True)
        .select(
            *_KEY,
            pl.col("completion_date").alias("baseline_completion_date"),
            pl.col("overall_scale_score").alias("baseline_scale_score"),
            pl.col("annual_typical_growth_measure").alias("annual_typical_growth"),
            pl.col("annual_stretch_growth_measure").alias("annual_stretch_growth"),
        )
    )


def _student_school(students_schools: pl.DataFrame | None) -> pl.DataFrame:
    """(student_id, school_code): the latest-entered record (when ``school_enter_date`` is given), else the
    lowest school_code."""
    if students_schools is None:
        return pl.DataFrame(schema=STUDENT_SCHOOL_COLUMNS)
    has_enter = "school_enter_date" in students_schools.columns
    schema = {**STUDENT_SCHOOL_COLUMNS, **({"school_enter_date": pl.Date()} if has_enter else {})}
    records = conform(students_schools.select(list(schema)), schema, "students_schools").drop_nulls(
        list(STUDENT_SCHOOL_COLUMNS)
    )
    order, descending = (
        (["school_enter_date", "school_code"], [True, False]) if has_enter else (["school_code"], [False])
    )
    return (
        records.sort(order, descending=descending, nulls_last=True)
        .unique(subset="student_id", keep="first", maintain_order=True)
        .select(list(STUDENT_SCHOOL_COLUMNS))
    )


def _elapsed_share(pairs: pl.DataFrame, calendar: pl.DataFrame | None, school_year: int) -> pl.DataFrame:
    """For each (school_code or null, latest_completion_date): ``_elapsed`` and ``_total`` days (Int64).

    ``school_code`` here is the student's school; the calendar used is that school's, else the district's,
    else calendar days (module docstring).
    """
    first, last = school_year_bounds(school_year)
    if calendar is None:
        days = pl.DataFrame(schema={"school_code": pl.Int32, "calendar_date": pl.Date})
    else:
        days = instructional_days(calendar).filter(pl.col("calendar_date").is_between(first, last))
    with_days = days.get_column("school_code").unique()
    district = DISTRICT_SCHOOL_CODE if (with_days == DISTRICT_SCHOOL_CODE).any() else None
    school = pl.col("school_code")
    pairs = pairs.with_columns(
        pl.when(school.is_in(with_days.implode()))
        .then(school)
        .otherwise(pl.lit(district, dtype=pl.Int32))
        .alias("_calendar")
    )
    on_calendar = pairs.filter(pl.col("_calendar").is_not_null())
    first_day, last_day = pl.lit(first).cast(pl.Int32), pl.lit(last).cast(pl.Int32)
    spans = on_calendar.select(
        pl.col("_calendar").alias("school_code"),
        first_day.alias("start"),
        pl.col("latest_completion_date").cast(pl.Int32).alias("end"),
    )
    whole = spans.with_columns(last_day.alias("end"))
    on_calendar = on_calendar.with_columns(
        count_school_days(spans, days).alias("_elapsed"), count_school_days(whole, days).alias("_total")
    )
    year_days = (last - first).days + 1
    since_start = (pl.col("latest_completion_date") - pl.lit(first)).dt.total_days() + 1
    off_calendar = pairs.filter(pl.col("_calendar").is_null()).with_columns(
        since_start.clip(0, year_days).cast(pl.Int64).alias("_elapsed"),
        pl.lit(year_days, dtype=pl.Int64).alias("_total"),
    )
    return pl.concat([on_calendar, off_calendar]).select("school_code", "latest_completion_date", "_elapsed", "_total")


def iready_growth(
    diagnostics: pl.DataFrame,
    calendar: pl.DataFrame | None,
    students_schools: pl.DataFrame | None,
    *,
    school_year: int,
) -> pl.DataFrame:
    """``aptool.iready_growth`` for one school year (contract §3, §4.6; decisions in the module docstring).

    ``diagnostics``: ``aptool.iready_diagnostic_results`` rows (``DIAGNOSTIC_COLUMNS`` are read).
    ``calendar``: school_code, calendar_date, holiday_code (Aeries school calendars, the district's as school 0).
    ``students_schools``: student_id, school_code and optionally school_enter_date (``aptool.students``).
    Either may be None (no calendar; no school known). Columns and dtypes are ``GROWTH_SCHEMA``, sorted by
    student_id and subject.
    """
    rows = _year_rows(diagnostics, school_year)
    latest = latest_diagnostics(rows).select(
        *_KEY,
        pl.col("completion_date").alias("latest_completion_date"),
        pl.col("overall_scale_score").alias("latest_scale_score"),
    )
    frame = (
        _baselines(rows)
        .join(latest, on=_KEY, how="inner")
        .join(_student_school(students_schools), on="student_id", how="left")
    )
    pairs = frame.select("school_code", "latest_completion_date").unique()
    share = _elapsed_share(pairs, calendar, school_year)
    frame = frame.join(share, on=["school_code", "latest_completion_date"], how="left", nulls_equal=True)

    growth = (pl.col("latest_scale_score").cast(pl.Int64) - pl.col("baseline_scale_score")).alias("growth_to_date")
    frame = frame.with_columns(growth).with_columns(
        _pct_tenths(pl.col("growth_to_date"), pl.col("annual_typical_growth")).alias("_typical_tenths"),
        _pct_tenths(pl.col("growth_to_date"), pl.col("annual_stretch_growth")).alias("_stretch_tenths"),
    )

    def reaches(measure: str) -> pl.Expr:
        """growth / measure ≥ elapsed / total, exactly (false without a positive measure)."""
        m = pl.col(measure).cast(pl.Int64)
        return ((m > 0) & (pl.col("growth_to_date") * pl.col("_total") >= pl.col("_elapsed") * m)).fill_null(False)

    same_diagnostic = (pl.col("baseline_completion_date") == pl.col("latest_completion_date")) & (
        pl.col("baseline_scale_score") == pl.col("latest_scale_score")
    )
    typical = pl.col("annual_typical_growth")
    status = (
        pl.when(same_diagnostic | typical.is_null() | (typical <= 0))
        .then(pl.lit("no_progress_data"))
        .when(reaches("annual_stretch_growth"))
        .then(pl.lit("on_track_stretch"))
        .when(reaches("annual_typical_growth"))
        .then(pl.lit("on_track_typical"))
        .otherwise(pl.lit("below_typical"))
    )
    out = frame.with_columns(
        pl.lit(school_year, dtype=pl.Int32).alias("school_year"),
        one_decimal(pl.col("_typical_tenths")).alias("pct_typical_growth"),
        one_decimal(pl.col("_stretch_tenths")).alias("pct_stretch_growth"),
        status.alias("growth_status"),
    )
    return out.select(pl.col(name).cast(dtype) for name, dtype in GROWTH_SCHEMA.items()).sort(_KEY)


# --- the vendor's own percent progress -------------------------------------------------------------

DISAGREEMENT_SCHEMA: dict[str, pl.DataType] = {
    "school_year": pl.Int32(),
    "student_id": pl.Int64(),
    "subject": pl.Utf8(),
    "pct_typical_growth": pl.Float64(),
    "vendor_pct_typical_growth": pl.Int32(),
    "difference": pl.Float64(),
}
"""One row per disagreement: ours, the vendor's, and ours − the vendor's (one decimal; null when ours is null)."""


class ProgressAgreement(NamedTuple):
    """How many growth rows could be compared with the vendor's percent, and how many agree."""

    compared: int
    agree: int
    disagree: int


def _compared(growth: pl.DataFrame, diagnostics: pl.DataFrame, tolerance: float) -> pl.DataFrame:
    """Growth rows whose latest diagnostic carries the vendor's percent, with ``difference`` and ``_disagrees``."""
    cols = {
        "student_id": pl.Int64(),
        "subject": pl.Utf8(),
        "academic_year": pl.Int32(),
        "completion_date": pl.Date(),
        "overall_scale_score": pl.Int32(),
        "percent_progress_to_annual_typical_growth": pl.Int32(),
    }
    rows = conform(diagnostics.select(list(cols)), cols, "diagnostics").filter(
        pl.col("student_id").is_not_null()
        & pl.col("completion_date").is_not_null()
        & pl.col("overall_scale_score").is_not_null()
    )
    vendor = latest_diagnostics(rows).select(
        pl.col("academic_year").alias("school_year"),
        *_KEY,
        pl.col("percent_progress_to_annual_typical_growth").alias("vendor_pct_typical_growth"),
    )
    ours = growth.select(
        pl.col("school_year").cast(pl.Int32),
        pl.col("student_id").cast(pl.Int64),
        pl.col("subject").cast(pl.Utf8),
        pl.col("pct_typical_growth").cast(pl.Float64),
    )
    ours_tenths = (pl.col("pct_typical_growth") * 10).round(0).cast(pl.Int64)
    difference = one_decimal(ours_tenths - 10 * pl.col("vendor_pct_typical_growth").cast(pl.Int64))
    return (
        ours.join(vendor, on=["school_year", *_KEY], how="inner")
        .filter(pl.col("vendor_pct_typical_growth").is_not_null())
        .with_columns(difference.alias("difference"))
        .with_columns((pl.col("difference").abs() > tolerance).fill_null(True).alias("_disagrees"))
        .sort(["school_year", *_KEY])
    )


def vendor_progress_disagreements(
    growth: pl.DataFrame, diagnostics: pl.DataFrame, tolerance: float = 1.0
) -> pl.DataFrame:
    """Growth rows whose ``pct_typical_growth`` differs from the vendor's "Percent Progress to Annual Typical
    Growth (%)" by more than ``tolerance`` points (contract §4.6's data test).

    The vendor's figure is read from the latest diagnostic (§4.2) of the (school_year, student_id, subject);
    rows where that diagnostic carries none are not compared. Our figure null while the vendor's is present
    (no usable measure on our baseline) is a disagreement with a null ``difference``. Columns
    ``DISAGREEMENT_SCHEMA``, sorted by key.
    """
    found = _compared(growth, diagnostics, tolerance).filter(pl.col("_disagrees"))
    return found.select(pl.col(name).cast(dtype) for name, dtype in DISAGREEMENT_SCHEMA.items())


def vendor_progress_agreement(
    growth: pl.DataFrame, diagnostics: pl.DataFrame, tolerance: float = 1.0
) -> ProgressAgreement:
    """(compared, agree, disagree) of :func:`vendor_progress_disagreements`' comparison."""
    compared = _compared(growth, diagnostics, tolerance)
    disagree = int(compared.get_column("_disagrees").sum())
    return ProgressAgreement(compared.height, compared.height - disagree, disagree)
