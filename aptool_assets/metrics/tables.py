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


STUDENT_INTERVENTION_RANKING = TableSpec(
    name="student_intervention_ranking",
    columns={
        "school_year": pl.Int32,
        "school_code": pl.Int32,
        "student_id": pl.Int64,
        "rank": pl.Int32,
        "priority_score": pl.Float64,
        "attendance_tier": pl.Utf8,
        "overall_risk": pl.Utf8,
        "absence_rate": pl.Float64,
        "is_chronically_absent": pl.Boolean,
        "reasons": pl.Utf8,
        "computed_at": pl.Datetime("us", "UTC"),
    },
    key=("school_year", "school_code", "student_id"),
    description="Every student of the attendance summary, ranked per school for outreach (contract §4.4).",
)
