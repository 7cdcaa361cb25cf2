"""Enrolled school days (contract §4.1): instructional days of a school calendar and the stints a student
is enrolled, counted without expanding one row per student-day.

A sorted (school, date) index of instructional days turns "school days in [start, end]" into two binary
searches per stint; overlapping stints are merged first so a day is never counted twice.
"""

from __future__ import annotations

from datetime import date

import polars as pl

INSTRUCTIONAL_HOLIDAY_CODES: tuple[str, ...] = ("", "%")
"""Regular day and minimum day; every other Aeries HolidayCode (#, @, +, $, ...) is not a school day."""

CALENDAR_SCHEMA = {"school_code": pl.Int32, "calendar_date": pl.Date, "holiday_code": pl.Utf8}
ENROLLMENT_SCHEMA = {
    "student_id": pl.Int64,
    "school_code": pl.Int32,
    "enter_date": pl.Date,
    "leave_date": pl.Date,
}
STUDENT_KEY = ["student_id", "school_code"]


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType], name: str) -> pl.DataFrame:
    """Cast the expected columns (an all-null or empty column may arrive untyped); keep the rest."""
    missing = [col for col in schema if col not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}")
    return frame.with_columns(pl.col(col).cast(dtype) for col, dtype in schema.items())


def instructional_days(calendar: pl.DataFrame) -> pl.DataFrame:
    """(school_code, calendar_date) of school days: HolidayCode '' (regular) or '%' (minimum day).

    A null HolidayCode is read as '' (no holiday code = regular day), the same convention as
    Aeries' empty strings. Duplicate calendar rows collapse; the result is sorted.
    """
    cal = conform(calendar, CALENDAR_SCHEMA, "calendar")
    holiday = pl.col("holiday_code").fill_null("").str.strip_chars()
    return (
        cal.filter(holiday.is_in(INSTRUCTIONAL_HOLIDAY_CODES) & pl.col("calendar_date").is_not_null())
        .select("school_code", "calendar_date")
        .unique()
        .sort("school_code", "calendar_date")
    )


def enrolled_spans(enrollment: pl.DataFrame, year_start: date, as_of: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(roster, spans): who gets a summary row, and their disjoint enrolled date spans.

    Roster: a stint at the school that overlaps the school year and starts on or before the
    as-of date (a stint without an enter date is ignored). Spans: each stint clipped to [year start,
    as-of] (leave date inclusive, open while null), then overlapping stints merged so a day is never
    counted twice.
    """
    stints = conform(enrollment, ENROLLMENT_SCHEMA, "enrollment").filter(
        pl.col("student_id").is_not_null()
        & pl.col("school_code").is_not_null()
        & (pl.col("enter_date") <= as_of)
        & (pl.col("leave_date").is_null() | (pl.col("leave_date") >= year_start))
    )
    roster = stints.select(STUDENT_KEY).unique()
    spans = (
        stints.select(
            *STUDENT_KEY,
            pl.max_horizontal("enter_date", pl.lit(year_start)).cast(pl.Int32).alias("start"),
            pl.min_horizontal(pl.col("leave_date").fill_null(as_of), pl.lit(as_of)).cast(pl.Int32).alias("end"),
        )
        .filter(pl.col("start") <= pl.col("end"))
        .sort(*STUDENT_KEY, "start", "end")
    )
    # Interval merge: a span opens a new group when it is the first of its (student, school)
    # or starts after the furthest end seen so far in it. The running max must restart per
    # (student, school); instead of a slow window (`.over`), ends are lifted by the pair's
    # ordinal so one global cum_max never carries over from the previous pair.
    new_pair = pl.any_horizontal(pl.col(c) != pl.col(c).shift(1) for c in STUDENT_KEY).fill_null(True)
    pair = new_pair.cum_sum().cast(pl.Int64) * (1 << 32)
    furthest_end = (pair + pl.col("end")).cum_max().shift(1)
    opens_group = new_pair | (pair + pl.col("start") > furthest_end)
    spans = (
        spans.with_columns(opens_group.cum_sum().alias("_group"))
        .group_by("_group")
        .agg(pl.col(*STUDENT_KEY).first(), pl.col("start").min(), pl.col("end").max())
        .drop("_group")
    )
    return roster, spans


def _school_day_key(school: pl.Expr, day_number: pl.Expr) -> pl.Expr:
    """Sortable Int64 key of (school, day): school in the high bits, day (offset to ≥ 0) below."""
    return school.cast(pl.Int64) * (1 << 32) + day_number.cast(pl.Int64) + (1 << 31)


def count_school_days(spans: pl.DataFrame, school_days: pl.DataFrame) -> pl.Series:
    """Instructional days of the span's school within [start, end], by two binary searches."""
    keys = school_days.select(
        _school_day_key(pl.col("school_code"), pl.col("calendar_date").cast(pl.Int32))
    ).to_series()
    keys = keys.sort()
    bounds = spans.select(
        _school_day_key(pl.col("school_code"), pl.col("start")).alias("lo"),
        _school_day_key(pl.col("school_code"), pl.col("end")).alias("hi"),
    )
    after_hi = keys.search_sorted(bounds["hi"], side="right").cast(pl.Int64)
    before_lo = keys.search_sorted(bounds["lo"], side="left").cast(pl.Int64)
    return (after_hi - before_lo).alias("school_days")


def enrollment_on(enrollment: pl.DataFrame, students: pl.DataFrame) -> pl.DataFrame:
    """For each (student_id, school_code, as_of_date) of ``students``: ``is_enrolled`` (a stint at that school
    includes the as-of date, leave date inclusive, open while null) and ``left_on`` (the latest leave date
    before the as-of date, null while enrolled or when no stint ended). A student without any stint at the
    school is not enrolled there. Rows keep the order of ``students``."""
    stints = conform(enrollment, ENROLLMENT_SCHEMA, "enrollment").select(*STUDENT_KEY, "enter_date", "leave_date")
    keys = students.select(
        pl.col("student_id").cast(pl.Int64), pl.col("school_code").cast(pl.Int32), pl.col("as_of_date").cast(pl.Date)
    ).with_row_index("_order")
    as_of = pl.col("as_of_date")
    facts = (
        keys.join(stints, on=STUDENT_KEY, how="inner")
        .group_by("_order")
        .agg(
            ((pl.col("enter_date") <= as_of) & (pl.col("leave_date").is_null() | (pl.col("leave_date") >= as_of)))
            .fill_null(False)
            .any()
            .alias("is_enrolled"),
            pl.col("leave_date").filter(pl.col("leave_date") < as_of).max().alias("left_on"),
        )
    )
    return (
        keys.join(facts, on="_order", how="left")
        .sort("_order")
        .select(
            *STUDENT_KEY,
            "as_of_date",
            pl.col("is_enrolled").fill_null(False),
            pl.when(pl.col("is_enrolled").fill_null(False)).then(None).otherwise(pl.col("left_on")).alias("left_on"),
        )
    )
