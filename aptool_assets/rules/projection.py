"""End-of-year projection of chronic absence (contract §3 ``aptool.chronic_absence_projection``, §4.7): where
each currently enrolled student's absence rate is heading by the last instructional day.

Pure functions over polars frames: no Dagster, no I/O. The inputs are the attendance summary's
(``summary_from_attendance_days``): ``calendar``, ``enrollment`` stints and ``attendance_days`` as
``categorize_attendance`` returns them. days_enrolled and days_absent *are* the summary's, through the as-of date.

**Rows.** Every (student, school) with a stint that includes the as-of date (leave date inclusive, open while
null: ``enrollment_on``). A student who left before the as-of date has no row: nothing is left to project.

**Remaining days.** The school calendar's instructional days after the as-of date through June 30. An enrolled
student is assumed to stay to the end of the year, even when the stint already carries a later leave date:
the projection asks "if nothing changes", and a planned move is not certain.

**Projection.** ``projected_days_absent = days_absent + remaining × r`` where ``r`` is the method's daily
absence rate (below); ``projected_rate = projected_days_absent / (days_enrolled + remaining)``;
``projected_chronic`` when ``projected_rate ≥ 0.10`` and ``days_enrolled + remaining ≥ 31``;
``max_further_absences_to_stay_below_10pct`` = the largest k in 0..remaining with ``(days_absent + k) × 10 <
days_enrolled + remaining``, null when even k = 0 reaches 10% (already out of reach). Every rate is a ratio of
integers and the comparisons are made on integers (``CHRONIC_RATE`` is a fraction), so "exactly 10%" is never
decided by rounding; the float columns are one correctly rounded division each.

**Methods** (``projection_method`` names the one used). Over the student's enrolled days at that school so far:
E days enrolled, A days absent; a absences in the last ``RECENT_WINDOW_DAYS`` (30) enrolled instructional days
(n = 30, or E when fewer); W *absence weeks*, the calendar weeks with at least one absence.

- ``recent30`` — contract §4.7 as written: ``r = a / n`` (so the year's rate when fewer than 30 days); 0 without
  an enrolled day.
- ``blend30`` — ``r = (A + a) / (E + n)``: the year so far and the last 30 days pooled day by day.
- ``weeks30`` — the default: ``r = (ρ·W + a/2 + 10·μ) / (E + n/2 + 10)``, with ρ the school's days absent per
  absence week and μ the school's absence rate (both over its enrolled students as of the date, rounded half up
  to 1/1000 day and 1/100,000). Three ideas. The record is read in weeks with an absence, at the school's
  typical count per such week: how *often* a student is absent predicts the months ahead better than how long,
  and a week of flu is one such week where six scattered Mondays are six. The last 30 days count again, in days
  and at half weight, so a recent change shows. Ten pseudo-days at the school's rate keep a short record (a late
  enroller) from deciding alone; a student without an enrolled day yet is projected at the school's rate.

Every method is monotone: one more absence never lowers the student's projected days absent or rate. It adds a
day to A, and W·ρ, a and μ cannot fall with it (ρ may shrink, but never by more than the week gained adds; the
rounding of ρ and μ moves the projection by under 0.001 × remaining days, far less than the day added). That is
why weeks and not runs of consecutive absences: an absence between two others merges two runs into one.

Why the default is not the contract's method: ``benchmarks/bench_projection_backtest.py`` back-tests the methods
on generated complete years (``aptool_demo.attendance_years``) from Nov 1, Jan 15 and Mar 15 against the naive
"chronically absent today" flag, and contract §4.7 requires more recall at the same precision or better.
``recent30`` has lower precision than the naive flag at every cut-off (30 days of attendance are noisy) and no
more recall on Nov 1; ``blend30`` still loses precision on Nov 1; ``weeks30`` beats the naive flag on both
counts at every cut-off with the years pooled (single years: 11 of 12 year × cut-off cells at the benchmark's
defaults; the naive flag's operating point moves from year to year with the number of school days before the
cut-off). The two simpler methods stay available by name. The years are synthetic: before relying on the
default, run the same back-test on a district's own complete past years.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from fractions import Fraction

import polars as pl

from aptool_assets.rules.attendance import (
    FULL_DAY_ABSENCE_CATEGORIES,
    coded_enrolled_days,
    summary_from_attendance_days,
)
from aptool_assets.rules.enrollment import (
    ENROLLMENT_SCHEMA,
    STUDENT_KEY,
    conform,
    enrolled_spans,
    enrollment_on,
    instructional_days,
)
from aptool_assets.vocabulary import (
    CHRONIC_MIN_DAYS_ENROLLED,
    CHRONIC_RATE,
    UTC_TS,
    clip_to_school_year,
    school_year_bounds,
)

RECENT_WINDOW_DAYS = 30
"""The contract's "last 30 enrolled instructional days"."""

PRIOR_DAYS = 10
"""``weeks30``: pseudo-days at the school's absence rate added to every student's record."""

RECENT_WEIGHT = Fraction(1, 2)
"""``weeks30``: the weight of each of the last 30 enrolled days, counted again on top of the whole record."""

WEEK_LENGTH_SCALE = 1_000
SCHOOL_RATE_SCALE = 100_000
"""``weeks30`` rounds the school's days absent per absence week to 1/1000 day and its absence rate to 1/100,000
(half up), so the method stays a ratio of integers (at most about 1e14 on the way: far from Int64's limit)."""

PROJECTION_SCHEMA: dict[str, pl.DataType] = {
    "school_year": pl.Int32(),
    "student_id": pl.Int64(),
    "school_code": pl.Int32(),
    "days_enrolled": pl.Int32(),
    "days_absent": pl.Int32(),
    "remaining_instructional_days": pl.Int32(),
    "projected_days_absent": pl.Float64(),
    "projected_rate": pl.Float64(),
    "projected_chronic": pl.Boolean(),
    "max_further_absences_to_stay_below_10pct": pl.Int32(),
    "projection_method": pl.Utf8(),
    "computed_at": UTC_TS,
}

_A, _E = pl.col("_absent"), pl.col("_enrolled")
_WA, _WN = pl.col("_window_absent"), pl.col("_window_days")


def _weeks30() -> tuple[pl.Expr, pl.Expr]:
    """(ρ·W + w·a + P·μ) / (E + w·n + P) with w = RECENT_WEIGHT, P = PRIOR_DAYS; ρ and μ are held scaled, so
    every term is multiplied by w's denominator and both scales."""
    rho, mu = pl.col("_week_length"), pl.col("_school_rate")  # ρ × WEEK_LENGTH_SCALE, μ × SCHOOL_RATE_SCALE
    wn, wd = RECENT_WEIGHT.numerator, RECENT_WEIGHT.denominator
    scale = WEEK_LENGTH_SCALE * SCHOOL_RATE_SCALE
    numerator = (
        wd * SCHOOL_RATE_SCALE * rho * pl.col("_weeks") + wn * scale * _WA + wd * PRIOR_DAYS * WEEK_LENGTH_SCALE * mu
    )
    denominator = scale * (wd * _E + wn * _WN + wd * PRIOR_DAYS)
    return numerator, denominator


RateExpr = Callable[[], tuple[pl.Expr, pl.Expr]]
"""A method: (numerator, denominator) of the daily rate r as Int64 expressions over a row."""

METHODS: dict[str, RateExpr] = {
    "recent30": lambda: (_WA, _WN),
    "blend30": lambda: (_A + _WA, _E + _WN),
    "weeks30": _weeks30,
}
"""Projection methods by the name written to ``projection_method`` (see the module docstring)."""

CONTRACT_METHOD = "recent30"
DEFAULT_METHOD = "weeks30"


def _utc(moment: datetime | None) -> datetime:
    """``moment`` in UTC (naive read as UTC); now when None."""
    if moment is None:
        return datetime.now(UTC)
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).astimezone(UTC)


def _day_key(school: pl.Expr, day: pl.Expr) -> pl.Expr:
    """Sortable Int64 key of (school, date): school in the high bits, the day number (offset to ≥ 0) below."""
    return school.cast(pl.Int64) * (1 << 32) + day.cast(pl.Int32).cast(pl.Int64) + (1 << 31)


def _positions(index: pl.Series, frame: pl.DataFrame, day: str, side: str = "left") -> pl.Series:
    """Where (school_code, ``day``) of each row falls in the sorted school-day ``index`` (binary search)."""
    keys = frame.select(_day_key(pl.col("school_code"), pl.col(day))).to_series()
    return index.search_sorted(keys, side=side).cast(pl.Int64)


def _remaining_days(school_days: pl.DataFrame, as_of: date, year_end: date) -> pl.DataFrame:
    """Per school: instructional days after the as-of date through the year's last day (June 30)."""
    return (
        school_days.filter((pl.col("calendar_date") > as_of) & (pl.col("calendar_date") <= year_end))
        .group_by("school_code")
        .agg(pl.len().cast(pl.Int64).alias("remaining_instructional_days"))
    )


def _window_start(located: pl.DataFrame, need: pl.DataFrame) -> pl.DataFrame:
    """Per (student, school): ``_start``, the index position from which the most recent ``_need`` school days of
    the spans begin (the first span day when they hold fewer), and ``_covered``, how many school days that is."""
    size = pl.col("_hi") - pl.col("_lo")
    take = (pl.col("_need") - pl.col("_later")).clip(0, None).clip(None, size)  # from this span, newest first
    return (
        located.join(need, on=STUDENT_KEY)
        .with_columns(take.alias("_take"))
        .filter(pl.col("_take") > 0)
        .group_by(STUDENT_KEY)
        .agg((pl.col("_hi") - pl.col("_take")).min().alias("_start"), pl.col("_take").sum().alias("_covered"))
    )


def _recent_window(index: pl.Series, spans: pl.DataFrame, coded: pl.DataFrame) -> pl.DataFrame:
    """Per (student, school): ``_window_days`` and ``_window_absent`` over the last ``RECENT_WINDOW_DAYS``
    enrolled days (all of them when fewer), without listing a single day.

    Positions in the sorted school-day index are consecutive school days, so a window is a position range: the
    spans are located by binary search and walked back from the most recent until they hold ``30 + t`` school
    days, t being the not-enrolled days inside that range (which do not count). t can only grow as the range
    widens, so a few vectorised rounds reach the fixed point. Then the absences at or after the window's first
    position are counted from the sparse coded rows.
    """
    size = pl.col("_hi") - pl.col("_lo")
    located = (
        spans.select(*STUDENT_KEY, "end")
        .with_columns(
            _positions(index, spans, "start").alias("_lo"), _positions(index, spans, "end", "right").alias("_hi")
        )
        .sort(*STUDENT_KEY, "end", descending=[False, False, True])
        .with_columns((size.cum_sum() - size).over(STUDENT_KEY).alias("_later"))  # school days in later spans
    )
    days = coded.select(*STUDENT_KEY, "absence_category", _positions(index, coded, "calendar_date").alias("_pos"))
    not_enrolled = days.filter(pl.col("absence_category") == "not_enrolled")
    need = located.select(*STUDENT_KEY).unique().with_columns(pl.lit(RECENT_WINDOW_DAYS, pl.Int64).alias("_need"))
    while True:
        start = _window_start(located, need)
        skipped = (
            not_enrolled.join(start, on=STUDENT_KEY)
            .filter(pl.col("_pos") >= pl.col("_start"))
            .group_by(STUDENT_KEY)
            .agg(pl.len().cast(pl.Int64).alias("_skipped"))
        )
        start = start.join(skipped, on=STUDENT_KEY, how="left").with_columns(pl.col("_skipped").fill_null(0))
        wider = start.join(need, on=STUDENT_KEY).filter(
            (pl.col("_skipped") + RECENT_WINDOW_DAYS > pl.col("_need")) & (pl.col("_covered") == pl.col("_need"))
        )
        if wider.is_empty():  # every window holds 30 enrolled days, or all the spans have
            break
        need = need.join(
            wider.select(*STUDENT_KEY, (pl.col("_skipped") + RECENT_WINDOW_DAYS).alias("_wider")),
            on=STUDENT_KEY,
            how="left",
        ).select(*STUDENT_KEY, pl.coalesce("_wider", "_need").alias("_need"))
    absent = (
        days.filter(pl.col("absence_category").is_in(FULL_DAY_ABSENCE_CATEGORIES))
        .join(start.select(*STUDENT_KEY, "_start"), on=STUDENT_KEY)
        .filter(pl.col("_pos") >= pl.col("_start"))
        .group_by(STUDENT_KEY)
        .agg(pl.len().cast(pl.Int64).alias("_window_absent"))
    )
    return start.join(absent, on=STUDENT_KEY, how="left").select(
        *STUDENT_KEY,
        (pl.col("_covered") - pl.col("_skipped")).alias("_window_days"),
        pl.col("_window_absent").fill_null(0),
    )


def _absence_weeks(coded: pl.DataFrame) -> pl.DataFrame:
    """Per (student, school): ``_weeks``, the calendar weeks (Monday to Sunday) with at least one absence."""
    week = (pl.col("calendar_date").cast(pl.Int32) + 3) // 7  # day 0, 1970-01-01, was a Thursday
    return (
        coded.filter(pl.col("absence_category").is_in(FULL_DAY_ABSENCE_CATEGORIES))
        .group_by(STUDENT_KEY)
        .agg(week.n_unique().cast(pl.Int64).alias("_weeks"))
    )


def _school_figures() -> list[pl.Expr]:
    """ρ (days absent per absence week × WEEK_LENGTH_SCALE) and μ (absence rate × SCHOOL_RATE_SCALE) of each
    school's rows, rounded half up; ρ is 1 day for a school without absences (then every W is 0), μ 0 without
    enrolled days."""
    absent, weeks, enrolled = (pl.col(c).sum().over("school_code") for c in ("_absent", "_weeks", "_enrolled"))

    def ratio(num: pl.Expr, den: pl.Expr, scale: int, empty: int) -> pl.Expr:
        return pl.when(den > 0).then((2 * scale * num + den) // (2 * den)).otherwise(empty)

    return [
        ratio(absent, weeks, WEEK_LENGTH_SCALE, WEEK_LENGTH_SCALE).alias("_week_length"),
        ratio(absent, enrolled, SCHOOL_RATE_SCALE, 0).alias("_school_rate"),
    ]


def _projection_columns(method: str) -> list[pl.Expr]:
    """The projected figures from the counts, the remaining days and the method's rate, in exact integers."""
    numerator, denominator = METHODS[method]()
    has_rate = denominator > 0
    num = pl.when(has_rate).then(numerator).otherwise(0)
    den = pl.when(has_rate).then(denominator).otherwise(1)
    remaining = pl.col("remaining_instructional_days")
    total = _E + remaining  # projected days enrolled
    projected = _A * den + remaining * num  # projected days absent × den
    p, q = CHRONIC_RATE.numerator, CHRONIC_RATE.denominator
    # (A + k)·q < total·p  ⇔  A + k ≤ (total·p − 1) // q
    further = pl.min_horizontal((total * p - 1) // q - _A, remaining)
    return [
        (projected / den).alias("projected_days_absent"),
        pl.when(total > 0).then(projected / (den * total)).otherwise(None).alias("projected_rate"),
        ((projected * q >= den * total * p) & (total >= CHRONIC_MIN_DAYS_ENROLLED)).alias("projected_chronic"),
        pl.when(further >= 0).then(further).otherwise(None).alias("max_further_absences_to_stay_below_10pct"),
    ]


def chronic_absence_projection(
    *,
    calendar: pl.DataFrame,
    enrollment: pl.DataFrame,
    attendance_days: pl.DataFrame,
    school_year: int,
    as_of_date: date,
    computed_at: datetime | None = None,
    method: str = DEFAULT_METHOD,
) -> pl.DataFrame:
    """``aptool.chronic_absence_projection`` for one school year as of a date (contract §3, §4.7).

    One row per (student, school) enrolled on the as-of date (a date outside the school year is moved into it:
    after June 30 counts as June 30);
    days_enrolled and days_absent are the attendance summary's through that date; the rate comes from
    ``method``, one of ``METHODS`` (module docstring). Columns and dtypes are ``PROJECTION_SCHEMA``, sorted by
    student and school. ``computed_at`` defaults to now; a naive value is read as UTC.
    """
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; known: {sorted(METHODS)}")
    year_start, year_end = school_year_bounds(school_year)
    as_of = clip_to_school_year(school_year, as_of_date)

    summary = summary_from_attendance_days(
        calendar=calendar,
        enrollment=enrollment,
        attendance_days=attendance_days,
        school_year=school_year,
        as_of_date=as_of,
    )
    enrolled = enrollment_on(enrollment, summary.select(*STUDENT_KEY, pl.lit(as_of).alias("as_of_date")))
    rows = summary.filter(enrolled.get_column("is_enrolled")).select(
        "school_year",
        *STUDENT_KEY,
        "days_enrolled",
        "days_absent",
        pl.col("days_enrolled").cast(pl.Int64).alias("_enrolled"),
        pl.col("days_absent").cast(pl.Int64).alias("_absent"),
    )

    school_days = instructional_days(calendar)  # sorted by (school, date), as the index below
    index = school_days.select(_day_key(pl.col("school_code"), pl.col("calendar_date"))).to_series()
    stints = conform(enrollment, ENROLLMENT_SCHEMA, "enrollment").join(rows, on=STUDENT_KEY, how="semi")
    _, spans = enrolled_spans(stints, year_start, as_of)
    coded = coded_enrolled_days(attendance_days, school_days, spans, year_start, as_of)

    counts = ["remaining_instructional_days", "_window_days", "_window_absent", "_weeks"]
    return (
        rows.join(_remaining_days(school_days, as_of, year_end), on="school_code", how="left")
        .join(_recent_window(index, spans, coded), on=STUDENT_KEY, how="left")
        .join(_absence_weeks(coded), on=STUDENT_KEY, how="left")
        .with_columns(pl.col(counts).fill_null(0))
        .with_columns(_school_figures())
        .with_columns(_projection_columns(method))
        .with_columns(pl.lit(method).alias("projection_method"), pl.lit(_utc(computed_at)).alias("computed_at"))
        .select(pl.col(name).cast(dtype) for name, dtype in PROJECTION_SCHEMA.items())
        .sort(*STUDENT_KEY)
    )
