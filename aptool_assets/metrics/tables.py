"""Published metric tables (contract §3)."""

from __future__ import annotations

import polars as pl

from aptool_assets.storage.warehouse import TableSpec

STUDENT_ACADEMIC_RISK = TableSpec(
    name="student_academic_risk",
    columns={
        "school_year": pl.Int32,
        "student_id": pl.Int64,
        "ela_relative_placement": pl.Utf8,
        "math_relative_placement": pl.Utf8,
        "ela_risk": pl.Utf8,
        "math_risk": pl.Utf8,
        "overall_risk": pl.Utf8,
        "ela_completion_date": pl.Date,
        "math_completion_date": pl.Date,
    },
    key=("school_year", "student_id"),
    description="Academic risk per student and school year from the most recent diagnostic per subject.",
)

