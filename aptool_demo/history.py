"""AttendanceHistory summaries (reference §6.7), as the simulated Aeries' nightly job computes them.

They are derived from attendance + calendar + absence codes, by all-day code, and only when the job
runs, so clients learn that the summaries lag the attendance they could read directly.
"""

from __future__ import annotations

HISTORY_COUNTS = (
    "DaysEnrolled",
    "DaysAbsence",
    "DaysExcused",
    "DaysUnexcused",
    "DaysTardy",
    "DaysOfTruancy",
    "DaysSuspension",
    "DaysInSchoolSuspension",
)


def count_day(counts: dict[str, int], entry: dict | None, table: dict[str, dict]) -> None:
    """Add one instructional day to a student's totals (reference §6.7)."""
    all_day = table.get(entry["all_day"]) if entry and entry["all_day"] else None
    if all_day and all_day["IsTemporarilyNotEnrolled"]:
        return
    counts["DaysEnrolled"] += 1
    if all_day:
        type_code = all_day["TypeCode"]
        if type_code in (1, 2, 3):
            counts["DaysAbsence"] += 1
            # Undocumented how Aeries files unverified (1); until verified it is treated as unexcused here.
            counts["DaysExcused" if type_code == 2 else "DaysUnexcused"] += 1
        if type_code in (5, 8, 9):
            counts["DaysTardy"] += 1
        if all_day["IsSuspension"]:
            counts["DaysInSchoolSuspension" if all_day["CountsForADA"] else "DaysSuspension"] += 1
    if entry:
        codes = [table.get(c) for c in [entry["all_day"], *entry["periods"].values()] if c]
        if any(c and (c["TypeCode"] == 3 or c["IsPartialDayTruant"]) for c in codes):
            counts["DaysOfTruancy"] += 1


def summary_record(school_code: int, school_year: int, counts: dict[str, int]) -> dict:
    """One ``HistorySummaries`` entry in the shape of the recorded response (period counts stay zero)."""
    return {
        "SchoolYear": f"{school_year}-{school_year + 1}",
        "SchoolCode": school_code,
        "ReportingSchoolCode": 0,
        "AttendanceProgramCodePrimary": "",
        "DaysEnrolled": counts["DaysEnrolled"],
        "DaysPresent": counts["DaysEnrolled"] - counts["DaysAbsence"],
        "DaysAbsence": counts["DaysAbsence"],
        "DaysExcused": counts["DaysExcused"],
        "DaysUnexcused": counts["DaysUnexcused"],
        "DaysTardy": counts["DaysTardy"],
        "DaysOfTruancy": counts["DaysOfTruancy"],
        "DaysSuspension": counts["DaysSuspension"],
        "DaysInSchoolSuspension": counts["DaysInSchoolSuspension"],
        "DaysCompleteIndependentStudy": 0,
        "DaysIncompleteIndependentStudy": 0,
        "PeriodsExpectedToAttend": 0,
        "PeriodsAttended": 0,
        "PeriodsOutOfSchoolSuspension": 0,
        "PeriodsAttendedInSchoolSuspension": 0,
        "PeriodsExcusedAbsence": 0,
        "PeriodsUnexcusedAbsence": 0,
        "PeriodsCompleteIndependentStudy": 0,
        "PeriodsIncompleteIndependentStudy": 0,
    }
