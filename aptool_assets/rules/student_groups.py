"""Student groups of the California School Dashboard (contract §3 ``aptool.student_groups``, §4.5).

Pure functions over polars frames: no Dagster, no I/O. One row per student and school year: the
race/ethnicity group from the CALPADS codes on the Aeries student record, English learner status,
and the program-based groups (students with disabilities, homeless, foster youth) and
socioeconomic disadvantage.

Input frames (column names and dtypes; ``conform`` casts and checks them):

- demographics: student_id Int64, school_code Int32, ethnicity_code Utf8, race_code_1 .. race_code_5
  Utf8 (CALPADS codes as text: "100", "201", "600"; blank or null = none), language_fluency_code Utf8,
  parent_ed_level_code Utf8 (nullable), school_enter_date Date (nullable), source_updated_at Datetime.
  One record per school the student attends; the groups are read from the record entered last.
- programs: student_id Int64, program_code Utf8, start_date Date, end_date Date (null = open).
"""

from __future__ import annotations

from datetime import date

import polars as pl

from aptool_assets.rules.enrollment import conform
from aptool_assets.vocabulary import (
    DEFAULT_FOSTER_PROGRAM_CODE,
    NOT_REPORTED,
    UTC_TS,
    clip_to_school_year,
    school_year_bounds,
)

RACE_CODE_COLUMNS: tuple[str, ...] = tuple(f"race_code_{i}" for i in range(1, 6))

DEMOGRAPHICS_SCHEMA: dict[str, pl.DataType] = {
    "student_id": pl.Int64(),
    "school_code": pl.Int32(),
    "ethnicity_code": pl.Utf8(),
    **{col: pl.Utf8() for col in RACE_CODE_COLUMNS},
    "language_fluency_code": pl.Utf8(),
    "parent_ed_level_code": pl.Utf8(),
    "school_enter_date": pl.Date(),
}
"""Demographics columns besides ``source_updated_at`` (any Datetime; a naive one is read as UTC)."""

PROGRAMS_SCHEMA: dict[str, pl.DataType] = {
    "student_id": pl.Int64(),
    "program_code": pl.Utf8(),
    "start_date": pl.Date(),
    "end_date": pl.Date(),
}

GROUP_COLUMNS: dict[str, pl.DataType] = {
    "race_ethnicity": pl.Utf8(),
    "is_english_learner": pl.Boolean(),
    "is_socioeconomically_disadvantaged": pl.Boolean(),
    "is_student_with_disability": pl.Boolean(),
    "is_foster_youth": pl.Boolean(),
    "is_homeless": pl.Boolean(),
}
"""A student's Dashboard groups: what the indicator reads beside each student's days."""

STUDENT_GROUPS_SCHEMA: dict[str, pl.DataType] = {
    "school_year": pl.Int32(),
    "student_id": pl.Int64(),
    **GROUP_COLUMNS,
    "source_updated_at": UTC_TS,
}

HISPANIC_ETHNICITY_CODE = "Y"
"""``EthnicityCode`` Y (Hispanic or Latino) decides the group whatever the race codes say."""

RACE_CODE_RANGES: tuple[tuple[int, int, str], ...] = (
    (100, 100, "AI"),
    (201, 299, "AS"),
    (301, 399, "PI"),
    (400, 400, "FI"),
    (600, 600, "AA"),
    (700, 700, "WH"),
)
"""CALPADS race code ranges (inclusive) → Dashboard group; any other code (200, 300, 500, 800 …) is none."""

MULTIPLE_RACES = "MR"
ENGLISH_LEARNER_FLUENCY_CODE = "L"
NOT_A_HIGH_SCHOOL_GRADUATE = "14"
"""``ParentEdLevelCode`` 14: the parents did not graduate from high school (a route into SED)."""

SWD_PROGRAM_CODE = "144"
HOMELESS_PROGRAM_CODE = "191"
MIGRANT_PROGRAM_CODE = "135"
MEAL_PROGRAM_CODES: tuple[str, ...] = ("181", "182")
"""Free and reduced-price meal eligibility: either one makes a student socioeconomically disadvantaged."""


def _code(col: str) -> pl.Expr:
    """A code column trimmed and upper-cased, blank → null (Aeries sends '' or null for "none")."""
    code = pl.col(col).str.strip_chars().str.to_uppercase()
    return pl.when(code == "").then(None).otherwise(code)


def _utc(col: str, dtype: pl.DataType) -> pl.Expr:
    """A Datetime column as microseconds in UTC; a naive one is read as UTC."""
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return pl.col(col).dt.replace_time_zone("UTC").cast(UTC_TS)
    if isinstance(dtype, pl.Datetime):
        return pl.col(col).dt.convert_time_zone("UTC").cast(UTC_TS)
    return pl.col(col).cast(UTC_TS)


_PARSED = [f"_race_{i}" for i in range(1, len(RACE_CODE_COLUMNS) + 1)]


def parsed_race_codes() -> list[pl.Expr]:
    """RaceCode1..5 as numbers (``_race_1`` ..): trimmed; blank, null or not a number → null."""
    return [
        pl.col(col).str.strip_chars().cast(pl.Int32, strict=False).alias(p)
        for col, p in zip(RACE_CODE_COLUMNS, _PARSED, strict=True)
    ]


def race_ethnicity_expr() -> pl.Expr:
    """Contract §4.5: EthnicityCode Y → HI; else the group of RaceCode1..5; two or more *different* groups
    → MR (201 and 205 are both Asian: AS); none → NR. Reads the columns of ``parsed_race_codes``.

    Columnar, without lists: per group, whether any of the five codes falls in its range; the number
    of groups found decides between NR, that one group and MR.
    """
    found = {
        group: pl.any_horizontal(pl.col(c).is_between(low, high).fill_null(False) for c in _PARSED)
        for low, high, group in RACE_CODE_RANGES
    }
    n_groups = pl.sum_horizontal(f.cast(pl.Int8) for f in found.values())
    single = pl.coalesce(pl.when(f).then(pl.lit(group)) for group, f in found.items())
    return (
        pl.when(_code("ethnicity_code") == HISPANIC_ETHNICITY_CODE)
        .then(pl.lit("HI"))
        .when(n_groups == 0)
        .then(pl.lit(NOT_REPORTED))
        .when(n_groups == 1)
        .then(single)
        .otherwise(pl.lit(MULTIPLE_RACES))
        .alias("race_ethnicity")
    )


def _latest_records(demographics: pl.DataFrame) -> pl.DataFrame:
    """One demographics record per student: the one entered last (latest school_enter_date, then latest
    source_updated_at, then the highest school_code so the choice never depends on row order; a null date
    counts as earliest), plus the student's latest ``source_updated_at`` over all records."""
    dtype = demographics.schema.get("source_updated_at")
    if dtype is None:
        raise ValueError("demographics frame lacks columns ['source_updated_at']")
    frame = conform(demographics, DEMOGRAPHICS_SCHEMA, "demographics").with_columns(
        _utc("source_updated_at", dtype).alias("_updated")
    )
    frame = frame.filter(pl.col("student_id").is_not_null())
    newest = frame.group_by("student_id").agg(pl.col("_updated").max().alias("source_updated_at"))
    latest = frame.sort(
        "student_id", "school_enter_date", "_updated", "school_code", nulls_last=False, maintain_order=True
    ).unique(subset="student_id", keep="last", maintain_order=True)
    return latest.drop("source_updated_at").join(newest, on="student_id", how="left")


def _program_flags(programs: pl.DataFrame, school_year: int, as_of: date, foster_code: str) -> pl.DataFrame:
    """Per student with a program active at any time from July 1 through the as-of date: which groups."""
    year_start, _ = school_year_bounds(school_year)
    code = _code("program_code")
    active = conform(programs, PROGRAMS_SCHEMA, "programs").filter(
        pl.col("student_id").is_not_null()
        & (pl.col("start_date").is_null() | (pl.col("start_date") <= as_of))
        & (pl.col("end_date").is_null() | (pl.col("end_date") >= year_start))
    )
    return active.group_by("student_id").agg(
        (code == SWD_PROGRAM_CODE).any().alias("_swd"),
        (code == HOMELESS_PROGRAM_CODE).any().alias("_hom"),
        (code == foster_code).any().alias("_fos"),
        (code == MIGRANT_PROGRAM_CODE).any().alias("_migrant"),
        code.is_in(MEAL_PROGRAM_CODES).any().alias("_meals"),
    )


def student_groups(
    demographics: pl.DataFrame,
    programs: pl.DataFrame,
    *,
    school_year: int,
    as_of_date: date,
    foster_program_code: str = DEFAULT_FOSTER_PROGRAM_CODE,
) -> pl.DataFrame:
    """``aptool.student_groups`` for one school year: one row per student of ``demographics``.

    - race_ethnicity, is_english_learner and the parent-education route into SED come from the
      student's record entered last (latest school_enter_date, then latest source_updated_at).
      Codes are compared trimmed and upper-cased; a race code that is not a number is none.
    - Programs count when active at any time from July 1 of ``school_year`` through the as-of date
      (moved into the school year, as the summary caps it): started on or before it (a null start is
      open) and not ended before July 1 (a null end is open). A program ended mid-year still counts.
    - SWD: program 144; HOM: 191; FOS: ``foster_program_code`` (``APTOOL_FOSTER_PROGRAM_CODE``);
      SED: program 181 or 182, or ParentEdLevelCode 14, or migrant (135), homeless or foster.
    - source_updated_at: the latest of the student's demographics records (any of them may change the
      choice of record).

    A student with programs but no demographics record gets no row: the roster decides who is a
    student. Output columns and dtypes are ``STUDENT_GROUPS_SCHEMA``, sorted by student_id.
    """
    as_of = clip_to_school_year(school_year, as_of_date)
    foster_code = foster_program_code.strip().upper()
    flags = _program_flags(programs, school_year, as_of, foster_code)
    flag_cols = [c for c in flags.columns if c != "student_id"]
    out = (
        _latest_records(demographics)
        .join(flags, on="student_id", how="left")
        .with_columns(pl.col(flag_cols).fill_null(False), *parsed_race_codes())
        .with_columns(
            race_ethnicity_expr(),
            (_code("language_fluency_code") == ENGLISH_LEARNER_FLUENCY_CODE)
            .fill_null(False)
            .alias("is_english_learner"),
            pl.col("_swd").alias("is_student_with_disability"),
            pl.col("_fos").alias("is_foster_youth"),
            pl.col("_hom").alias("is_homeless"),
            (
                pl.col("_meals")
                | (_code("parent_ed_level_code") == NOT_A_HIGH_SCHOOL_GRADUATE).fill_null(False)
                | pl.col("_migrant")
                | pl.col("_hom")
                | pl.col("_fos")
            ).alias("is_socioeconomically_disadvantaged"),
            pl.lit(school_year, dtype=pl.Int32).alias("school_year"),
        )
    )
    return out.select(pl.col(name).cast(dtype) for name, dtype in STUDENT_GROUPS_SCHEMA.items()).sort("student_id")
