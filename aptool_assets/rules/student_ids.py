"""Which Aeries student an i-Ready "Student ID" is (contract §2 ``APTOOL_IREADY_ID_FIELD``, §3).

Districts roster i-Ready with the Aeries permanent StudentID, the school's StudentNumber or the state's
SSID. The file's value is kept as delivered (``vendor_student_id``) and mapped through ``aptool.students``
to the Aeries StudentID (``student_id``), or to null when no student carries it. Pure functions over
polars frames: no Dagster, no I/O.

Identifiers are compared as digits without leading zeros, so ``00123`` in a re-saved file still finds
StudentNumber 123. A value that belongs to several students (StudentNumbers are per school) maps through
the row's school name, or to none: guessing would put one student's results on another.
"""

from __future__ import annotations

import polars as pl

ID_FIELDS: tuple[str, ...] = ("student_id", "student_number", "state_student_id")
"""The ``aptool.students`` columns a district may roster into i-Ready as "Student ID"."""

DEFAULT_ID_FIELD = "student_id"
MATCHED_WARN_BELOW = 0.98
MATCHED_ERROR_BELOW = 0.90
"""``iready_students_matched``: a share of mapped rows under these warns, then fails (contract §3)."""


def id_key(expr: pl.Expr) -> pl.Expr:
    """An identifier as comparable text: trimmed, leading zeros dropped ("0" stays "0"); blank → null."""
    text = expr.cast(pl.Utf8).str.strip_chars()
    stripped = text.str.strip_chars_start("0")
    return pl.when(text == "").then(None).when(stripped == "").then(pl.lit("0")).otherwise(stripped)


def school_key(expr: pl.Expr) -> pl.Expr:
    """A school name as comparable text: lower case, letters and digits only ("Redwood Elementary School")."""
    return expr.cast(pl.Utf8).str.to_lowercase().str.replace_all(r"[^a-z0-9]", "")


def roster_lookup(students: pl.DataFrame, id_field: str) -> pl.DataFrame:
    """(``_id_key``, ``_school_key``, ``student_id``): each value of ``id_field`` in the roster with the student
    carrying it, at each of the student's schools (``_school_key`` from a ``school_name`` column, when given)."""
    if id_field not in ID_FIELDS:
        raise ValueError(f"unknown i-Ready ID field {id_field!r}: expected one of {', '.join(ID_FIELDS)}")
    school = school_key(pl.col("school_name")) if "school_name" in students.columns else pl.lit(None, pl.Utf8)
    return (
        students.select(
            id_key(pl.col(id_field)).alias("_id_key"), school.alias("_school_key"), pl.col("student_id").cast(pl.Int64)
        )
        .drop_nulls(["_id_key", "student_id"])
        .unique()
    )


def _one_student(lookup: pl.DataFrame, on: list[str]) -> pl.DataFrame:
    """Per ``on`` key, the StudentID when exactly one student carries it."""
    return (
        lookup.drop_nulls(on)
        .group_by(on)
        .agg(pl.col("student_id").unique())
        .filter(pl.col("student_id").list.len() == 1)
        .select(*on, pl.col("student_id").list.first())
    )


def map_vendor_ids(results: pl.DataFrame, students: pl.DataFrame, id_field: str = DEFAULT_ID_FIELD) -> pl.DataFrame:
    """``results`` with ``student_id`` set from ``vendor_student_id`` through the roster's ``id_field``.

    A value one student carries maps to that student. A value several students carry (a StudentNumber reused
    at two schools) maps only where the row's ``school_name`` names one of them's school (``students`` then
    needs ``school_name``: the Aeries name of the record's school); otherwise null, never a guess. Rows, their
    order and other columns are kept.
    """
    lookup = roster_lookup(students, id_field)
    by_id = _one_student(lookup, ["_id_key"]).rename({"student_id": "_by_id"})
    by_school = _one_student(lookup, ["_id_key", "_school_key"]).rename({"student_id": "_by_school"})
    school = school_key(pl.col("school_name")) if "school_name" in results.columns else pl.lit(None, pl.Utf8)
    return (
        results.with_columns(id_key(pl.col("vendor_student_id")).alias("_id_key"), school.alias("_school_key"))
        .join(by_id, on="_id_key", how="left", maintain_order="left")
        .join(by_school, on=["_id_key", "_school_key"], how="left", maintain_order="left")
        .with_columns(pl.coalesce("_by_id", "_by_school").alias("student_id"))
        .select(results.columns)
    )


def match_shares(results: pl.DataFrame, students: pl.DataFrame) -> dict[str, float]:
    """For each ID field, the share of ``results`` rows whose ``vendor_student_id`` it maps to one student
    (1.0 for no rows): what the data test compares to suggest a better ``APTOOL_IREADY_ID_FIELD``."""
    if results.height == 0:
        return dict.fromkeys(ID_FIELDS, 1.0)
    return {
        field: map_vendor_ids(results, students, field).get_column("student_id").is_not_null().mean()
        for field in ID_FIELDS
    }
