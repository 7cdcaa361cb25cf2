"""The Aeries v5 API the simulator answers: which paths exist and what each returns (reference §3-6, §10).

A table maps each URL pattern (matched whole and case-insensitively, below ``/api/v5/``) to the method
that answers it, so a reader sees every endpoint in one place. The behaviours that trip clients up are
kept: arrays where one object is expected, ``200 []`` versus 404, 1-based paging with no totals,
negative attendance with period-only days, and a change feed that never mentions attendance. Program
records (shape assumed, see ``records``) come per student or for a whole school in one call, which
``FaultPlan.school_programs_refusal`` makes the server refuse, as some districts' Aeries does.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from aptool_demo.codes import CODE_SETS
from aptool_demo.faults import FaultPlan
from aptool_demo.sim_district import LOCAL_TIMEZONE, SimDistrict

AERIES_VERSION = "10.25.1105.1"
LOCAL_TIMEZONE_NAME = "(UTC-08:00) Pacific Time (US & Canada)"  # Windows-style, as systeminfo reports it
# The six areas StudentDataChanges accepts (reference §4); there is no attendance area.
DATA_CHANGE_AREAS = ("student", "contact", "program", "test", "class", "enrollment")
_SC = r"schools/(?P<sc>-?\d+)"


class ApiError(Exception):
    """An answer other than 200, with the ``Message`` Aeries puts in its body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Route(NamedTuple):
    pattern: re.Pattern[str]
    handler: Callable[..., Any]  # called with the query and the pattern's named groups, the district locked
    paged: bool = False  # StartingRecord/EndingRecord apply to the result
    needs_cert: bool = True  # systeminfo answers without a certificate


def _route(pattern: str, handler: Callable[..., Any], *, paged: bool = False, needs_cert: bool = True) -> Route:
    return Route(re.compile(pattern, re.IGNORECASE), handler, paged, needs_cert)


class Api:
    """Routes one request to one school year's district data (one Aeries database); returns (status, JSON payload).

    ``available_years``: every database year the server holds, for ``systeminfo`` (default: this district's
    year only); ``clock``: the server's local time (default: the district's own clock), so a past year's
    database reports the same server time as the current one.
    """

    def __init__(
        self,
        district: SimDistrict,
        cert: str,
        faults: FaultPlan | None = None,
        *,
        available_years: Sequence[int] | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        self.district, self.cert = district, cert
        self.faults = faults or FaultPlan()
        self.available_years = sorted(set(available_years or [district.school_year]), reverse=True)
        self.clock = clock or district.now
        self.routes: list[Route] = [
            _route(r"systeminfo", self._systeminfo, needs_cert=False),
            _route(r"schools", self._schools),
            _route(_SC, self._school),
            _route(_SC + r"/terms", self._terms),
            _route(_SC + r"/calendar", self._calendar),
            _route(_SC + r"/absencecodes(?:/(?P<code>[^/]+))?", self._absence_codes),
            _route(_SC + r"/students", self._students, paged=True),
            _route(_SC + r"/students/grade/(?P<grade>-?\d+)", self._students_by_grade, paged=True),
            _route(_SC + r"/students/sn/(?P<sn>\d+)", self._students_by_number),
            _route(_SC + r"/students/(?P<sid>\d+)", self._student),
            _route(_SC + r"/students/programs", self._school_programs),
            _route(_SC + r"/students/(?P<sid>\d+)/programs", self._student_programs),
            _route(r"enrollment/(?P<sid>\d+)(?:/year/(?P<year>\d{4}))?", self._enrollment),
            _route(_SC + r"/enrollment/(?P<sid>\d+)(?:/year/(?P<year>\d{4}))?", self._enrollment),
            _route(_SC + r"/attendance(?:/(?P<sid>\d+))?", self._attendance),
            _route(
                _SC + r"/attendancehistory/summary(?:/year/(?P<y1>\d{4})-(?P<y2>\d{4})|/(?P<sid>\d+))?",
                self._history_summary,
            ),
            _route(r"codes/(?P<table>[^/]+)/(?P<field>[^/]+)", self._codes),
            _route(r"staff", self._staff_list),
            _route(r"staff/(?P<staff_id>\d+)", self._staff),
            _route(
                r"studentdatachanges/(?P<area>[^/]+)/(?P<y>\d+)/(?P<m>\d+)/(?P<d>\d+)/(?P<h>\d+)/(?P<mi>\d+)",
                self._data_changes,
            ),
        ]

    def handle(self, method: str, rel: str, query: dict[str, str], headers: Any, uri: str) -> tuple[int, Any]:
        """Answer ``method`` on ``rel`` (the path below ``/api/v5/``); ``query`` has lowercase keys."""
        for route in self.routes:
            match = route.pattern.fullmatch(rel)
            if match:
                break
        else:
            return 404, {"Message": f"No HTTP resource was found that matches the request URI '{uri}'."}
        if method != "GET":
            return 405, {"Message": f"The requested resource does not support http method '{method}'."}
        if route.needs_cert:
            given = headers.get("AERIES-CERT") or query.get("cert") or ""
            if not hmac.compare_digest(given.encode(), self.cert.encode()):
                return 401, {"Message": "Authorization has been denied for this request."}
        try:
            with self.district.lock:
                payload = route.handler(query, **match.groupdict())
        except ApiError as exc:
            return exc.status, {"Message": exc.message}
        if route.paged:
            payload = _page(payload, query)
        return 200, payload

    # -- handlers (called with the district locked) ----------------------------------------------

    def _systeminfo(self, query: dict) -> dict:
        now = self.clock()
        offset = now.replace(tzinfo=ZoneInfo(LOCAL_TIMEZONE)).strftime("%z")
        year = self.district.school_year  # the database answering: the requested year's, else the default
        return {
            "AeriesVersion": AERIES_VERSION,
            "DatabaseYear": f"{year}-{year + 1}",
            "AvailableDatabaseYears": [f"{y}-{y + 1}" for y in self.available_years],  # newest first
            "LocalTimeZoneName": LOCAL_TIMEZONE_NAME,
            "CurrentDateTime": f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond:06d}0{offset[:3]}:{offset[3:]}",
        }

    def _schools(self, query: dict) -> list[dict]:
        return self.district.schools

    def _school(self, query: dict, sc: str) -> list[dict]:
        school = self.district.school(int(sc))
        if school is None:
            raise ApiError(404, "Invalid School Code")
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
            raise ApiError(404, "Invalid Absence Code")
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

    def _school_programs(self, query: dict, sc: str) -> list[dict]:
        """Every program record of the students with a record at the school (the StudentID-less form)."""
        refusal = self.faults.school_programs_refusal
        if refusal == 404:
            raise ApiError(404, "No HTTP resource was found that matches the request URI.")
        if refusal:
            # What ASP.NET answers when "programs" is bound to the {StudentID} of /students/{StudentID}.
            raise ApiError(refusal, "The request is invalid.")
        return self.district.programs_at(int(sc), code=query.get("code") or None)

    def _student_programs(self, query: dict, sc: str, sid: str) -> list[dict]:
        # Scoped by the SchoolCode like the single-student call: no record there is an empty array.
        return self.district.programs_at(int(sc), int(sid), code=query.get("code") or None)

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
                        "AttendanceDays": [_attendance_day(int(sc), student_id, d, e) for d, e in days],
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
        found = CODE_SETS.get((table.lower(), field.lower()))
        if not found:
            return []
        table_code, field_code, codes = found
        return [
            {
                "Table": table_code,
                "Field": field_code,
                "Code": code,
                "Description": description,
                "Category": "",
                "SortOrder": i,
                "Status": "",
                "AeriesCode": "",
                "NumericValue": 0.0,
            }
            for i, (code, description) in enumerate(codes)
        ]

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
            raise ApiError(404, "Invalid Staff ID")
        return hit  # a bare object, as the recorded demo response shows

    def _data_changes(self, query: dict, area: str, y: str, m: str, d: str, h: str, mi: str) -> list[dict]:
        if area not in DATA_CHANGE_AREAS:
            raise ApiError(400, f"Invalid data area '{area}'. Valid areas: {', '.join(DATA_CHANGE_AREAS)}")
        try:
            since = datetime(int(y), int(m), int(d), int(h), int(mi))
        except ValueError:
            raise ApiError(400, "Invalid date and time") from None
        seen: dict[tuple[int, int], dict] = {}
        for when, changed_area, sid, sc, number in sorted(self.district.data_changes, key=lambda c: c[0]):
            if changed_area == area and when >= since:
                seen.setdefault((sid, sc), {"StudentID": sid, "SchoolCode": sc, "StudentNumber": number})
        return list(seen.values())


def _attendance_day(school_code: int, student_id: int, day: date, entry: dict) -> dict:
    """One ``AttendanceDays`` entry: the all-day code (may be blank) and the period codes, by period."""
    return {
        "CalendarDate": day,
        "AllDayAttendanceCode": entry["all_day"],
        "Classes": [
            {"SectionNumber": _section(school_code, student_id, p), "Period": p, "AttendanceCode": c}
            for p, c in sorted(entry["periods"].items())
        ],
    }


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
        raise ApiError(400, f"Invalid {key}: expected YYYYMMDD") from None


def _page(records: list[dict], query: dict) -> list[dict]:
    """StartingRecord/EndingRecord, 1-based and inclusive; ignored unless both are given."""
    try:
        start, end = int(query["startingrecord"]), int(query["endingrecord"])
    except (KeyError, ValueError):
        return records
    return records[max(start, 1) - 1 : max(end, 0)]
