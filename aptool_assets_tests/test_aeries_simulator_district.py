"""The Aeries simulator's district: attendance, absence codes and calendars as served, a realistic and
deterministic district, attendance history and the change feed, and injected faults.

Requests go over real HTTP to the loopback server; nothing is mocked.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta

import httpx
import pytest

from aptool_assets_tests.aeries_sim_helpers import (  # noqa: F401 - the fixtures, used as parameters
    THROUGH,
    YEAR,
    api,
    district,
    fresh_district,
    sim,
)
from aptool_demo.district import SCHOOLS, build_district
from aptool_demo.simulator import FaultPlan, build_sim_district, instructional_days, letters_for, start_simulator

DATA_CHANGE_AREAS = ["student", "contact", "program", "test", "class", "enrollment"]


# -- attendance, codes, calendar ------------------------------------------------------------------


def test_attendance_is_negative_and_honours_the_window_inclusively(api, district):
    per_student = district.attendance[201]
    sid, day = next((s, d) for s, days in per_student.items() for d, e in days.items() if not e["all_day"])
    body = api.get("/schools/201/attendance", params={"StartDate": f"{day:%Y%m%d}", "EndDate": f"{day:%Y%m%d}"}).json()
    expected_students = sorted(s for s, days in per_student.items() if day in days)
    assert [r["StudentID"] for r in body] == expected_students
    entry = next(r for r in body if r["StudentID"] == sid)["AttendanceDays"]
    assert len(entry) == 1 and entry[0]["CalendarDate"] == f"{day:%Y-%m-%d}T00:00:00"
    assert entry[0]["AllDayAttendanceCode"] == ""  # a period-only day
    classes = entry[0]["Classes"]
    assert classes and all(isinstance(c["Period"], str) and isinstance(c["SectionNumber"], int) for c in classes)
    assert {c["Period"]: c["AttendanceCode"] for c in classes} == per_student[sid][day]["periods"]
    # The window is inclusive at both ends and nothing outside it comes back.
    start, end = day - timedelta(days=7), day
    body = api.get(
        "/schools/201/attendance", params={"StartDate": f"{start:%Y%m%d}", "EndDate": f"{end:%Y%m%d}"}
    ).json()
    served = {(r["StudentID"], d["CalendarDate"][:10]) for r in body for d in r["AttendanceDays"]}
    expected = {(s, f"{d:%Y-%m-%d}") for s, days in per_student.items() for d in days if start <= d <= end}
    assert served == expected
    one_student = api.get(f"/schools/201/attendance/{sid}").json()
    assert [r["StudentID"] for r in one_student] == [sid]


def test_absence_codes_cover_every_meaning_with_different_letters_at_one_school(api):
    tables = {code: api.get(f"/schools/{code}/AbsenceCodes").json() for code, *_ in SCHOOLS}
    for rows in tables.values():
        assert all(len(r["AbsenceCode"]) == 1 and len(r["Title"]) <= 10 and len(r["Abbreviation"]) <= 3 for r in rows)
        flags = [
            (
                r["TypeCode"],
                r["IsSuspension"],
                r["CountsForADA"],
                r["IsPartialDayTruant"],
                r["IsTemporarilyNotEnrolled"],
            )
            for r in rows
        ]
        assert any(f[0] == 1 for f in flags) and any(f[0] == 2 and not any(f[1:2] + f[3:]) for f in flags)
        assert any(f[0] == 3 for f in flags) and any(f[0] == 5 for f in flags)
        assert any(f[3] for f in flags)  # partial-day truant
        assert any(f[1] and not f[2] for f in flags) and any(f[1] and f[2] for f in flags)  # OSS and ISS
        assert any(f[4] for f in flags)  # temporarily not enrolled
    by_letter = {code: {r["AbsenceCode"]: r["TypeCode"] for r in rows} for code, rows in tables.items()}
    assert by_letter[101]["A"] == 1 and by_letter[102]["A"] == 4  # same letter, different meaning
    assert by_letter[101]["T"] == 5 and by_letter[102]["T"] == 3


def test_calendar_has_about_180_school_days_from_mid_august_to_early_june(api):
    for code, *_ in SCHOOLS:
        rows = api.get(f"/schools/{code}/calendar").json()
        days = [date.fromisoformat(r["CalendarDate"][:10]) for r in rows]
        assert all(d.weekday() < 5 for d in days)  # weekends absent
        assert date(YEAR, 8, 8) <= days[0] <= date(YEAR, 8, 20) and date(YEAR + 1, 5, 28) <= days[-1] <= date(
            YEAR + 1, 6, 12
        )
        codes = Counter(r["HolidayCode"] for r in rows)
        assert codes[""] + codes["%"] == 180
        assert codes["%"] > 0 and codes["#"] > 0 and codes["@"] > 0
        assert set(codes) <= {"", "%", "#", "@", "$", "+"}


# -- district realism ------------------------------------------------------------------------------


def test_awkward_cases_are_present(district):
    year = str(YEAR)
    records = Counter(r["StudentID"] for r in district.students if r["InactiveStatusCode"] != "*")
    movers = [sid for sid, n in records.items() if n == 2]
    assert movers
    rows = [r for r in district.enrollment if r["StudentID"] == movers[0] and r["AcademicYear"] == year]
    assert len(rows) == 2 and len({r["SchoolCode"] for r in rows}) == 2
    withdrawn = [r for r in district.students if r["SchoolLeaveDate"] and r["InactiveStatusCode"] not in ("", "*")]
    assert any(r["StudentID"] not in movers for r in withdrawn)
    assert any(r["InactiveStatusCode"] == "*" for r in district.students)
    assert district.corrections and all(c["date"] <= THROUGH for c in district.corrections)
    # The same students as the demo's i-Ready files.
    demo_ids = set(build_district(YEAR).students.get_column("student_id").to_list())
    assert {r["StudentID"] for r in district.students} == demo_ids


def test_attendance_is_realistic(district):
    rates, truancy = [], []
    for summary in district.history.values():
        if summary["DaysEnrolled"] >= 31:
            rates.append(summary["DaysAbsence"] / summary["DaysEnrolled"])
            truancy.append(summary["DaysOfTruancy"])
    chronic = sum(r >= 0.10 for r in rates) / len(rates)
    assert 0.08 <= chronic <= 0.18
    assert sum(r >= 0.20 for r in rates) >= 2
    assert sum(r < 0.05 for r in rates) / len(rates) > 0.6  # most students are rarely absent
    assert any(3 <= t <= 5 for t in truancy) and any(6 <= t <= 8 for t in truancy) and any(t >= 9 for t in truancy)
    totals = Counter()
    for school_code, per_student in district.attendance.items():
        table = district.code_table(school_code)
        for days in per_student.values():
            for entry in days.values():
                if not entry["all_day"]:
                    totals["period_only"] += 1
                    assert school_code == 201
                    continue
                row = table[entry["all_day"]]
                totals[
                    "oss"
                    if row["IsSuspension"] and not row["CountsForADA"]
                    else "iss"
                    if row["IsSuspension"]
                    else "tne"
                    if row["IsTemporarilyNotEnrolled"]
                    else row["TypeCode"]
                ] += 1
    assert totals["period_only"] > 20 and totals["oss"] >= 2 and totals["iss"] >= 1 and totals["tne"] >= 2
    assert totals[5] > 20  # tardies


def test_the_district_is_deterministic_for_a_seed():
    a, b = fresh_district(), fresh_district()
    assert a.attendance == b.attendance and a.students == b.students and a.enrollment == b.enrollment
    other = build_sim_district(build_district(YEAR), seed=8, through=THROUGH)
    assert other.attendance != a.attendance


def test_attendance_stops_at_through_and_at_leave_dates(district):
    for school_code, per_student in district.attendance.items():
        for sid, days in per_student.items():
            record = district.student_record(sid, school_code)
            assert max(days) <= THROUGH
            if record["SchoolLeaveDate"]:
                assert max(days) <= record["SchoolLeaveDate"]
            school_days = set(instructional_days(district.calendars[school_code]))
            assert set(days) <= school_days


# -- history, change feed, faults -----------------------------------------------------------------


def test_history_summary_groups_by_school_and_includes_other_schools_rows(api, district):
    body = api.get(f"/schools/102/AttendanceHistory/summary/year/{YEAR}-{YEAR + 1}").json()
    movers = [
        sid
        for sid, n in Counter((r["StudentID"]) for r in district.enrollment if r["AcademicYear"] == str(YEAR)).items()
        if n == 2
    ]
    mover = next(r for r in body if r["StudentID"] == movers[0])
    assert sorted(h["SchoolCode"] for h in mover["HistorySummaries"]) == [101, 102]
    for record in body:
        for h in record["HistorySummaries"]:
            assert h["SchoolYear"] == f"{YEAR}-{YEAR + 1}"
            assert h["DaysPresent"] + h["DaysAbsence"] == h["DaysEnrolled"]
            assert h["DaysExcused"] + h["DaysUnexcused"] == h["DaysAbsence"]
    assert api.get(f"/schools/102/AttendanceHistory/summary/year/{YEAR - 5}-{YEAR - 4}").json() == []
    single = api.get(f"/schools/999/attendancehistory/summary/{movers[0]}").json()  # SchoolCode ignored
    assert [r["StudentID"] for r in single] == [movers[0]]


def test_history_lags_until_the_nightly_job_and_attendance_edits_skip_the_change_feed():
    district = fresh_district()
    with start_simulator(district) as sim:
        api = httpx.Client(base_url=f"{sim.base_url}/api/v5", headers={"AERIES-CERT": sim.cert})
        summary_path = f"/schools/101/AttendanceHistory/summary/year/{YEAR}-{YEAR + 1}"
        feeds = lambda: {a: api.get(f"/StudentDataChanges/{a}/2000/1/1/0/0").json() for a in DATA_CHANGE_AREAS}  # noqa: E731 - a one-line view of the frame, used twice below
        before_summary, before_feeds = api.get(summary_path).json(), feeds()
        day = instructional_days(district.calendars[101])[5]
        sid = next(
            s
            for s in sorted(district.attendance[101])
            if day not in district.attendance[101][s] and district.student_record(s, 101)["InactiveStatusCode"] == ""
        )
        unexcused = letters_for(101)["unexcused"]
        district.set_attendance(101, sid, day, unexcused)
        served = api.get(
            "/schools/101/attendance", params={"StartDate": f"{day:%Y%m%d}", "EndDate": f"{day:%Y%m%d}"}
        ).json()
        assert any(r["StudentID"] == sid for r in served)  # the detail call sees the edit at once
        assert api.get(summary_path).json() == before_summary  # the totals do not
        assert feeds() == before_feeds  # and no feed mentions it: Aeries has no attendance feed
        district.run_nightly_history_job(THROUGH)
        after = {r["StudentID"]: r for r in api.get(summary_path).json()}[sid]
        old = {r["StudentID"]: r for r in before_summary}[sid]
        new_row = next(h for h in after["HistorySummaries"] if h["SchoolCode"] == 101)
        old_row = next(h for h in old["HistorySummaries"] if h["SchoolCode"] == 101)
        assert new_row["DaysAbsence"] == old_row["DaysAbsence"] + 1
        assert new_row["DaysUnexcused"] == old_row["DaysUnexcused"] + 1
        assert new_row["DaysOfTruancy"] == old_row["DaysOfTruancy"] + 1
        with pytest.raises(ValueError):
            district.set_attendance(101, sid, day, "W")  # W is a code at school 102 only
        api.close()


def test_data_changes_validate_the_area_and_use_the_local_since_time():
    district = fresh_district()
    district.set_clock(datetime(2026, 3, 23, 10, 15))
    with start_simulator(district) as sim:
        api = httpx.Client(base_url=f"{sim.base_url}/api/v5", headers={"AERIES-CERT": sim.cert})
        for area in DATA_CHANGE_AREAS:
            assert api.get(f"/StudentDataChanges/{area}/2026/3/23/0/0").status_code == 200
        for bad in ("attendance", "Student", "STU", "ATT"):
            response = api.get(f"/StudentDataChanges/{bad}/2026/3/23/0/0")
            assert response.status_code == 400 and response.json()["Message"]
        assert api.get("/StudentDataChanges/student/2026/13/1/0/0").status_code == 400
        record = next(r for r in district.students if r["SchoolCode"] == 102)
        district.update_student(record["StudentID"], 102, HomePhone="7075550000")
        hit = {"StudentID": record["StudentID"], "SchoolCode": 102, "StudentNumber": record["StudentNumber"]}
        assert hit in api.get("/StudentDataChanges/student/2026/03/23/10/15").json()  # leading zeros allowed
        assert hit not in api.get("/studentdatachanges/student/2026/3/23/10/16").json()
        assert hit not in api.get("/StudentDataChanges/enrollment/2026/3/23/10/15").json()
        district.withdraw(record["StudentID"], 102, date(2026, 3, 23))
        assert hit in api.get("/StudentDataChanges/enrollment/2026/3/23/10/15").json()
        served = api.get(f"/schools/102/students/{record['StudentID']}").json()[0]
        assert served["SchoolLeaveDate"] == "2026-03-23T00:00:00" and served["InactiveStatusCode"] == "T"
        api.close()


def test_faults_apply_only_to_matching_paths(sim, api):
    sim.faults.paths_matching = r"/attendance"
    sim.faults.unavailable_next = 1
    assert api.get("/schools").status_code == 200
    assert api.get("/schools/101/attendance").status_code == 503
    assert api.get("/schools/101/attendance").status_code == 200
    sim.faults.paths_matching = None
    sim.faults.invalid_json_next = 1
    with pytest.raises(json.JSONDecodeError):
        api.get("/schools").json()
    sim.faults.drop_next = 1
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/schools")
    sim.faults.rate_limit_next, sim.faults.retry_after_s = 1, 2
    limited = api.get("/schools")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2" and limited.json()["Message"]
    assert sim.requests[-1] == ("GET", "/aeries/api/v5/schools", 429)


def test_fault_plan_is_a_plain_dataclass():
    plan = FaultPlan(unavailable_next=2, paths_matching="students")
    assert plan.take("/aeries/api/v5/schools") == (None, 0.0)
    assert plan.take("/aeries/api/v5/schools/1/STUDENTS")[0] == "unavailable"
    assert plan.unavailable_next == 1
