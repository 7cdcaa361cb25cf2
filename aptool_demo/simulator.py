"""A faithful local Aeries v5 server (reference aeries-api.md, §10 in particular) and its synthetic district.

It serves the demo district's students (the same StudentIDs the demo's i-Ready files use) over real HTTP
on 127.0.0.1, with the behaviours that trip clients up: case-insensitive paths, arrays where one object
is expected, ``200 []`` versus 404, 1-based paging with no totals, negative attendance with period-only
days, per-school absence-code letters, history totals that lag until a nightly job, a change feed that
never mentions attendance, and injectable faults (429, 503, dropped or truncated responses, bad JSON).
"""

from __future__ import annotations

import hmac
import json
import logging
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit
from zoneinfo import ZoneInfo

from aptool_demo.district import SCHOOLS, SyntheticDistrict
from aptool_assets.sources.aeries.client import DATA_CHANGE_AREAS

log = logging.getLogger(__name__)

LOCAL_TIMEZONE = "America/Los_Angeles"
LOCAL_TIMEZONE_NAME = "(UTC-08:00) Pacific Time (US & Canada)"  # Windows-style, as systeminfo reports it
DEMO_CERT = "5a1e7c0ffee0a9b8c7d6e5f4a3b2c1d0"  # 32 characters, like a district-issued certificate
AERIES_VERSION = "10.25.1105.1"
BASE_PATH = "/aeries"
INSTRUCTIONAL_DAYS = 180
PERIOD_SCHOOL_PERIODS = ("1", "2", "3", "4", "5", "6")
DISTRICT_NAME = "Demo Unified School District"

_DISTRICT_CODE, _TRANSFER_CODE, _CLOSED_CODE = 0, 999, 103

# ---------------------------------------------------------------------------------------------------
# Absence codes (reference §6.5). Meanings are the simulator's own vocabulary; letters are per school.
# ---------------------------------------------------------------------------------------------------

# meaning: (Title, Abbreviation, TypeCode, CountsForADA, IsSuspension, IsPartialDayTruant, IsTemporarilyNotEnrolled)
_MEANINGS: dict[str, tuple[str, str, int, bool, bool, bool, bool]] = {
    "unverified": ("UNVERIFIED", "UNV", 1, False, False, False, False),
    "excused": ("EXCUSED", "EXC", 2, False, False, False, False),
    "illness": ("ILLNESS", "ILL", 2, False, False, False, False),
    "unexcused": ("UNEXCUSED", "UNX", 3, False, False, False, False),
    "tardy": ("TARDY", "TDY", 5, True, False, False, False),
    "late30": ("LATE 30+", "L30", 9, True, False, True, False),
    "oss": ("SUSPENDED", "SUS", 2, False, True, False, False),
    "iss": ("IN-SCH SUS", "ISS", 4, True, True, False, False),
    "tne": ("TMPNOTENR", "TNE", 2, False, False, False, True),
    "activity": ("ACTIVITY", "ACT", 4, True, False, False, False),
    "truant": ("TRUANT", "TRU", 3, False, False, False, False),
}
_TYPE_DESCRIPTIONS = {
    1: "Unverified Absence",
    2: "Excused Absence",
    3: "Unexcused Absence",
    4: "Verified Not Absent",
    5: "Tardy",
    6: "Present",
    8: "Verified Excused Tardy",
    9: "Verified Unexcused Tardy",
}
STANDARD_LETTERS = {
    "unverified": "A", "excused": "E", "illness": "I", "unexcused": "U", "tardy": "T",
    "late30": "L", "oss": "S", "iss": "N", "tne": "G", "activity": "K",
}  # fmt: skip
# One school keeps its own table: same meanings, different (and clashing) letters.
ALTERNATE_LETTERS = {
    "unverified": "U", "excused": "X", "illness": "I", "unexcused": "N", "tardy": "L",
    "late30": "B", "oss": "S", "iss": "Q", "tne": "W", "activity": "A", "truant": "T",
}  # fmt: skip
ALTERNATE_LETTER_SCHOOL = 102
PERIOD_ATTENDANCE_SCHOOL = 201


def _absence_code_table(school_code: int, letters: dict[str, str]) -> list[dict]:
    rows = []
    for meaning, letter in letters.items():
        title, abbreviation, type_code, ada, suspension, truant, not_enrolled = _MEANINGS[meaning]
        rows.append(
            {
                "SchoolCode": school_code,
                "AbsenceCode": letter,
                "Title": title,
                "Abbreviation": abbreviation,
                "TypeCode": type_code,
                "TypeDescription": _TYPE_DESCRIPTIONS[type_code],
                "CountsForADA": ada,
                "IncludeOnLetters": type_code in (1, 3) or truant,
                "IncludeInParentNotifications": type_code in (1, 3, 9),
                "IncludeOnReports": True,
                "CountOnReportCard": type_code in (1, 2, 3, 5, 9),
                "IsSuspension": suspension,
                "IsPartialDayTruant": truant,
                "IsTemporarilyNotEnrolled": not_enrolled,
                "IndependentStudyCode": "",
                "ColorCode": "",
            }
        )
    return sorted(rows, key=lambda r: r["AbsenceCode"])


def letters_for(school_code: int) -> dict[str, str]:
    """The school's letter for each meaning (the simulator's own knowledge; clients must read the table)."""
    return ALTERNATE_LETTERS if school_code == ALTERNATE_LETTER_SCHOOL else STANDARD_LETTERS


# ---------------------------------------------------------------------------------------------------
# Calendar (reference §6.6)
# ---------------------------------------------------------------------------------------------------


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    last = (date(year, month + 1, 1) if month < 12 else date(year + 1, 1, 1)) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: date) -> date:
    return day - timedelta(days=1) if day.weekday() == 5 else day + timedelta(days=1) if day.weekday() == 6 else day


def _first_school_day(school_year: int) -> date:
    """The Wednesday on or after August 12: mid-August, as California districts start."""
    start = date(school_year, 8, 12)
    return start + timedelta(days=(2 - start.weekday()) % 7)


def _closures(school_year: int, elementary: bool) -> dict[date, str]:
    """Non-instructional weekdays: ``#`` holidays, ``@`` breaks, ``$`` staff development, ``+`` conferences."""
    y, n = school_year, school_year + 1
    out: dict[date, str] = {}

    def span(first: date, days: int, code: str) -> None:
        for i in range(days):
            out[first + timedelta(days=i)] = code

    out[_nth_weekday(y, 9, 0, 1)] = "#"  # Labor Day
    out[_nth_weekday(y, 10, 0, 2)] = "#"  # Indigenous Peoples' Day
    out[_nth_weekday(y, 10, 4, 2)] = "$"  # staff development
    out[_observed(date(y, 11, 11))] = "#"  # Veterans Day
    thanksgiving = _nth_weekday(y, 11, 3, 4)
    span(thanksgiving - timedelta(days=3), 3, "@")
    span(thanksgiving, 2, "#")
    if elementary:
        out[thanksgiving - timedelta(days=6)] = "+"  # parent conferences, the Friday before
    winter = date(y, 12, 22) - timedelta(days=date(y, 12, 22).weekday())  # Monday of that week
    span(winter, 12, "@")
    out[_observed(date(y, 12, 25))] = "#"
    out[_observed(date(n, 1, 1))] = "#"
    out[winter + timedelta(days=14)] = "$"  # staff development, the Monday after winter break
    out[_nth_weekday(n, 1, 0, 3)] = "#"  # Martin Luther King Jr. Day
    out[_nth_weekday(n, 2, 4, 2)] = "#"  # Lincoln Day (observed Friday)
    out[_nth_weekday(n, 2, 0, 3)] = "#"  # Presidents' Day
    span(_nth_weekday(n, 4, 0, 1), 5, "@")  # spring break
    out[_observed(date(n, 3, 31))] = "#"  # Cesar Chavez Day
    out[_last_weekday(n, 5, 0)] = "#"  # Memorial Day
    return {day: code for day, code in out.items() if day.weekday() < 5}


def build_calendar(school_year: int, school_code: int, *, elementary: bool, period_school: bool) -> list[dict]:
    """Weekdays from mid-August until the 180th instructional day (early June); weekends are absent."""
    closures = _closures(school_year, elementary)
    first_wednesdays = {_nth_weekday(school_year + (m < 7), m, 2, 1) for m in (9, 10, 11, 12, 1, 2, 3, 4, 5)}
    winter_start = min(d for d, c in closures.items() if c == "@" and d.month == 12)
    minimum_days = first_wednesdays | {winter_start - timedelta(days=3)}  # the Friday before winter break
    rows: list[dict] = []
    day, number, month = _first_school_day(school_year), 0, 1
    while number < INSTRUCTIONAL_DAYS:
        if day.weekday() < 5:
            code = closures.get(day, "")
            if code == "":
                number += 1
                month = (number - 1) // 20 + 1
                if day in minimum_days or number == INSTRUCTIONAL_DAYS:
                    code = "%"
            rows.append(
                {
                    "SchoolCode": school_code,
                    "CalendarDayNumber": number if code in ("", "%") else 0,
                    "CalendarDate": day,
                    "HolidayCode": code,
                    "AttendanceMonth": month,
                    "TotalApportionment": 0,
                    "TotalEnrollment": 0,
                    "PeriodBlockPattern": "".join(PERIOD_SCHOOL_PERIODS) if period_school and code in ("", "%") else "",
                    "ABDay": "",
                    "AttendanceMonthLocked": False,
                    "TrackHolidays": [],
                }
            )
        day += timedelta(days=1)
    return rows


def instructional_days(calendar: list[dict]) -> list[date]:
    return [row["CalendarDate"] for row in calendar if row["HolidayCode"] in ("", "%")]


# ---------------------------------------------------------------------------------------------------
# The district the simulator serves
# ---------------------------------------------------------------------------------------------------


@dataclass
class SimDistrict:
    """Everything the simulator serves, as plain Python. Mutate it through the methods (they lock)."""

    school_year: int
    schools: list[dict]
    students: list[dict]
    enrollment: list[dict]
    calendars: dict[int, list[dict]]
    absence_codes: dict[int, list[dict]]
    attendance: dict[int, dict[int, dict[date, dict]]]  # school → StudentID → day → {"all_day", "periods"}
    data_changes: list[tuple[datetime, str, int, int, int]]  # (local time, area, StudentID, SchoolCode, StudentNumber)
    staff: list[dict] = field(default_factory=list)
    history: dict[tuple[int, int], dict] = field(default_factory=dict)  # (StudentID, SchoolCode) → summary
    history_through: date | None = None
    corrections: list[dict] = field(default_factory=list)  # back-dated edits made after the last nightly job
    clock: Callable[[], datetime] | None = None  # local naive "now"; None = the wall clock
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    # -- time ------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The server's local wall time (naive, America/Los_Angeles)."""
        if self.clock is not None:
            return self.clock()
        return datetime.now(ZoneInfo(LOCAL_TIMEZONE)).replace(tzinfo=None)

    def set_clock(self, when: datetime | None) -> None:
        """Freeze the server clock at ``when`` (local, naive); ``None`` returns to the wall clock."""
        self.clock = None if when is None else (lambda: when)

    # -- lookups ---------------------------------------------------------------------------------

    def code_table(self, school_code: int) -> dict[str, dict]:
        return {row["AbsenceCode"]: row for row in self.absence_codes.get(school_code, [])}

    def student_record(self, student_id: int, school_code: int) -> dict:
        for record in self.students:
            if record["StudentID"] == student_id and record["SchoolCode"] == school_code:
                return record
        raise KeyError(f"no student record for StudentID {student_id} at school {school_code}")

    def school(self, school_code: int) -> dict | None:
        return next((s for s in self.schools if s["SchoolCode"] == school_code), None)

    # -- mutations -------------------------------------------------------------------------------

    def set_attendance(
        self, school_code: int, student_id: int, day: date, all_day: str = "", periods: dict[str, str] | None = None
    ) -> None:
        """Enter or correct one student-day (blank codes remove it). Not in the change feed: Aeries has none."""
        periods = {str(p): c for p, c in (periods or {}).items() if c}
        with self.lock:
            table = self.code_table(school_code)
            for code in [all_day, *periods.values()]:
                if code and code not in table:
                    raise ValueError(f"absence code {code!r} is not defined at school {school_code}")
            days = self.attendance.setdefault(school_code, {}).setdefault(student_id, {})
            if all_day or periods:
                days[day] = {"all_day": all_day, "periods": periods}
            else:
                days.pop(day, None)

    def update_student(self, student_id: int, school_code: int, **fields: Any) -> None:
        """Change fields of a student record (Aeries keys) and record a ``student`` data change now."""
        with self.lock:
            record = self.student_record(student_id, school_code)
            unknown = set(fields) - set(record)
            if unknown:
                raise KeyError(f"not student fields: {', '.join(sorted(unknown))}")
            record.update(fields)
            self._record_change("student", record)

    def enroll(
        self,
        student_id: int,
        school_code: int,
        grade: int,
        enter_date: date,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        at: datetime | None = None,
    ) -> dict:
        """Open a stint at a school: a student record (new or reactivated) and an enrollment row."""
        with self.lock:
            existing = [r for r in self.students if r["StudentID"] == student_id]
            record = next((r for r in existing if r["SchoolCode"] == school_code), None)
            if record is None:
                if existing:
                    template = dict(existing[0])
                elif first_name and last_name:
                    template = _student_record(
                        random.Random(student_id), student_id, school_code, 0, grade, first_name, last_name,
                        self.school_year,
                    )  # fmt: skip
                else:
                    raise ValueError(f"StudentID {student_id} is new to the district: give first_name and last_name")
                numbers = [r["StudentNumber"] for r in self.students if r["SchoolCode"] == school_code]
                number = 1 + max(numbers, default=0)
                record = template | {"SchoolCode": school_code, "StudentNumber": number}
                self.students.append(record)
            record.update(
                {
                    "Grade": grade,
                    **_grade_fields(grade, school_code),
                    "SchoolEnterDate": enter_date,
                    "SchoolLeaveDate": None,
                    "InactiveStatusCode": "",
                }
            )
            if first_name:
                record["FirstName"] = first_name
            if last_name:
                record["LastName"] = last_name
            self.enrollment.append(_enrollment_row(record, str(_school_year_of(enter_date)), enter_date, None, ""))
            when = at or self.now()
            self._record_change("student", record, when)
            self._record_change("enrollment", record, when)
            return record

    def withdraw(
        self,
        student_id: int,
        school_code: int,
        leave_date: date,
        inactive_status_code: str = "T",
        *,
        exit_reason_code: str = "T160",
        at: datetime | None = None,
    ) -> None:
        """Close a stint: SchoolLeaveDate (last enrolled day, inclusive), inactive status, exit reason."""
        with self.lock:
            record = self.student_record(student_id, school_code)
            record.update({"SchoolLeaveDate": leave_date, "InactiveStatusCode": inactive_status_code})
            for row in self.enrollment:
                if row["StudentID"] == student_id and row["SchoolCode"] == school_code and row["LeaveDate"] is None:
                    row.update({"LeaveDate": leave_date, "ExitReasonCode": exit_reason_code})
            days = self.attendance.get(school_code, {}).get(student_id, {})
            for day in [d for d in days if d > leave_date]:
                del days[day]
            when = at or self.now()
            self._record_change("student", record, when)
            self._record_change("enrollment", record, when)

    def run_nightly_history_job(self, through: date) -> None:
        """Recompute AttendanceHistory summaries from attendance + calendar + codes, by all-day code.

        Until this runs again the summaries keep their old values, as Aeries' scheduled job does.
        """
        with self.lock:
            totals: dict[tuple[int, int], dict[str, int]] = {}
            year = str(self.school_year)
            for row in self.enrollment:
                if row["AcademicYear"] != year or row["EnterDate"] > through:
                    continue
                key = (row["StudentID"], row["SchoolCode"])
                counts = totals.setdefault(key, dict.fromkeys(_HISTORY_COUNTS, 0))
                last = min(row["LeaveDate"] or through, through)
                table = self.code_table(row["SchoolCode"])
                days = self.attendance.get(row["SchoolCode"], {}).get(row["StudentID"], {})
                for day in instructional_days(self.calendars.get(row["SchoolCode"], [])):
                    if row["EnterDate"] <= day <= last:
                        _count_day(counts, days.get(day), table)
            self.history = {
                key: _summary_record(key[1], self.school_year, counts) for key, counts in sorted(totals.items())
            }
            self.history_through = through

    # -- internals -------------------------------------------------------------------------------

    def _record_change(self, area: str, record: dict, when: datetime | None = None) -> None:
        self.data_changes.append(
            (when or self.now(), area, record["StudentID"], record["SchoolCode"], record["StudentNumber"])
        )


_HISTORY_COUNTS = (
    "DaysEnrolled", "DaysAbsence", "DaysExcused", "DaysUnexcused", "DaysTardy",
    "DaysOfTruancy", "DaysSuspension", "DaysInSchoolSuspension",
)  # fmt: skip


def _count_day(counts: dict[str, int], entry: dict | None, table: dict[str, dict]) -> None:
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


def _summary_record(school_code: int, school_year: int, counts: dict[str, int]) -> dict:
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


def _school_year_of(day: date) -> int:
    return day.year if day.month >= 7 else day.year - 1


# ---------------------------------------------------------------------------------------------------
# Records in the exact shapes of the recorded demo responses
# ---------------------------------------------------------------------------------------------------

_GRADE_LONG = {
    -2: "Preschool", -1: "Transitional Kindergarten", 0: "Kindergarten", 1: "First Grade", 2: "Second Grade",
    3: "Third Grade", 4: "Fourth Grade", 5: "Fifth Grade", 6: "Sixth Grade", 7: "Seventh Grade",
    8: "Eighth Grade", 9: "Ninth Grade", 10: "Tenth Grade", 11: "Eleventh Grade", 12: "Twelfth Grade",
}  # fmt: skip
_STREETS = ["Oak St", "Madrone Ave", "Cedar Ln", "Valley View Dr", "Mission Blvd", "Alder Ct", "Juniper Way"]


def _grade_short(grade: int) -> str:
    return {-2: "PS", -1: "TK", 0: "K"}.get(grade, str(grade))


def _grade_fields(grade: int, school_code: int) -> dict:
    high = next((h for code, _n, _l, h in SCHOOLS if code == school_code), 12)
    next_school = PERIOD_ATTENDANCE_SCHOOL if grade == high and school_code != PERIOD_ATTENDANCE_SCHOOL else 0
    return {
        "GradeLevelShortDescription": _grade_short(grade),
        "GradeLevelLongDescription": _GRADE_LONG.get(grade, f"Grade {grade}"),
        "NextGrade": grade + 1,
        "NextGradeLevelShortDescription": _grade_short(grade + 1),
        "NextGradeLevelLongDescription": _GRADE_LONG.get(grade + 1, f"Grade {grade + 1}"),
        "NextSchoolCode": next_school if grade == high else 0,
    }


def _student_record(
    rng: random.Random,
    student_id: int,
    school_code: int,
    student_number: int,
    grade: int,
    first_name: str,
    last_name: str,
    school_year: int,
    school_enter: date | None = None,
    district_enter: date | None = None,
) -> dict:
    """Every key of the recorded ``students.json``, with the same value types (fake, plausible values)."""
    birth_year = school_year - 5 - grade - (1 if rng.random() < 0.7 else 0)
    birthdate = date(birth_year, rng.randint(1, 12), rng.randint(1, 28))
    street = f"{rng.randint(100, 9999)} {rng.choice(_STREETS)}"
    spanish = rng.random() < 0.35
    middle_school = school_code == PERIOD_ATTENDANCE_SCHOOL
    school_enter = school_enter or _first_school_day(school_year)
    record = {
        "StudentID": student_id,
        "OldStudentID": 0,
        "CorrespondenceLanguageCode": "01" if spanish else "00",
        "SchoolCode": school_code,
        "StudentNumber": student_number,
        "StateStudentID": str(rng.randrange(10**9, 10**10)),
        "LastName": last_name,
        "FirstName": first_name,
        "MiddleName": rng.choice(["", "", "", "Marie", "Lee", "Jose", "Ann"]),
        "LastNameAlias": "",
        "FirstNameAlias": "",
        "MiddleNameAlias": "",
        "Gender": rng.choice(["F", "M"]) if rng.random() > 0.02 else "X",
        "Grade": grade,
        "GradeLevelShortDescription": "",
        "GradeLevelLongDescription": "",
        "Birthdate": birthdate,
        "ParentGuardianName": f"Parent of {first_name} {last_name}",
        "HomePhone": f"707555{rng.randint(0, 9999):04d}",
        "StudentMobilePhone": "",
        "MailingAddress": street,
        "MailingAddressCity": "Redwood Valley",
        "MailingAddressState": "CA",
        "MailingAddressZipCode": "95470",
        "MailingAddressZipExt": "",
        "ResidenceAddress": street,
        "ResidenceAddressCity": "Redwood Valley",
        "ResidenceAddressState": "CA",
        "ResidenceAddressZipCode": "95470",
        "ResidenceAddressZipExt": "",
        "AddressVerified": rng.random() < 0.8,
        "EthnicityCode": "Y" if spanish else "N",
        "RaceCode1": rng.choice(["700", "700", "600", "203", "100", "201"]),
        "RaceCode2": "",
        "RaceCode3": "",
        "RaceCode4": "",
        "RaceCode5": "",
        **{f"UserCode{i}": "" for i in range(1, 14)},
        "SchoolEnterDate": school_enter,
        "SchoolLeaveDate": None,
        "DistrictEnterDate": district_enter or school_enter,
        "CounselorNumber": 700 + rng.randint(1, 3) if middle_school else 0,
        "Track": "",
        "AttendanceProgramCodePrimary": "",
        "AttendanceProgramCodeAdditional1": "",
        "AttendanceProgramCodeAdditional2": "",
        "LockerNumber": f"{rng.randint(100, 999)}" if middle_school else "",
        "LowSchedulingPeriod": 1 if middle_school else 0,
        "HighSchedulingPeriod": 6 if middle_school else 0,
        "InactiveStatusCode": "",
        "FamilyKey": rng.randint(1000, 9999),
        "LanguageFluencyCode": rng.choice(["L", "R", "I"]) if spanish else "E",
        "HomeLanguageCode": "01" if spanish else "00",
        "ParentEdLevelCode": rng.choice(["10", "11", "12", "13", "14"]),
        "ParentEmailAddress": "",
        "StudentEmailAddress": f"s{student_id}@students.example.org",
        "NetworkLoginID": f"s{student_id}",
        "AtRiskPoints": f"{rng.randint(0, 40)}.0000",
        "HomeRoomTeacherNumber": "0" if middle_school else str(rng.randint(1, 6)),
        "NotificationPreferenceCode": "",
        "NextSchoolCode": 0,
        "NextGrade": 0,
        "NextGradeLevelShortDescription": "",
        "NextGradeLevelLongDescription": "",
        "RecordsReleaseCode": "",
    }
    record.update(_grade_fields(grade, school_code))
    return record


def _enrollment_row(record: dict, academic_year: str, enter: date, leave: date | None, exit_reason: str) -> dict:
    return {
        "StudentID": record["StudentID"],
        "SchoolCode": record["SchoolCode"],
        "StudentNumber": record["StudentNumber"],
        "AcademicYear": academic_year,
        "Grade": record["Grade"],
        "EnterDate": enter,
        "LeaveDate": leave,
        "ExitReasonCode": exit_reason,
        "Track": "",
        "AttendanceProgramCode": "",
        "AttendanceProgramCodeAdditional1": "",
        "AttendanceProgramCodeAdditional2": "",
        "ElementaryTeacherNumber": 0,
        "ElementaryTeacherName": "",
        "InterIntraDistrictTransferCode": "",
        "InterIntraDistrictStateCode": "",
        "NonpublicSchoolStateCode": "",
        "NextSchoolCode": 0,
        "ReportingSchoolCode": 0,
    }


def _school_record(
    school_year: int,
    code: int,
    name: str,
    low: int,
    high: int,
    *,
    inactive: str = "",
    period: bool = False,
    pseudo: bool = False,
) -> dict:
    """Every key of the recorded ``schools.json`` (46), with its value types."""
    first = _first_school_day(school_year)
    end = date(school_year + 1, 6, 12)
    mid = date(school_year + 1, 1, 9)
    terms = [] if pseudo or inactive else [
        {"FirstHalfEndDate": None, "SecondHalfStartDate": None, "TrackTerms": [], "TermCode": "F",
         "TermDescription": "Fall", "StartDate": first, "EndDate": mid - timedelta(days=1)},
        {"FirstHalfEndDate": None, "SecondHalfStartDate": None, "TrackTerms": [], "TermCode": "S",
         "TermDescription": "Spring", "StartDate": mid, "EndDate": end},
        {"FirstHalfEndDate": None, "SecondHalfStartDate": None, "TrackTerms": [], "TermCode": "Y",
         "TermDescription": "Year", "StartDate": first, "EndDate": end},
    ]  # fmt: skip
    return {
        "RegionCode": "",
        "StateCharterNumber": "",
        "CharterStatusCode": "",
        "FederalTaxID": "",
        "FederalInformationProcessingStandardsCode": "",
        "QualityRatingAndImprovementSystemParticipationCode": "",
        "AccreditationStatusCode": "",
        "SchoolWebsite": "" if pseudo else f"https://demo-usd.example.org/{code}",
        "OrganizationCategoryCode": "",
        "SchoolCategoryCode": "",
        "LocalEducationAgencyTypeCode": "",
        "TitleIPartACode": "",
        "NSLPStatusCode": "",
        "NCESSchoolID": "" if pseudo else f"0699999{code:05d}",
        "CollegeBoardSchoolCode": "",
        "CampusEnrollmentTypeCode": "",
        "PreKSchoolTypeCode": "",
        "EarlyCollegeHighSchoolIndicator": False,
        "ScienceTechnologyEngineeringAndMathematicsIndicator": False,
        "PathwaysInTechnologyIndicator": False,
        "ShortName": name.split()[0],
        "Terms": terms,
        "SchoolCode": code,
        "Name": name,
        "InactiveStatusCode": inactive,
        "Address": "" if pseudo and code else f"{100 + code} School Rd",
        "AddressCity": "Redwood Valley",
        "AddressState": "CA",
        "AddressZipCode": "95470",
        "AddressZipExt": "",
        "DoNotReport": pseudo,
        "StateCountyID": "23",
        "StateDistrictID": "99999",
        "StateSchoolID": "" if pseudo else f"{6000000 + code}",
        "LowGradeLevel": low,
        "HighGradeLevel": high,
        "PrincipalName": "",
        "PrincipalEmailAddress": "" if pseudo else f"principal{code}@demo-usd.example.org",
        "AttendancePeriod": 0,
        "Tracks": 0,
        "ScheduleType": "MasterSchedule" if period else "Elementary",
        "SessionType": "Regular",
        "AttendanceType": "Period" if period else "Daily",
        "AttendanceReporting": "Negative",
        "ScheduleBasis": "Semester",
        "PhoneNumber": f"707555{code:04d}",
    }


def _staff_record(staff_id: int, school_code: int, first: str, last: str, title: str, rng: random.Random) -> dict:
    """Every key of the recorded ``staff.json``."""
    return {
        "SchoolAccessPermissions": [{"SchoolCode": school_code, "ReadOnlyAccess": False, "CommunicationGroup": True}],
        "ExtendedProperties": [],
        "EarlyChildhoodCertificationCode": "",
        "Gender": rng.choice(["F", "M"]),
        "EducationLevelCode": rng.choice(["2", "3", "4"]),
        "EthnicityCode": "N",
        "RaceCode1": "700",
        "RaceCode2": "",
        "RaceCode3": "",
        "RaceCode4": "",
        "RaceCode5": "",
        "PositionStatusCode": "1",
        "TotalYearsOfEduService": rng.randint(1, 25),
        "TotalYearsInThisDistrict": rng.randint(1, 12),
        "PreviousLastName": "",
        "PreviousFirstName": "",
        "PreviousMiddleName": "",
        "NameSuffix": "",
        "Address": "",
        "AddressCity": "",
        "AddressState": "",
        "AddressZipCode": "",
        "AddressZipExt": "",
        "HomePhone": "",
        "EmergencyContactName": "",
        "EmergencyContactPhone": "",
        "ID": staff_id,
        "FirstName": first,
        "LastName": last,
        "MiddleName": "",
        "BirthYear": rng.randint(1965, 1998),
        "BirthDate": date(rng.randint(1965, 1998), rng.randint(1, 12), rng.randint(1, 28)),
        "FullTimePercentage": 100,
        "HireDate": date(rng.randint(2005, 2024), 8, 1),
        "LeaveDate": None,
        "InactiveStatusCode": "",
        "StateEducatorID": f"{7000000000 + staff_id}",
        "UserName": f"staff{staff_id}",
        "EmailAddress": f"staff{staff_id}@demo-usd.example.org",
        "PrimaryAeriesSchool": school_code,
        "NetworkLoginID": f"staff{staff_id}",
        "AlternateEmailAddress": "",
        "HumanResourcesSystemID": "",
        "CellPhone": "",
        "NotificationPreferenceCode": "1",
        "Title": title,
    }


_EXIT_REASONS = [
    ("T160", "Transfer to another California public school"),
    ("T165", "Transfer to a California public school, independent study"),
    ("T180", "Transfer to a private school"),
    ("T200", "Transfer out of the United States"),
    ("E150", "Mid-year update"),
    ("E230", "Completed the school year"),
]
_CODE_SETS: dict[tuple[str, str], tuple[str, str, list[tuple[str, str]]]] = {
    ("enrollmenthistory", "exitreason"): ("ENR", "ER", _EXIT_REASONS),
    ("student", "grade"): ("STU", "GR", [(str(g), d) for g, d in _GRADE_LONG.items()]),
}


# ---------------------------------------------------------------------------------------------------
# build_sim_district
# ---------------------------------------------------------------------------------------------------


def build_sim_district(district: SyntheticDistrict, *, seed: int = 7, through: date | None = None) -> SimDistrict:
    """The demo district as Aeries would hold it, with attendance entered up to ``through``.

    ``through`` defaults to today (district time), capped at the last calendar day. The nightly history
    job has run through ``through``; the back-dated corrections in ``corrections`` came after it, so the
    history summaries lag them until the next ``run_nightly_history_job``.
    """
    rng = random.Random(seed)
    year = district.school_year
    school_rows = {code: (name, low, high) for code, name, low, high in SCHOOLS}
    calendars: dict[int, list[dict]] = {}
    for code, (_name, low, _high) in school_rows.items():
        period_school = code == PERIOD_ATTENDANCE_SCHOOL
        calendars[code] = build_calendar(year, code, elementary=not period_school, period_school=period_school)
    calendars[_DISTRICT_CODE] = build_calendar(year, _DISTRICT_CODE, elementary=False, period_school=False)
    last_day = max(row["CalendarDate"] for rows in calendars.values() for row in rows)
    if through is None:
        through = datetime.now(ZoneInfo(LOCAL_TIMEZONE)).date()
    through = min(through, last_day)

    schools = [
        _school_record(year, _DISTRICT_CODE, DISTRICT_NAME, -1, 12, pseudo=True),
        *(
            _school_record(year, code, name, low, high, period=code == PERIOD_ATTENDANCE_SCHOOL)
            for code, (name, low, high) in school_rows.items()
        ),
        _school_record(year, _CLOSED_CODE, "Oak Grove Elementary School", 0, 5, inactive="I"),
        _school_record(year, _TRANSFER_CODE, "Inactive and Transferred Students", -2, 12, pseudo=True),
    ]
    schools.sort(key=lambda s: s["SchoolCode"])
    absence_codes = {
        code: _absence_code_table(code, letters_for(code))
        for code in [_DISTRICT_CODE, *school_rows, _CLOSED_CODE, _TRANSFER_CODE]
    }

    sim = SimDistrict(
        school_year=year,
        schools=schools,
        students=[],
        enrollment=[],
        calendars=calendars,
        absence_codes=absence_codes,
        attendance={code: {} for code in school_rows},
        data_changes=[],
    )
    _add_students(sim, district, rng)
    _add_staff(sim, rng)
    _add_awkward_cases(sim, rng, through)
    _generate_attendance(sim, rng, through)
    sim.run_nightly_history_job(through)
    _back_dated_corrections(sim, through)
    return sim


def _add_students(sim: SimDistrict, district: SyntheticDistrict, rng: random.Random) -> None:
    year = sim.school_year
    first_day, prev_first = _first_school_day(year), _first_school_day(year - 1)
    prev_last = instructional_days(build_calendar(year - 1, 0, elementary=False, period_school=False))[-1]
    numbers: dict[int, int] = {}
    lows = {code: low for code, _n, low, _h in SCHOOLS}
    for row in district.students.sort("student_id").iter_rows(named=True):
        code, grade = row["school_code"], row["grade"]
        numbers[code] = numbers.get(code, 0) + 1
        years_here = grade - lows[code]
        record = _student_record(
            rng,
            row["student_id"],
            code,
            numbers[code],
            grade,
            row["first_name"],
            row["last_name"],
            year,
            school_enter=_first_school_day(year - years_here),
            district_enter=_first_school_day(year - max(grade, 0) + rng.choice([0, 0, 0, 1, 2])) if grade > 0 else None,
        )
        sim.students.append(record)
        if years_here > 0:  # last year's stint, closed at the year-end rollover
            prior = _enrollment_row(record, str(year - 1), prev_first, prev_last, "")
            prior["Grade"] = grade - 1
            sim.enrollment.append(prior)
        sim.enrollment.append(_enrollment_row(record, str(year), first_day, None, ""))


def _add_staff(sim: SimDistrict, rng: random.Random) -> None:
    firsts = ["Maria", "James", "Linda", "Robert", "Patricia", "David", "Susan", "Carlos"]
    lasts = ["Nguyen", "Smith", "Ramirez", "Johnson", "Kim", "Brown", "Okafor", "Silva"]
    for code, _name, _low, _high in SCHOOLS:
        for n in range(1, 5):
            title = "Principal" if n == 1 else "Teacher"
            sim.staff.append(_staff_record(code * 1000 + n, code, rng.choice(firsts), rng.choice(lasts), title, rng))


def _milestones(sim: SimDistrict, through: date) -> list[date]:
    """Instructional days the scripted events fall on: within the days entered so far when there are enough."""
    # An elementary calendar: its school days are school days at every school (it only adds a "+" day).
    days = instructional_days(sim.calendars[SCHOOLS[0][0]])
    elapsed = [d for d in days if d <= through]
    return elapsed if len(elapsed) >= 40 else days


def _add_awkward_cases(sim: SimDistrict, rng: random.Random, through: date) -> None:
    """Reference §10.11: a mid-year transfer, a withdrawal, a pre-enrolled ``*`` record, a late enrollee."""
    days = _milestones(sim, through)
    at = lambda day, hour: datetime.combine(day, datetime.min.time()) + timedelta(hours=hour)  # noqa: E731
    by_school = {code: [r for r in sim.students if r["SchoolCode"] == code] for code, *_ in SCHOOLS}
    taken: set[int] = set()

    def pick(code: int, grade: int | None = None) -> dict | None:
        pool = [r for r in by_school[code] if r["StudentID"] not in taken and (grade is None or r["Grade"] == grade)]
        if not pool:
            pool = [r for r in by_school[code] if r["StudentID"] not in taken]
        if not pool:  # a tiny district: leave this case out
            return None
        chosen = rng.choice(pool)
        taken.add(chosen["StudentID"])
        return chosen

    elementary = [code for code, _n, low, _h in SCHOOLS if code != PERIOD_ATTENDANCE_SCHOOL]
    # Mid-year transfer between the two elementary schools: two student records, two enrollment rows.
    mover = pick(elementary[0])
    if mover:
        moved_on = days[int(len(days) * 0.45)]
        last_there = max(d for d in days if d < moved_on)
        sim.withdraw(mover["StudentID"], elementary[0], last_there, "T", exit_reason_code="T160", at=at(last_there, 15))
        sim.enroll(mover["StudentID"], elementary[1], mover["Grade"], moved_on, at=at(moved_on, 8))
    # A middle-school student who left the district mid-year.
    leaver = pick(PERIOD_ATTENDANCE_SCHOOL)
    if leaver:
        left_on = days[int(len(days) * 0.6)]
        sim.withdraw(
            leaver["StudentID"], PERIOD_ATTENDANCE_SCHOOL, left_on, "T", exit_reason_code="T200", at=at(left_on, 16)
        )
    # A fifth grader pre-enrolled at the middle school for next year (InactiveStatusCode "*").
    rising = pick(elementary[0], grade=5)
    if rising:
        numbers = [r["StudentNumber"] for r in sim.students if r["SchoolCode"] == PERIOD_ATTENDANCE_SCHOOL]
        pre = _student_record(
            random.Random(rising["StudentID"]), rising["StudentID"], PERIOD_ATTENDANCE_SCHOOL,
            max(numbers, default=0) + 1, rising["Grade"] + 1, rising["FirstName"], rising["LastName"], sim.school_year,
            school_enter=_first_school_day(sim.school_year + 1),
        )  # fmt: skip
        pre.update({k: rising[k] for k in ("StateStudentID", "Birthdate", "Gender", "DistrictEnterDate", "FamilyKey")})
        pre["InactiveStatusCode"] = "*"
        sim.students.append(pre)
        sim._record_change("student", pre, at(days[int(len(days) * 0.75)], 10))
    # A student who enrolled three weeks into the year.
    late = pick(elementary[1])
    if late is None:
        return
    late_day = days[min(14, len(days) - 1)]
    late.update({"SchoolEnterDate": late_day, "DistrictEnterDate": late_day})
    current = str(sim.school_year)
    sim.enrollment = [
        r for r in sim.enrollment if r["StudentID"] != late["StudentID"] or r["AcademicYear"] == current
    ]
    for row in sim.enrollment:
        if row["StudentID"] == late["StudentID"]:
            row["EnterDate"] = late_day
    sim._record_change("student", late, at(late_day, 8))
    sim._record_change("enrollment", late, at(late_day, 8))


@dataclass
class _Profile:
    absence_rate: float
    tardy_rate: float
    partial_rate: float  # period-only days (middle school) or late-30 days (daily schools)
    unexcused_share: float


def _profiles(student_ids: list[int], rng: random.Random) -> dict[int, _Profile]:
    """Fixed shares: ~3% severe (≥20%), ~10% more chronic (≥10%), ~15% at risk, the rest rarely absent."""
    ids = list(student_ids)
    rng.shuffle(ids)
    n = len(ids)
    n_severe, n_chronic, n_risk = max(1, round(n * 0.03)), max(1, round(n * 0.10)), round(n * 0.15)
    out = {}
    for i, sid in enumerate(ids):
        if i < n_severe:
            out[sid] = _Profile(rng.uniform(0.23, 0.32), rng.uniform(0.03, 0.08), rng.uniform(0.03, 0.08), 0.45)
        elif i < n_severe + n_chronic:
            out[sid] = _Profile(rng.uniform(0.12, 0.18), rng.uniform(0.02, 0.06), rng.uniform(0.02, 0.06), 0.35)
        elif i < n_severe + n_chronic + n_risk:
            out[sid] = _Profile(rng.uniform(0.05, 0.085), rng.uniform(0.01, 0.04), rng.uniform(0.0, 0.04), 0.2)
        else:
            out[sid] = _Profile(rng.uniform(0.0, 0.035), rng.uniform(0.0, 0.03), rng.uniform(0.0, 0.02), 0.1)
    return out


def _runs(rng: random.Random, n_days: int, count: int, taken: set[int]) -> list[list[int]]:
    """``count`` day indexes in runs of 1-3 consecutive school days (illness comes in streaks)."""
    runs: list[list[int]] = []
    placed, attempts = 0, 0
    while placed < count and attempts < 50 * (count + 1):
        attempts += 1
        length = min(rng.choices([1, 2, 3], weights=[60, 25, 15])[0], count - placed)
        start = rng.randrange(n_days)
        run = [i for i in range(start, min(start + length, n_days)) if i not in taken]
        if len(run) == length:
            runs.append(run)
            taken.update(run)
            placed += length
    return runs


def _generate_attendance(sim: SimDistrict, rng: random.Random, through: date) -> None:
    """Negative attendance for every current-year stint, deterministic for a seed."""
    year = str(sim.school_year)
    stints = sorted(
        (r for r in sim.enrollment if r["AcademicYear"] == year), key=lambda r: (r["StudentID"], r["EnterDate"])
    )
    profiles = _profiles(sorted({r["StudentID"] for r in stints}), rng)
    candidates = sorted({r["StudentID"] for r in stints})
    specials = rng.sample(candidates, min(10, len(candidates)))
    truants = dict(zip(specials[0:3], (4, 7, 10)))  # full unexcused days: truancy letter levels 1, 2, 3
    suspended_out, suspended_in, not_enrolled = specials[3:6], specials[6:8], specials[8:10]
    recent_by_school = {
        code: set([d for d in instructional_days(cal) if d <= through][-3:]) for code, cal in sim.calendars.items()
    }
    for stint in stints:
        code, sid = stint["SchoolCode"], stint["StudentID"]
        letters = letters_for(code)
        period_school = code == PERIOD_ATTENDANCE_SCHOOL
        last = min(stint["LeaveDate"] or through, through)
        days = [d for d in instructional_days(sim.calendars[code]) if stint["EnterDate"] <= d <= last]
        if not days:
            continue
        profile = profiles[sid]
        out: dict[date, dict] = {}
        taken: set[int] = set()

        def full_day(i: int, meaning: str) -> None:
            letter = letters[meaning]
            periods = {p: letter for p in PERIOD_SCHOOL_PERIODS} if period_school else {}
            out[days[i]] = {"all_day": letter, "periods": periods}

        # Specials first, so random absences fill around them; each is a run of consecutive school days.
        if sid in truants:
            remaining = truants[sid]
            while remaining > 0:
                run = _streak(rng, len(days), min(remaining, rng.randint(2, 4)), taken)
                if not run:
                    break
                for i in run:
                    full_day(i, "unexcused")
                remaining -= len(run)
        for members, meaning, length in (
            (suspended_out, "oss", rng.randint(2, 3)),
            (suspended_in, "iss", rng.randint(1, 2)),
            (not_enrolled, "tne", 3),
        ):
            if sid in members:
                for i in _streak(rng, len(days), length, taken):
                    full_day(i, meaning)
        n_absent = round(profile.absence_rate * len(days))
        recent = recent_by_school[code]  # the last three days entered are often not verified yet
        for run in _runs(rng, len(days), n_absent, taken):
            excused_share = 1 - profile.unexcused_share
            meaning = rng.choices(
                ["illness", "excused", "unexcused"],
                weights=[0.6 * excused_share, 0.4 * excused_share, profile.unexcused_share],
            )[0]
            for i in run:
                full_day(i, "unverified" if days[i] in recent and rng.random() < 0.7 else meaning)
        for i in sorted(_pick(rng, len(days), round(profile.tardy_rate * len(days)), taken)):
            if period_school:
                out[days[i]] = {"all_day": "", "periods": {"1": letters["tardy"]}}
            else:
                out[days[i]] = {"all_day": letters["tardy"], "periods": {}}
        for i in sorted(_pick(rng, len(days), round(profile.partial_rate * len(days)), taken)):
            if period_school:  # cut or excused out for one to three periods; no all-day code
                count = rng.randint(1, 3)
                first = rng.randint(0, len(PERIOD_SCHOOL_PERIODS) - count)
                meaning = rng.choice(["unexcused", "unexcused", "excused", "late30"])
                if meaning == "late30":
                    count, first = 1, 0
                periods = {PERIOD_SCHOOL_PERIODS[first + k]: letters[meaning] for k in range(count)}
                out[days[i]] = {"all_day": "", "periods": periods}
            else:
                out[days[i]] = {"all_day": letters["late30"], "periods": {}}
        if out:
            sim.attendance.setdefault(code, {})[sid] = dict(sorted(out.items()))
    _field_trip(sim, rng, through)


def _streak(rng: random.Random, n_days: int, length: int, taken: set[int]) -> list[int]:
    """``length`` consecutive free day indexes (fewer if the span is short), or [] when none fit."""
    length = min(length, n_days)
    starts = [i for i in range(n_days - length + 1) if not taken.intersection(range(i, i + length))]
    if not starts:
        return []
    start = rng.choice(starts)
    run = list(range(start, start + length))
    taken.update(run)
    return run


def _pick(rng: random.Random, n_days: int, count: int, taken: set[int]) -> list[int]:
    free = [i for i in range(n_days) if i not in taken]
    chosen = rng.sample(free, min(count, len(free)))
    taken.update(chosen)
    return chosen


def _field_trip(sim: SimDistrict, rng: random.Random, through: date) -> None:
    """A class trip at the alternate-letter school: ``A`` there means Activity (not absent), not Unverified."""
    code = ALTERNATE_LETTER_SCHOOL
    days = [d for d in instructional_days(sim.calendars[code]) if d <= through]
    if len(days) < 10:
        return
    day = days[len(days) // 3]
    enrolled = sorted(
        r["StudentID"]
        for r in sim.enrollment
        if r["SchoolCode"] == code and r["AcademicYear"] == str(sim.school_year) and r["EnterDate"] <= day
        and (r["LeaveDate"] is None or r["LeaveDate"] >= day)
    )  # fmt: skip
    for sid in rng.sample(enrolled, min(6, len(enrolled))):
        if day not in sim.attendance.get(code, {}).get(sid, {}):
            sim.set_attendance(code, sid, day, letters_for(code)["activity"])


def _back_dated_corrections(sim: SimDistrict, through: date) -> None:
    """Edits to past days made after the nightly job: a rolling re-pull sees them, the summaries do not."""
    elementary, alternate, middle = 101, ALTERNATE_LETTER_SCHOOL, PERIOD_ATTENDANCE_SCHOOL
    recent = [d for d in instructional_days(sim.calendars[elementary]) if d <= through][-10:]
    if len(recent) < 10:
        return

    def correct(code: int, sid: int, day: date, after: dict | None) -> None:
        before = sim.attendance.get(code, {}).get(sid, {}).get(day)
        new = after or {"all_day": "", "periods": {}}
        sim.set_attendance(code, sid, day, new["all_day"], new["periods"])
        sim.corrections.append({"school_code": code, "student_id": sid, "date": day, "before": before, "after": after})

    # 1. An absence at 101 verified as excused days later (a parent's note arrived).
    table = sim.code_table(elementary)
    for sid, days in sorted(sim.attendance.get(elementary, {}).items()):
        hits = [d for d in recent[:-2] if d in days and table.get(days[d]["all_day"], {}).get("TypeCode") in (1, 3)]
        if hits:
            correct(elementary, sid, hits[-1], {"all_day": letters_for(elementary)["excused"], "periods": {}})
            break
    # 2. A missed absence entered three school days late at 102.
    day = recent[-4]
    for row in sorted(sim.enrollment, key=lambda r: r["StudentID"]):
        if (
            row["SchoolCode"] == alternate and row["AcademicYear"] == str(sim.school_year) and row["EnterDate"] <= day
            and (row["LeaveDate"] is None or row["LeaveDate"] >= day)
            and day not in sim.attendance.get(alternate, {}).get(row["StudentID"], {})
        ):  # fmt: skip
            correct(alternate, row["StudentID"], day, {"all_day": letters_for(alternate)["unexcused"], "periods": {}})
            break
    # 3. A period cut at 201 cleared: the teacher had marked the wrong student.
    cut = letters_for(middle)["unexcused"]
    for sid, days in sorted(sim.attendance.get(middle, {}).items()):
        cuts = [d for d in recent[:-1] if d in days and not days[d]["all_day"] and cut in days[d]["periods"].values()]
        if cuts:
            correct(middle, sid, cuts[-1], None)
            break


# ---------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------


@dataclass
class FaultPlan:
    """Faults for the next requests; tests change it while the server runs (a lock guards the counters)."""

    rate_limit_next: int = 0
    retry_after_s: float = 1.0
    unavailable_next: int = 0
    drop_next: int = 0  # close the connection without any response
    latency_s: float = 0.0
    invalid_json_next: int = 0
    truncate_next: int = 0  # send headers and half the body, then close (an incomplete read)
    paths_matching: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, path: str) -> tuple[str | None, float]:
        """The fault (if any) for one request to ``path``, and the latency to add."""
        with self._lock:
            if self.paths_matching and not re.search(self.paths_matching, path, re.IGNORECASE):
                return None, 0.0
            for name in ("drop", "rate_limit", "unavailable", "truncate", "invalid_json"):
                attr = f"{name}_next"
                if getattr(self, attr) > 0:
                    setattr(self, attr, getattr(self, attr) - 1)
                    return name, self.latency_s
            return None, self.latency_s


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, date):
        return value.strftime("%Y-%m-%dT00:00:00")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, default=_json_default, separators=(",", ":")).encode("utf-8")


_I = re.IGNORECASE
_SC = r"schools/(?P<sc>-?\d+)"
_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, _I), name)
    for p, name in [
        (r"systeminfo", "systeminfo"),
        (r"schools", "schools"),
        (_SC, "school"),
        (_SC + r"/terms", "terms"),
        (_SC + r"/calendar", "calendar"),
        (_SC + r"/absencecodes(?:/(?P<code>[^/]+))?", "absence_codes"),
        (_SC + r"/students", "students"),
        (_SC + r"/students/grade/(?P<grade>-?\d+)", "students_by_grade"),
        (_SC + r"/students/sn/(?P<sn>\d+)", "students_by_number"),
        (_SC + r"/students/(?P<sid>\d+)", "student"),
        (r"enrollment/(?P<sid>\d+)(?:/year/(?P<year>\d{4}))?", "enrollment"),
        (_SC + r"/enrollment/(?P<sid>\d+)(?:/year/(?P<year>\d{4}))?", "enrollment"),
        (_SC + r"/attendance(?:/(?P<sid>\d+))?", "attendance"),
        (_SC + r"/attendancehistory/summary(?:/year/(?P<y1>\d{4})-(?P<y2>\d{4})|/(?P<sid>\d+))?", "history_summary"),
        (r"codes/(?P<table>[^/]+)/(?P<field>[^/]+)", "codes"),
        (r"staff", "staff_list"),
        (r"staff/(?P<staff_id>\d+)", "staff"),
        (r"studentdatachanges/(?P<area>[^/]+)/(?P<y>\d+)/(?P<m>\d+)/(?P<d>\d+)/(?P<h>\d+)/(?P<mi>\d+)", "data_changes"),
    ]
]
_PAGED = {"students", "students_by_grade"}


class _ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _Api:
    """Routes one request to the district data; returns (status, JSON payload)."""

    def __init__(self, district: SimDistrict, cert: str):
        self.district, self.cert = district, cert

    def handle(self, method: str, rel: str, query: dict[str, str], headers: Any, uri: str) -> tuple[int, Any]:
        for pattern, name in _ROUTES:
            match = pattern.fullmatch(rel)
            if match:
                break
        else:
            return 404, {"Message": f"No HTTP resource was found that matches the request URI '{uri}'."}
        if method != "GET":
            return 405, {"Message": f"The requested resource does not support http method '{method}'."}
        if name != "systeminfo":
            given = headers.get("AERIES-CERT") or query.get("cert") or ""
            if not hmac.compare_digest(given.encode(), self.cert.encode()):
                return 401, {"Message": "Authorization has been denied for this request."}
        try:
            with self.district.lock:
                payload = getattr(self, f"_{name}")(query, **{k: v for k, v in match.groupdict().items()})
        except _ApiError as exc:
            return exc.status, {"Message": exc.message}
        if name in _PAGED:
            payload = _page(payload, query)
        return 200, payload

    # -- handlers (called with the district locked) ----------------------------------------------

    def _systeminfo(self, query: dict) -> dict:
        now = self.district.now()
        offset = now.replace(tzinfo=ZoneInfo(LOCAL_TIMEZONE)).strftime("%z")
        year = self.district.school_year
        return {
            "AeriesVersion": AERIES_VERSION,
            "DatabaseYear": f"{year}-{year + 1}",
            "AvailableDatabaseYears": [f"{year}-{year + 1}"],
            "LocalTimeZoneName": LOCAL_TIMEZONE_NAME,
            "CurrentDateTime": f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond:06d}0{offset[:3]}:{offset[3:]}",
        }

    def _schools(self, query: dict) -> list[dict]:
        return self.district.schools

    def _school(self, query: dict, sc: str) -> list[dict]:
        school = self.district.school(int(sc))
        if school is None:
            raise _ApiError(404, "Invalid School Code")
        return [school]

    def _terms(self, query: dict, sc: str) -> list[dict]:
        school = self.district.school(int(sc))
        return school["Terms"] if school else []

    def _calendar(self, query: dict, sc: str) -> list[dict]:
        return self.district.calendars.get(int(sc), [])

    def _absence_codes(self, query: dict, sc: str, code: str | None) -> list[dict]:
        rows = self.district.absence_codes.get(int(sc), [])
        if code is None:
            return rows
        hit = [r for r in rows if r["AbsenceCode"] == code]
        if not hit:
            raise _ApiError(404, "Invalid Absence Code")
        return hit

    def _records_at(self, sc: str) -> list[dict]:
        records = [r for r in self.district.students if r["SchoolCode"] == int(sc)]
        return sorted(records, key=lambda r: r["StudentNumber"])

    def _students(self, query: dict, sc: str) -> list[dict]:
        return self._records_at(sc)

    def _students_by_grade(self, query: dict, sc: str, grade: str) -> list[dict]:
        return [r for r in self._records_at(sc) if r["Grade"] == int(grade)]

    def _students_by_number(self, query: dict, sc: str, sn: str) -> list[dict]:
        return [r for r in self._records_at(sc) if r["StudentNumber"] == int(sn)]

    def _student(self, query: dict, sc: str, sid: str) -> list[dict]:
        # Newer Aeries (KB 14000166308): the SchoolCode scopes the call; no record there is an empty array.
        return [r for r in self._records_at(sc) if r["StudentID"] == int(sid)]

    def _enrollment(self, query: dict, sid: str, year: str | None, sc: str | None = None) -> list[dict]:
        rows = self.district.enrollment
        if sc is not None:
            rows = [r for r in rows if r["SchoolCode"] == int(sc)]
        if int(sid):
            rows = [r for r in rows if r["StudentID"] == int(sid)]
        if year is not None:
            rows = [r for r in rows if r["AcademicYear"] == year]
        return sorted(rows, key=lambda r: (r["StudentID"], r["EnterDate"], r["SchoolCode"]))

    def _attendance(self, query: dict, sc: str, sid: str | None) -> list[dict]:
        year = self.district.school_year
        start = _query_date(query, "startdate") or date(year, 7, 1)
        end = _query_date(query, "enddate") or date(year + 1, 6, 30)
        per_student = self.district.attendance.get(int(sc), {})
        sids = [int(sid)] if sid is not None else sorted(per_student)
        out = []
        for student_id in sids:
            days = [(d, e) for d, e in sorted(per_student.get(student_id, {}).items()) if start <= d <= end]
            if days:
                out.append(
                    {
                        "StudentID": student_id,
                        "AttendanceDays": [
                            {
                                "CalendarDate": d,
                                "AllDayAttendanceCode": e["all_day"],
                                "Classes": [
                                    {
                                        "SectionNumber": _section(int(sc), student_id, p),
                                        "Period": p,
                                        "AttendanceCode": c,
                                    }
                                    for p, c in sorted(e["periods"].items())
                                ],
                            }
                            for d, e in days
                        ],
                    }
                )
        return out

    def _history_summary(
        self, query: dict, sc: str, y1: str | None = None, y2: str | None = None, sid: str | None = None
    ) -> list[dict]:
        wanted_year = f"{y1}-{y2}" if y1 else None
        if sid is not None:  # with a StudentID the SchoolCode is ignored
            students = [int(sid)]
        else:  # students who have a record at the school; their rows may come from other schools
            students = sorted({r["StudentID"] for r in self.district.students if r["SchoolCode"] == int(sc)})
        by_student: dict[int, list[dict]] = {}
        for (student_id, _code), summary in self.district.history.items():
            if wanted_year is None or summary["SchoolYear"] == wanted_year:
                by_student.setdefault(student_id, []).append(summary)
        return [{"StudentID": s, "HistorySummaries": by_student[s]} for s in students if s in by_student]

    def _codes(self, query: dict, table: str, field: str) -> list[dict]:
        found = _CODE_SETS.get((table.lower(), field.lower()))
        if not found:
            return []
        table_code, field_code, codes = found
        return [
            {"Table": table_code, "Field": field_code, "Code": code, "Description": description, "Category": "",
             "SortOrder": i, "Status": "", "AeriesCode": "", "NumericValue": 0.0}
            for i, (code, description) in enumerate(codes)
        ]  # fmt: skip

    def _staff_list(self, query: dict) -> list[dict]:
        filters = {k: v for k, v in query.items() if k not in ("databaseyear", "cert")}
        rows = self.district.staff
        for key, value in filters.items():
            column = next((c for c in (rows[0] if rows else {}) if c.lower() == key), None)
            if column is not None:
                rows = [r for r in rows if str(r[column]).lower() == value.lower()]
        return rows

    def _staff(self, query: dict, staff_id: str) -> dict:
        hit = next((r for r in self.district.staff if r["ID"] == int(staff_id)), None)
        if hit is None:
            raise _ApiError(404, "Invalid Staff ID")
        return hit  # a bare object, as the recorded demo response shows

    def _data_changes(self, query: dict, area: str, y: str, m: str, d: str, h: str, mi: str) -> list[dict]:
        if area not in DATA_CHANGE_AREAS:
            raise _ApiError(400, f"Invalid data area '{area}'. Valid areas: {', '.join(DATA_CHANGE_AREAS)}")
        try:
            since = datetime(int(y), int(m), int(d), int(h), int(mi))
        except ValueError:
            raise _ApiError(400, "Invalid date and time") from None
        seen: dict[tuple[int, int], dict] = {}
        for when, changed_area, sid, sc, number in sorted(self.district.data_changes, key=lambda c: c[0]):
            if changed_area == area and when >= since:
                seen.setdefault((sid, sc), {"StudentID": sid, "SchoolCode": sc, "StudentNumber": number})
        return list(seen.values())


def _section(school_code: int, student_id: int, period: str) -> int:
    """A stable section number per school, period and student (four or five digits, as in the docs)."""
    period_number = int(period) if period.isdigit() else 0
    return period_number * 1000 + (school_code % 100) * 10 + student_id % 7


def _query_date(query: dict, key: str) -> date | None:
    value = query.get(key)
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise _ApiError(400, f"Invalid {key}: expected YYYYMMDD") from None


def _page(records: list[dict], query: dict) -> list[dict]:
    """StartingRecord/EndingRecord, 1-based and inclusive; ignored unless both are given."""
    try:
        start, end = int(query["startingrecord"]), int(query["endingrecord"])
    except (KeyError, ValueError):
        return records
    return records[max(start, 1) - 1 : max(end, 0)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sim: RunningSimulator):
        self.sim = sim
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):  # noqa: ANN001 - socketserver's signature
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):  # noqa: ANN001
        """A client that timed out or hung up is normal here; anything else goes to the log, not stderr."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            log.exception("Aeries simulator failed to answer a request")

    def shutdown_request(self, request):  # noqa: ANN001
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection reuse is exercised
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    timeout = 30  # close idle keep-alive connections eventually

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.sim._serve(self)  # type: ignore[attr-defined]

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the requests list is the log
        pass


class RunningSimulator:
    """A simulator serving on 127.0.0.1 in a background thread; ``stop()`` or use it as a context manager.

    ``requests`` logs (method, path, status) per request, status 0 when the connection was dropped;
    ``request_meta`` holds, at the same index, the query parameters and the Accept header (never the cert).
    ``max_in_flight`` is the most requests the server was handling at once.
    """

    def __init__(self, district: SimDistrict, cert: str, faults: FaultPlan):
        self.district = district
        self.cert = cert
        self.faults = faults
        self.requests: list[tuple[str, str, int]] = []
        self.request_meta: list[dict[str, Any]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._stats_lock = threading.Lock()
        self._stopping = threading.Event()
        self._api = _Api(district, cert)
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}{BASE_PATH}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="aeries-simulator", daemon=True
        )
        self._thread.start()

    def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Until no request is being handled (a client that timed out leaves its request running here)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._stats_lock:
                if self._in_flight == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Aeries simulator still handling {self._in_flight} request(s) after {timeout_s:g}s")
            time.sleep(0.01)

    def reset_stats(self) -> None:
        with self._stats_lock:
            self.requests.clear()
            self.request_meta.clear()
            self.max_in_flight = 0

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        with self._server.connections_lock:
            for conn in list(self._server.open_connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        method = handler.command
        if method != "GET":  # drain a request body so the connection stays usable
            length = int(handler.headers.get("Content-Length") or 0)
            if length:
                handler.rfile.read(length)
        split = urlsplit(handler.path)
        path = unquote(split.path)
        meta = {"query": dict(parse_qsl(split.query, keep_blank_values=True)), "accept": handler.headers.get("Accept")}

        answered = False

        def leave() -> None:
            nonlocal answered
            with self._stats_lock:
                if not answered:
                    answered = True
                    self._in_flight -= 1

        def reply(status: int, body: bytes | None, headers: list | None = None, *, truncate: bool = False) -> None:
            with self._stats_lock:
                self.requests.append((method, path, status if body is not None else 0))
                self.request_meta.append(meta)
            # Out of flight before the first byte: a client that has its answer may send the next request
            # at once, and must not be counted as having two in flight with this thread not yet rescheduled.
            leave()
            if body is None:
                _drop(handler)
                return
            _send_head(handler, status, len(body), headers or [])
            if method == "HEAD":
                return
            if truncate:
                handler.wfile.write(body[: len(body) // 2])
                _drop(handler)
            else:
                handler.wfile.write(body)

        with self._stats_lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            fault, latency = self.faults.take(path)
            if latency:
                self._stopping.wait(latency)
            if fault == "drop":
                reply(0, None)
                return
            if fault == "rate_limit":
                seconds = self.faults.retry_after_s
                retry_after = str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
                reply(429, _dumps({"Message": "Too many requests"}), [("Retry-After", retry_after)])
                return
            if fault == "unavailable":
                reply(503, _dumps({"Message": "The service is unavailable."}))
                return
            try:
                status, payload = self._route(method, path, split.query, handler)
                body = _dumps(payload)
            except Exception:  # noqa: BLE001 - answer as ASP.NET does rather than hang up
                log.exception("Aeries simulator failed on %s %s", method, path)
                status, body = 500, _dumps({"Message": "An error has occurred."})
            if fault == "invalid_json":
                status, body = 200, b'[{"StudentID":99400001,"AttendanceDays":[{"CalendarDate":"2025-'
            reply(status, body, truncate=fault == "truncate")
        finally:
            leave()

    def _route(self, method: str, path: str, raw_query: str, handler: BaseHTTPRequestHandler) -> tuple[int, Any]:
        prefix = f"{BASE_PATH}/api/v5/"
        if not path.lower().startswith(prefix):
            return 404, {"Message": "Not Found"}
        rel = path[len(prefix) :].strip("/")
        query = {k.lower(): v for k, v in parse_qsl(raw_query, keep_blank_values=True)}
        uri = f"{self.base_url}{path[len(BASE_PATH):]}"
        return self._api.handle(method, rel, query, handler.headers, uri)


def _send_head(handler: BaseHTTPRequestHandler, status: int, length: int, headers: list) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(length))
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()


def _drop(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True
    try:
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def start_simulator(
    district: SimDistrict, *, cert: str = DEMO_CERT, faults: FaultPlan | None = None
) -> RunningSimulator:
    """Serve ``district`` on a free loopback port: ``<base_url>/api/v5/...``."""
    return RunningSimulator(district, cert, faults or FaultPlan())

