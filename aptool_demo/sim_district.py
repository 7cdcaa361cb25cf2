"""The district as the simulated Aeries holds it: plain Python data, mutated through locked methods.

Tests change it while the server runs (enrol, withdraw, correct attendance, add or end a program, move
the clock) to play out what happens in a real district between two pulls; each change lands in the
data-change feed exactly as Aeries records it (a program change in the ``program`` area, once per record
the student has), and attendance edits in none (Aeries has no attendance feed).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aptool_assets.vocabulary import school_year_of
from aptool_demo.calendars import instructional_days
from aptool_demo.history import HISTORY_COUNTS, count_day, summary_record
from aptool_demo.records import enrollment_row, grade_fields, program_record, student_record

LOCAL_TIMEZONE = "America/Los_Angeles"


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
    corrections: list[dict] = field(default_factory=list)  # back-dated edits made after the last nightly job
    programs: list[dict] = field(default_factory=list)  # program records (records.program_record), any school
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
        """The codes usable at a school: its own table over the district-wide one (SchoolCode 0)."""
        district = {row["AbsenceCode"]: row for row in self.absence_codes.get(0, [])}
        return district | {row["AbsenceCode"]: row for row in self.absence_codes.get(school_code, [])}

    def student_record(self, student_id: int, school_code: int) -> dict:
        for record in self.students:
            if record["StudentID"] == student_id and record["SchoolCode"] == school_code:
                return record
        raise KeyError(f"no student record for StudentID {student_id} at school {school_code}")

    def school(self, school_code: int) -> dict | None:
        return next((s for s in self.schools if s["SchoolCode"] == school_code), None)

    def programs_at(self, school_code: int, student_id: int | None = None, code: str | None = None) -> list[dict]:
        """Program records of the students with a record (active or not) at a school, by StudentID and start;
        ``student_id`` and ``code`` narrow them."""
        at_school = {r["StudentID"] for r in self.students if r["SchoolCode"] == school_code}
        if student_id is not None:
            at_school &= {student_id}
        rows = [p for p in self.programs if p["StudentID"] in at_school and (code is None or p["ProgramCode"] == code)]
        return sorted(rows, key=_program_order)

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
            self.record_change("student", record)

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
            record = next(
                (r for r in self.students if r["StudentID"] == student_id and r["SchoolCode"] == school_code), None
            )
            if record is None:
                record = self._new_record(student_id, school_code, grade, first_name, last_name)
            record.update(
                {
                    "Grade": grade,
                    **grade_fields(grade, school_code),
                    "SchoolEnterDate": enter_date,
                    "SchoolLeaveDate": None,
                    "InactiveStatusCode": "",
                }
            )
            if first_name:
                record["FirstName"] = first_name
            if last_name:
                record["LastName"] = last_name
            self.enrollment.append(enrollment_row(record, str(school_year_of(enter_date)), enter_date, None, ""))
            when = at or self.now()
            self.record_change("student", record, when)
            self.record_change("enrollment", record, when)
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
            self.record_change("student", record, when)
            self.record_change("enrollment", record, when)

    def add_program(
        self,
        student_id: int,
        program_code: str,
        start: date,
        *,
        end: date | None = None,
        eligibility_start: date | None = None,
        at: datetime | None = None,
    ) -> dict:
        """A new program stint from ``start`` (participation; eligibility from ``eligibility_start`` or the
        same day), recorded in the ``program`` area for every record the student has."""
        with self.lock:
            records = self._records_of(student_id)
            row = program_record(
                student_id,
                str(program_code),
                eligibility_start=eligibility_start or start,
                eligibility_end=end,
                participation_start=start,
                participation_end=end,
            )
            self.programs.append(row)
            when = at or self.now()
            for record in records:
                self.record_change("program", record, when)
            return row

    def end_program(self, student_id: int, program_code: str, end: date, *, at: datetime | None = None) -> dict:
        """End the student's open stint of a program on ``end`` (its eligibility too), recorded in the
        ``program`` area for every record the student has."""
        with self.lock:
            records = self._records_of(student_id)
            open_rows = [
                p
                for p in self.programs
                if p["StudentID"] == student_id
                and p["ProgramCode"] == str(program_code)
                and p["ParticipationEndDate"] is None
                and p["EligibilityEndDate"] is None
            ]
            if not open_rows:
                raise KeyError(f"StudentID {student_id} has no open program {program_code}")
            row = open_rows[-1]
            row.update({"ParticipationEndDate": end, "EligibilityEndDate": end})
            when = at or self.now()
            for record in records:
                self.record_change("program", record, when)
            return row

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
                counts = totals.setdefault(key, dict.fromkeys(HISTORY_COUNTS, 0))
                last = min(row["LeaveDate"] or through, through)
                table = self.code_table(row["SchoolCode"])
                days = self.attendance.get(row["SchoolCode"], {}).get(row["StudentID"], {})
                for day in instructional_days(self.calendars.get(row["SchoolCode"], [])):
                    if row["EnterDate"] <= day <= last:
                        count_day(counts, days.get(day), table)
            self.history = {
                key: summary_record(key[1], self.school_year, counts) for key, counts in sorted(totals.items())
            }

    def record_change(self, area: str, record: dict, when: datetime | None = None) -> None:
        """Log a change of ``record`` in a data-change area (at ``when``, default now), as Aeries does."""
        self.data_changes.append(
            (when or self.now(), area, record["StudentID"], record["SchoolCode"], record["StudentNumber"])
        )

    # -- internals -------------------------------------------------------------------------------

    def _records_of(self, student_id: int) -> list[dict]:
        records = [r for r in self.students if r["StudentID"] == student_id]
        if not records:
            raise KeyError(f"no student record for StudentID {student_id}")
        return records

    def _new_record(
        self, student_id: int, school_code: int, grade: int, first_name: str | None, last_name: str | None
    ) -> dict:
        """A record at a school the student has none at: a copy of another of theirs, or a new student."""
        existing = [r for r in self.students if r["StudentID"] == student_id]
        if existing:
            template = dict(existing[0])
        elif first_name and last_name:
            template = student_record(
                random.Random(student_id), student_id, school_code, 0, grade, first_name, last_name, self.school_year
            )
        else:
            raise ValueError(f"StudentID {student_id} is new to the district: give first_name and last_name")
        numbers = [r["StudentNumber"] for r in self.students if r["SchoolCode"] == school_code]
        record = template | {"SchoolCode": school_code, "StudentNumber": 1 + max(numbers, default=0)}
        self.students.append(record)
        return record


def _program_order(row: dict) -> tuple:
    start = row["ParticipationStartDate"] or row["EligibilityStartDate"] or date.min
    return (row["StudentID"], row["ProgramCode"], start)
