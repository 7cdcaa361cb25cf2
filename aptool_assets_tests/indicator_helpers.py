"""Helpers for the student-group and chronic-absenteeism-indicator tests: hand-built demographics, programs
and per-student-per-school rows, the indicator of them, and lookups of one row."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl

from aptool_assets.rules.indicator import INDICATOR_INPUT_SCHEMA, chronic_absenteeism_indicator
from aptool_assets.rules.student_groups import RACE_CODE_COLUMNS, student_groups

YEAR = 2025
AS_OF = date(2025, 10, 1)
NOW = datetime(2025, 10, 1, 12, 0, tzinfo=UTC)
S1, S2 = 101, 202
ENTERED = date(2025, 8, 13)

# --- student groups --------------------------------------------------------------------------------


def demo(student_id: int = 1, *, races=(), ethnicity: str | None = "N", **fields) -> dict:
    """One demographics record; ``races`` fills RaceCode1.. in order (the rest blank)."""
    codes = list(races) + [""] * (len(RACE_CODE_COLUMNS) - len(races))
    return {
        "student_id": student_id,
        "school_code": fields.pop("school_code", S1),
        "ethnicity_code": ethnicity,
        **dict(zip(RACE_CODE_COLUMNS, codes, strict=True)),
        "language_fluency_code": fields.pop("fluency", "E"),
        "parent_ed_level_code": fields.pop("parent_ed", None),
        "school_enter_date": fields.pop("entered", ENTERED),
        "source_updated_at": fields.pop("updated", datetime(2025, 8, 1, tzinfo=UTC)),
        **fields,
    }


def program(code: str, student_id: int = 1, start: date | None = date(2024, 9, 1), end: date | None = None) -> dict:
    return {"student_id": student_id, "program_code": code, "start_date": start, "end_date": end}


def groups_of(records: list[dict], programs: list[dict] = (), **kwargs) -> pl.DataFrame:
    """``student_groups`` of the records (year YEAR, as of AS_OF unless given)."""
    demographics = pl.DataFrame(records, infer_schema_length=None)
    progs = pl.DataFrame(
        list(programs),
        schema={"student_id": pl.Int64, "program_code": pl.Utf8, "start_date": pl.Date, "end_date": pl.Date},
    )
    kwargs.setdefault("school_year", YEAR)
    kwargs.setdefault("as_of_date", AS_OF)
    return student_groups(demographics, progs, **kwargs)


def one_student(records: list[dict], programs: list[dict] = (), **kwargs) -> dict:
    out = groups_of(records, programs, **kwargs)
    assert out.height == 1, out
    return out.row(0, named=True)


# --- indicator -------------------------------------------------------------------------------------


def rec(
    student_id: int, *, school: int = S1, grade: int | None = 3, enrolled: int = 40, absent: int = 0, **fields
) -> dict:
    """One (student, school) row of the indicator's input; ``race=None`` and ``groups=False`` model a
    student without a groups row."""
    has_groups = fields.pop("groups", True)
    flags = {col: fields.pop(col, False) if has_groups else None for col in list(INDICATOR_INPUT_SCHEMA)[8:]}
    return {
        "school_year": fields.pop("year", YEAR),
        "student_id": student_id,
        "school_code": school,
        "grade": grade,
        "enter_date": fields.pop("entered", ENTERED),
        "days_enrolled": enrolled,
        "days_absent": absent,
        "race_ethnicity": fields.pop("race", "HI") if has_groups else None,
        **flags,
    }


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=INDICATOR_INPUT_SCHEMA)


def cohort(first_id: int, eligible: int, chronic: int, **fields) -> list[dict]:
    """``eligible`` eligible students of whom ``chronic`` are chronically absent (4 of 40 days)."""
    return [rec(first_id + i, absent=4 if i < chronic else 0, **fields) for i in range(eligible)]


def indicator(current: list[dict], prior: list[dict] | None = None, **kwargs) -> pl.DataFrame:
    kwargs.setdefault("school_year", YEAR)
    kwargs.setdefault("as_of_date", AS_OF)
    kwargs.setdefault("computed_at", NOW)
    return chronic_absenteeism_indicator(frame(current), None if prior is None else frame(prior), **kwargs)


def row(table: pl.DataFrame, group: str = "ALL", *, level: str = "school", school: int = S1) -> dict | None:
    """The row of one level, school and group (None when the indicator has none)."""
    school_code = 0 if level == "district" else school
    hits = table.filter(
        (pl.col("level") == level) & (pl.col("school_code") == school_code) & (pl.col("student_group") == group)
    )
    assert hits.height <= 1
    return hits.row(0, named=True) if hits.height else None


def groups_at(table: pl.DataFrame, *, level: str = "school", school: int = S1) -> list[str]:
    school_code = 0 if level == "district" else school
    return table.filter((pl.col("level") == level) & (pl.col("school_code") == school_code))["student_group"].to_list()
