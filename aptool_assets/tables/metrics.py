"""Published metric tables (contract §3); their columns are the rules' output schemas."""

from __future__ import annotations

import polars as pl

from aptool_assets.rules.attendance import SUMMARY_SCHEMA
from aptool_assets.rules.growth import GROWTH_SCHEMA
from aptool_assets.rules.indicator import INDICATOR_SCHEMA
from aptool_assets.rules.projection import PROJECTION_SCHEMA
from aptool_assets.rules.ranking import RANKING_SCHEMA
from aptool_assets.rules.student_groups import STUDENT_GROUPS_SCHEMA
from aptool_assets.storage.warehouse import TableSpec

STUDENT_ATTENDANCE_SUMMARY = TableSpec(
    name="student_attendance_summary",
    columns=SUMMARY_SCHEMA,
    key=("school_year", "student_id", "school_code"),
    description="Chronic absence and truancy per student, school and year through the as-of date (contract §4.1).",
)

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
    columns=RANKING_SCHEMA,
    key=("school_year", "school_code", "student_id"),
    description="Every student of the attendance summary, ranked per school for outreach (contract §4.4).",
)

STUDENT_GROUPS = TableSpec(
    name="student_groups",
    columns=STUDENT_GROUPS_SCHEMA,
    key=("school_year", "student_id"),
    description="The School Dashboard's student groups per student and school year, from Aeries (contract §4.5).",
)

CHRONIC_ABSENTEEISM_INDICATOR = TableSpec(
    name="chronic_absenteeism_indicator",
    columns=INDICATOR_SCHEMA,
    key=("school_year", "level", "school_code", "student_group"),
    description="A preview of the Dashboard's Chronic Absenteeism Indicator per school, district and group; groups "
    "under 11 students suppressed (contract §4.5). Safe to share.",
)

IREADY_GROWTH = TableSpec(
    name="iready_growth",
    columns=GROWTH_SCHEMA,
    key=("school_year", "student_id", "subject"),
    description="Progress toward the vendor's annual typical and stretch growth per student and subject (§4.6).",
)

CHRONIC_ABSENCE_PROJECTION = TableSpec(
    name="chronic_absence_projection",
    columns=PROJECTION_SCHEMA,
    key=("school_year", "student_id", "school_code"),
    description="Where each enrolled student's absence rate is heading by the last instructional day (§4.7).",
)
