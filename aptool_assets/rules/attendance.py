"""Attendance rules (contract §4.1): instructional days, absence categories, per-student summary.

Pure functions over polars frames: no Dagster, no I/O, so every boundary can be tested with
small hand-built frames and the assets stay thin.

Aeries is *negative* attendance: only days that carry a code arrive. Enrolled days therefore
come from the calendar and the enrollment stints, never from attendance rows. They are counted
without expanding one row per student-day: a sorted (school, date) index of instructional
days turns "school days in [start, end]" into two binary searches per stint. Only the sparse
coded rows are joined.

Input frames (column names and dtypes; ``_conform`` casts and checks them):

- calendar: school_code Int32, calendar_date Date, holiday_code Utf8
- enrollment: student_id Int64, school_code Int32, enter_date Date, leave_date Date (null = open)
- absence_codes: school_code Int32, code Utf8, type_code Int32, counts_for_ada,
  is_suspension, is_partial_day_truant, is_temporarily_not_enrolled (Boolean); optionally
  school_year Int32 (codes are then looked up in the table of the year each date falls in).
  SchoolCode 0 is the district-wide table: a code a school's table lacks is looked up there.
- attendance: student_id Int64, school_code Int32, calendar_date Date, all_day_code Utf8,
  period_codes List(Struct(period Utf8, section_number Int64, code Utf8))
"""

from __future__ import annotations

from datetime import date

import polars as pl

from aptool_assets.rules.enrollment import (
    STUDENT_KEY,
    conform,
    count_school_days,
    enrolled_spans,
    instructional_days,
)
from aptool_assets.rules.period_codes import PERIOD_CODE
from aptool_assets.vocabulary import (
    CHRONIC_MIN_DAYS_ENROLLED,
    CHRONIC_RATE,
    TIER_LOWER_BOUNDS,
    TRUANCY_LETTER_THRESHOLDS,
    school_year_bounds,
    school_year_expr,
)

ABSENCE_CATEGORIES: tuple[str, ...] = (
    "absent_excused",
    "absent_unexcused",
    "absent_unverified",
    "suspension_out_of_school",
    "suspension_in_school",
    "not_enrolled",
    "tardy",
    "present",
    "partial",
    "unknown_code",
)

FULL_DAY_ABSENCE_CATEGORIES: tuple[str, ...] = (
    "absent_unverified",
    "absent_excused",
    "absent_unexcused",
    "suspension_out_of_school",
    "unknown_code",
)
"""What ``days_absent`` adds up. ISS, tardies and partial days are attendance, not absence; a code found in
no table is counted as an unverified absence (contract §4.1: never silently dropped)."""

_CATEGORY_COLUMNS: dict[str, str] = {
    "absent_unverified": "days_unverified",
    "absent_excused": "days_excused",
    "absent_unexcused": "days_unexcused",
    "suspension_out_of_school": "days_suspension_out_of_school",
}
"""The summary column that counts each absence category (``unknown_code`` days count as unverified)."""

DISTRICT_SCHOOL_CODE = 0
"""Aeries' district pseudo-school: its absence-code table holds the district-wide definitions."""

CATEGORY_BY_TYPE_CODE: dict[int, str] = {
    1: "absent_unverified",
    2: "absent_excused",
    3: "absent_unexcused",
    4: "present",
    6: "present",
    5: "tardy",
    8: "tardy",
    9: "tardy",
}
"""Aeries TypeCode → category, used only when no flag applies (TypeCode 7 is unused → null)."""

UNEXCUSED_TYPE_CODE = 3

PERIOD_CODES_DTYPE = pl.List(PERIOD_CODE)

ABSENCE_CODES_SCHEMA = {
    "school_code": pl.Int32,
    "code": pl.Utf8,
    "type_code": pl.Int32,
    "counts_for_ada": pl.Boolean,
    "is_suspension": pl.Boolean,
    "is_partial_day_truant": pl.Boolean,
    "is_temporarily_not_enrolled": pl.Boolean,
}
ATTENDANCE_SCHEMA = {
    "student_id": pl.Int64,
    "school_code": pl.Int32,
    "calendar_date": pl.Date,
    "all_day_code": pl.Utf8,
    "period_codes": PERIOD_CODES_DTYPE,
}
ATTENDANCE_DAYS_SCHEMA = {
    "student_id": pl.Int64,
    "school_code": pl.Int32,
    "calendar_date": pl.Date,
    "absence_category": pl.Utf8,
    "is_truancy_day": pl.Boolean,
}
"""The columns ``summary_from_attendance_days`` needs from ``categorize_attendance``'s output."""

SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "school_year": pl.Int32(),
    "student_id": pl.Int64(),
    "school_code": pl.Int32(),
    "as_of_date": pl.Date(),
    "days_enrolled": pl.Int32(),
    "days_absent": pl.Int32(),
    "days_excused": pl.Int32(),
    "days_unexcused": pl.Int32(),
    "days_unverified": pl.Int32(),
    "days_suspension_out_of_school": pl.Int32(),
    "days_suspension_in_school": pl.Int32(),
    "absence_rate": pl.Float64(),
    "is_chronically_absent": pl.Boolean(),
    "attendance_tier": pl.Utf8(),
    "truancy_count": pl.Int32(),
    "truancy_letter_level": pl.Int32(),
}

_DAY_KEY = ["student_id", "school_code", "calendar_date"]


def _blank_to_null(col: str) -> pl.Expr:
    """Aeries sends '' or null for "no code"; trim stray spaces and treat both the same."""
    code = pl.col(col).str.strip_chars()
    return pl.when(code == "").then(None).otherwise(code)


_YEAR = "_school_year"  # the school year of an attendance date, when code tables are kept per year


def _code_table(absence_codes: pl.DataFrame, schools: pl.Series) -> tuple[pl.DataFrame, list[str]]:
    """(codes, key): one definition per (school year when given, school_code, code) for every school in
    ``schools``: the school's own row, else the district-wide row (SchoolCode 0) it inherits. Null flags
    read as false, so nothing is invented."""
    flags = ["counts_for_ada", "is_suspension", "is_partial_day_truant", "is_temporarily_not_enrolled"]
    by_year = "school_year" in absence_codes.columns
    schema = ABSENCE_CODES_SCHEMA | ({"school_year": pl.Int32} if by_year else {})
    scope = [_YEAR] if by_year else []
    key = [*scope, "school_code", "code"]
    codes = (
        conform(absence_codes, schema, "absence_codes")
        .select(
            *([pl.col("school_year").alias(_YEAR)] if by_year else []),
            "school_code",
            _blank_to_null("code").alias("code"),
            "type_code",
            *[pl.col(flag).fill_null(False) for flag in flags],
        )
        .drop_nulls(key)
        .unique(subset=key, keep="first", maintain_order=True)
    )
    district = codes.filter(pl.col("school_code") == DISTRICT_SCHOOL_CODE).drop("school_code")
    others = pl.DataFrame({"school_code": schools.unique().drop_nulls()}, schema={"school_code": pl.Int32})
    inherited = (
        others.filter(pl.col("school_code") != DISTRICT_SCHOOL_CODE)
        .join(district, how="cross")
        .join(codes, on=key, how="anti")
        .select(codes.columns)
    )
    return pl.concat([codes, inherited]), key


def _period_facts(frame: pl.DataFrame, codes: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """Per attendance row (``_row``) that has period codes: any coded period, truancy, unknown code.

    Only rows with a non-empty list are exploded, so the cost follows the sparse coded periods.
    A suspension code never counts toward truancy (contract §4.1), whatever its TypeCode.
    """
    truant = (
        (pl.col("is_partial_day_truant") | (pl.col("type_code") == UNEXCUSED_TYPE_CODE)) & ~pl.col("is_suspension")
    ).fill_null(False)
    scope = key[:-2]
    periods = (
        frame.filter(pl.col("period_codes").list.len() > 0)
        .select("_row", *scope, "school_code", pl.col("period_codes").list.eval(pl.element().struct.field("code")))
        .explode("period_codes")
        .select("_row", *scope, "school_code", _blank_to_null("period_codes").alias("code"))
        .drop_nulls("code")
    )
    return (
        periods.join(
            codes.select(*key, "type_code", "is_partial_day_truant", "is_suspension", pl.lit(True).alias("_known")),
            on=key,
            how="left",
        )
        .group_by("_row")
        .agg(
            truant.any().alias("_period_truant"),
            pl.col("code").filter(pl.col("_known").is_null()).min().alias("_unknown_period_code"),
        )
    )


def _category_expr(has_code: pl.Expr, known: pl.Expr) -> pl.Expr:
    """The day's category over the joined code facts: flags first, then TypeCode (contract §4.1)."""
    has_period = pl.col("_period_truant").is_not_null()  # set for every row with a coded period
    return (
        pl.when(~has_code)
        .then(pl.when(has_period).then(pl.lit("partial")).otherwise(pl.lit(None, dtype=pl.Utf8)))
        .when(~known)
        .then(pl.lit("unknown_code"))
        .when(pl.col("is_temporarily_not_enrolled"))
        .then(pl.lit("not_enrolled"))
        .when(pl.col("is_suspension") & ~pl.col("counts_for_ada"))
        .then(pl.lit("suspension_out_of_school"))
        .when(pl.col("is_suspension"))
        .then(pl.lit("suspension_in_school"))
        .otherwise(pl.col("type_code").replace_strict(CATEGORY_BY_TYPE_CODE, default=None, return_dtype=pl.Utf8))
    )


def _truancy_expr(known: pl.Expr) -> pl.Expr:
    """Ed. Code 48260 day: an unexcused (TypeCode 3) or partial-day-truant all-day code that is not a
    suspension code, or such a period code; never on a day the student was not enrolled (needs
    ``absence_category``). A suspension is a removal, not truancy."""
    all_day_truant = (
        known
        & ~pl.col("is_suspension").fill_null(False)
        & ((pl.col("type_code") == UNEXCUSED_TYPE_CODE) | pl.col("is_partial_day_truant")).fill_null(False)
    )
    return (all_day_truant | pl.col("_period_truant").fill_null(False)) & (
        pl.col("absence_category") != "not_enrolled"
    ).fill_null(True)


def categorize_attendance(attendance: pl.DataFrame, absence_codes: pl.DataFrame) -> pl.DataFrame:
    """Add absence_category, is_full_day_absence, is_truancy_day and unknown_code to coded days.

    The category comes from the all-day code's row in *that school's* code table, or, when the school's
    table lacks the code, in the district-wide table (SchoolCode 0); with a ``school_year`` column in
    ``absence_codes``, from the tables of the school year the date falls in. Flags first (contract
    §4.1): IsTemporarilyNotEnrolled → not_enrolled; IsSuspension without ADA → suspension_out_of_school,
    with ADA → suspension_in_school; else TypeCode (1 unverified, 2 excused, 3 unexcused, 4/6 present,
    5/8/9 tardy). No all-day code but a coded period → partial, even when every period is coded.

    Codes that cannot be read never crash and are never silently dropped:

    - an all-day code in neither table → category ``unknown_code`` (a full-day absence, counted as
      unverified by the summary), ``unknown_code`` = the code;
    - otherwise a period code in neither table → ``unknown_code`` = the (smallest) such code; the day
      keeps its category and that period simply adds nothing;
    - a known all-day code whose TypeCode has no meaning (7 or anything unlisted) and no flag →
      category null (``unknown_code`` stays null: the code exists, its definition is the gap);
    - a row with neither an all-day nor a period code → category null.

    ``is_truancy_day`` (Ed. Code 48260, counted per day): the all-day code has TypeCode 3 or is
    flagged IsPartialDayTruant, or any period code is flagged IsPartialDayTruant or has TypeCode 3,
    where a suspension code never counts (whatever its TypeCode). A not_enrolled day is never a
    truancy day: the student was not enrolled. Input rows keep their order and columns; the four
    columns are appended.
    """
    added = ["absence_category", "is_full_day_absence", "is_truancy_day", "unknown_code"]
    attendance = attendance.drop(added, strict=False)  # re-categorizing replaces, never duplicates
    frame = conform(attendance, ATTENDANCE_SCHEMA, "attendance").with_row_index("_row")
    codes, key = _code_table(absence_codes, frame.get_column("school_code"))
    frame = frame.with_columns(_blank_to_null("all_day_code").alias("_code"))
    if _YEAR in key:
        frame = frame.with_columns(school_year_expr("calendar_date").alias(_YEAR))

    frame = frame.join(
        codes.rename({"code": "_code"}).with_columns(pl.lit(True).alias("_known")),
        on=[*key[:-1], "_code"],
        how="left",
        maintain_order="left",
    ).join(_period_facts(frame, codes, key), on="_row", how="left", maintain_order="left")

    has_code = pl.col("_code").is_not_null()
    known = pl.col("_known").fill_null(False)
    unknown = pl.when(has_code & ~known).then(pl.col("_code")).otherwise(pl.col("_unknown_period_code"))
    return (
        frame.with_columns(_category_expr(has_code, known).alias("absence_category"))
        .with_columns(
            pl.col("absence_category").is_in(FULL_DAY_ABSENCE_CATEGORIES).fill_null(False).alias("is_full_day_absence"),
            _truancy_expr(known).alias("is_truancy_day"),
            unknown.alias("unknown_code"),
        )
        .select(*attendance.columns, *added)
    )


def attendance_tier_expr(rate_col: str = "absence_rate") -> pl.Expr:
    """Attendance Works band by absence rate: satisfactory < 0.05 ≤ at_risk < 0.10 ≤
    moderate_chronic < 0.20 ≤ severe_chronic (lower bounds inclusive).

    A null rate (no enrolled days yet) is ``satisfactory``: the tier column is never null and
    a student with nothing to measure has missed nothing. Exact boundaries are safe when the
    rate is ``days_absent / days_enrolled``: IEEE division is correctly rounded, so 3/60 is the
    same double as the literal 0.05 (never compute the rate as ``1 - attendance``).
    """
    rate = pl.col(rate_col)
    expr = pl.when(rate.is_null()).then(pl.lit("satisfactory"))
    for tier, lower in TIER_LOWER_BOUNDS:
        expr = expr.when(rate >= lower).then(pl.lit(tier))
    return expr.otherwise(pl.lit("satisfactory")).alias("attendance_tier")


def truancy_letter_level_expr(count_col: str = "truancy_count") -> pl.Expr:
    """Letter level 0 below 3, 1 at 3–5, 2 at 6–8, 3 at 9 or more (Int32; a null count → 0)."""
    count = pl.col(count_col)
    expr = pl.lit(0, dtype=pl.Int32)
    for level, threshold in enumerate(TRUANCY_LETTER_THRESHOLDS, start=1):
        expr = pl.when(count >= threshold).then(pl.lit(level, dtype=pl.Int32)).otherwise(expr)
    return expr.alias("truancy_letter_level")


def chronically_absent_expr(absent: str = "days_absent", enrolled: str = "days_enrolled") -> pl.Expr:
    """Absent on at least ``CHRONIC_RATE`` of at least ``CHRONIC_MIN_DAYS_ENROLLED`` enrolled days.

    Integers, not the float rate: "10% or more" must include exactly 10%.
    """
    return (
        pl.col(absent).cast(pl.Int64) * CHRONIC_RATE.denominator
        >= pl.col(enrolled).cast(pl.Int64) * CHRONIC_RATE.numerator
    ) & (pl.col(enrolled) >= CHRONIC_MIN_DAYS_ENROLLED)


def absence_rate_expr(absent: str = "days_absent", enrolled: str = "days_enrolled") -> pl.Expr:
    """Days absent / days enrolled (Float64); null without enrolled days."""
    return pl.when(pl.col(enrolled) > 0).then(pl.col(absent) / pl.col(enrolled)).otherwise(None).cast(pl.Float64)


def coded_enrolled_days(
    attendance_days: pl.DataFrame, school_days: pl.DataFrame, spans: pl.DataFrame, year_start: date, as_of: date
) -> pl.DataFrame:
    """Coded rows that count: on an instructional day of their school, inside a merged enrolled span
    (already clipped to the year and the as-of date). A repeated (student, school, date): the last wins."""
    return (
        conform(attendance_days, ATTENDANCE_DAYS_SCHEMA, "attendance_days")
        .select(*_DAY_KEY, "absence_category", "is_truancy_day")
        .filter(pl.col("calendar_date").is_between(year_start, as_of))
        .unique(subset=_DAY_KEY, keep="last")  # "last" in input order; output order is free
        .join(school_days, on=["school_code", "calendar_date"], how="semi")
        .join(spans.select(*STUDENT_KEY, "start", "end"), on=STUDENT_KEY, how="inner")
        .filter(pl.col("calendar_date").cast(pl.Int32).is_between(pl.col("start"), pl.col("end")))
    )


def _day_counts(coded: pl.DataFrame) -> pl.DataFrame:
    """Per (student, school): days by category, not-enrolled days and truancy days (each day once)."""
    category = pl.col("absence_category")

    def days(name: str) -> pl.Expr:
        return (category == name).fill_null(False).sum()

    return coded.group_by(STUDENT_KEY).agg(
        days("not_enrolled").alias("_not_enrolled"),
        days("absent_excused").alias("days_excused"),
        days("absent_unexcused").alias("days_unexcused"),
        category.is_in(["absent_unverified", "unknown_code"]).fill_null(False).sum().alias("days_unverified"),
        days("suspension_out_of_school").alias("days_suspension_out_of_school"),
        days("suspension_in_school").alias("days_suspension_in_school"),
        (pl.col("is_truancy_day").fill_null(False) & (category != "not_enrolled").fill_null(True))
        .sum()
        .alias("truancy_count"),
    )


def summary_from_attendance_days(
    *,
    calendar: pl.DataFrame,
    enrollment: pl.DataFrame,
    attendance_days: pl.DataFrame,
    school_year: int,
    as_of_date: date,
) -> pl.DataFrame:
    """The summary from already categorized days (``categorize_attendance`` output).

    Split out so an asset that has materialized ``aptool.attendance_days`` (plus
    ``is_truancy_day``) does not categorize twice. See ``student_attendance_summary``.
    If a (student, school, date) appears twice, the last row wins (later rows are newer).
    """
    year_start, year_end = school_year_bounds(school_year)
    as_of = min(as_of_date, year_end)  # contract §2: the as-of date is capped at the year's end

    school_days = instructional_days(calendar)
    roster, spans = enrolled_spans(enrollment, year_start, as_of)
    spans = spans.with_columns(count_school_days(spans, school_days))
    span_days = spans.group_by(STUDENT_KEY).agg(pl.col("school_days").sum().alias("_span_days"))
    counts = _day_counts(coded_enrolled_days(attendance_days, school_days, spans, year_start, as_of))
    count_cols = [c for c in counts.columns if c not in STUDENT_KEY]

    out = (
        roster.join(span_days, on=STUDENT_KEY, how="left")
        .join(counts, on=STUDENT_KEY, how="left")
        .with_columns(pl.col("_span_days", *count_cols).fill_null(0).cast(pl.Int32))
        .with_columns(
            (pl.col("_span_days") - pl.col("_not_enrolled")).alias("days_enrolled"),
            pl.sum_horizontal(*_CATEGORY_COLUMNS.values()).alias("days_absent"),
        )
        .with_columns(
            absence_rate_expr().alias("absence_rate"),
            chronically_absent_expr().alias("is_chronically_absent"),
            pl.lit(school_year, dtype=pl.Int32).alias("school_year"),
            pl.lit(as_of, dtype=pl.Date).alias("as_of_date"),
        )
        .with_columns(attendance_tier_expr("absence_rate"), truancy_letter_level_expr("truancy_count"))
    )
    return out.select(pl.col(name).cast(dtype) for name, dtype in SUMMARY_SCHEMA.items()).sort(
        "student_id", "school_code"
    )


def student_attendance_summary(
    *,
    calendar: pl.DataFrame,
    enrollment: pl.DataFrame,
    attendance: pl.DataFrame,
    absence_codes: pl.DataFrame,
    school_year: int,
    as_of_date: date,
) -> pl.DataFrame:
    """``aptool.student_attendance_summary``: one row per (school_year, student_id, school_code).

    Rows: every student with a stint at the school that overlaps the school year (July 1 –
    June 30) and starts on or before the as-of date (capped at the year's end; the column
    holds the capped date). A student who moved has one row per school, each counting only
    that school's days.

    - days_enrolled: instructional days of the school from enter to leave date (inclusive,
      open while null), clipped to the year and the as-of date, overlapping stints counted
      once, minus enrolled days whose all-day code is IsTemporarilyNotEnrolled.
    - Absence, suspension and truancy counts look only at enrolled days: codes on holidays,
      outside the stints or after the as-of date are ignored. days_absent = unverified +
      excused + unexcused + out-of-school suspension.
    - absence_rate = days_absent / days_enrolled, null when days_enrolled = 0 (tier then
      ``satisfactory``); is_chronically_absent when rate ≥ 0.10 and days_enrolled ≥ 31.
    - truancy_count: enrolled truancy days, each once; truancy_letter_level from it.
    """
    return summary_from_attendance_days(
        calendar=calendar,
        enrollment=enrollment,
        attendance_days=categorize_attendance(attendance, absence_codes),
        school_year=school_year,
        as_of_date=as_of_date,
    )
