"""Aeries jobs, one per partitioning: reference data, a date window of attendance, a school year."""

import dagster as dg

from aptool_assets.sources.aeries.assets import (
    ABSENCE_CODES_KEY,
    ATTENDANCE_DAYS_KEY,
    CALENDAR_KEY,
    ENROLLMENT_KEY,
    HISTORY_KEY,
    SCHOOLS_KEY,
    STUDENT_PROGRAMS_KEY,
    STUDENTS_KEY,
)

TAGS = {"aptool/source": "aeries"}

aeries_reference_job = dg.define_asset_job(
    name="aeries_reference_sync",
    selection=dg.AssetSelection.assets(SCHOOLS_KEY, STUDENTS_KEY),
    description="Schools and the full student roster of a school year (the current year's is aptool.students).",
    tags=TAGS,
)
aeries_student_changes_job = dg.define_asset_job(
    name="aeries_student_changes",
    selection=dg.AssetSelection.assets(STUDENTS_KEY),
    description="Re-pull the students the change feed reported (run config lists them).",
    tags=TAGS,
)
aeries_attendance_job = dg.define_asset_job(
    name="aeries_attendance_sync",
    selection=dg.AssetSelection.assets(ATTENDANCE_DAYS_KEY),
    description="Re-pull a date window of daily and period attendance (one request per school and month).",
    tags=TAGS,
)
_YEAR_INPUTS = dg.AssetSelection.assets(CALENDAR_KEY, ENROLLMENT_KEY)
aeries_year_job = dg.define_asset_job(
    name="aeries_year_sync",
    # The year's codes, calendar and enrollment, and what is computed straight from them (the attendance summary,
    # which lives in a layer above the sources: selected by the graph, not imported).
    selection=_YEAR_INPUTS.downstream(depth=1)
    | dg.AssetSelection.assets(ABSENCE_CODES_KEY, HISTORY_KEY, STUDENT_PROGRAMS_KEY),
    description="Absence codes, calendar, enrollment, program records and Aeries' totals for a school year (each "
    "with its DatabaseYear), then the attendance summary.",
    tags=TAGS,
)
aeries_program_changes_job = dg.define_asset_job(
    name="aeries_program_changes",
    selection=dg.AssetSelection.assets(STUDENT_PROGRAMS_KEY),
    description="Re-pull the program records of the schools the change feed reported program changes at "
    "(run config lists them), for one school year.",
    tags=TAGS,
)

AERIES_JOBS = [
    aeries_reference_job,
    aeries_student_changes_job,
    aeries_attendance_job,
    aeries_year_job,
    aeries_program_changes_job,
]
