"""The Aeries simulator agrees with the reference (aeries-api.md §10) and the recorded demo responses.

Requests go over real HTTP to the loopback server; nothing is mocked.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from aptool_demo.district import SCHOOLS, build_district
from aptool_demo.simulator import (
    DEMO_CERT,
    FaultPlan,
    SimDistrict,
    build_sim_district,
    instructional_days,
    letters_for,
    start_simulator,
)

FIXTURES = Path("/work/shared/fixtures/aeries-demo")
YEAR = 2025
THROUGH = date(2026, 3, 20)
DATA_CHANGE_AREAS = ["student", "contact", "program", "test", "class", "enrollment"]
# The recorded responses' key order (fixtures students.json, schools.json), so the shape test also runs
# where the fixtures are not available; test_recorded_key_sets_match_these checks them against the files.
STUDENT_KEYS = [
    "StudentID",
    "OldStudentID",
    "CorrespondenceLanguageCode",
    "SchoolCode",
    "StudentNumber",
    "StateStudentID",
    "LastName",
    "FirstName",
    "MiddleName",
    "LastNameAlias",
    "FirstNameAlias",
    "MiddleNameAlias",
    "Gender",
    "Grade",
    "GradeLevelShortDescription",
    "GradeLevelLongDescription",
    "Birthdate",
    "ParentGuardianName",
    "HomePhone",
    "StudentMobilePhone",
    "MailingAddress",
    "MailingAddressCity",
    "MailingAddressState",
    "MailingAddressZipCode",
    "MailingAddressZipExt",
    "ResidenceAddress",
    "ResidenceAddressCity",
    "ResidenceAddressState",
    "ResidenceAddressZipCode",
    "ResidenceAddressZipExt",
    "AddressVerified",
    "EthnicityCode",
    "RaceCode1",
    "RaceCode2",
    "RaceCode3",
    "RaceCode4",
    "RaceCode5",
    "UserCode1",
    "UserCode2",
    "UserCode3",
    "UserCode4",
    "UserCode5",
    "UserCode6",
    "UserCode7",
    "UserCode8",
    "UserCode9",
    "UserCode10",
    "UserCode11",
    "UserCode12",
    "UserCode13",
    "SchoolEnterDate",
    "SchoolLeaveDate",
    "DistrictEnterDate",
    "CounselorNumber",
    "Track",
    "AttendanceProgramCodePrimary",
    "AttendanceProgramCodeAdditional1",
    "AttendanceProgramCodeAdditional2",
    "LockerNumber",
    "LowSchedulingPeriod",
    "HighSchedulingPeriod",
    "InactiveStatusCode",
    "FamilyKey",
    "LanguageFluencyCode",
    "HomeLanguageCode",
    "ParentEdLevelCode",
    "ParentEmailAddress",
    "StudentEmailAddress",
    "NetworkLoginID",
    "AtRiskPoints",
    "HomeRoomTeacherNumber",
    "NotificationPreferenceCode",
    "NextSchoolCode",
    "NextGrade",
    "NextGradeLevelShortDescription",
    "NextGradeLevelLongDescription",
    "RecordsReleaseCode",
]
SCHOOL_KEYS = [
    "RegionCode",
    "StateCharterNumber",
    "CharterStatusCode",
    "FederalTaxID",
    "FederalInformationProcessingStandardsCode",
    "QualityRatingAndImprovementSystemParticipationCode",
    "AccreditationStatusCode",
    "SchoolWebsite",
    "OrganizationCategoryCode",
    "SchoolCategoryCode",
    "LocalEducationAgencyTypeCode",
    "TitleIPartACode",
    "NSLPStatusCode",
    "NCESSchoolID",
    "CollegeBoardSchoolCode",
    "CampusEnrollmentTypeCode",
    "PreKSchoolTypeCode",
    "EarlyCollegeHighSchoolIndicator",
    "ScienceTechnologyEngineeringAndMathematicsIndicator",
    "PathwaysInTechnologyIndicator",
    "ShortName",
    "Terms",
    "SchoolCode",
    "Name",
    "InactiveStatusCode",
    "Address",
    "AddressCity",
    "AddressState",
    "AddressZipCode",
    "AddressZipExt",
    "DoNotReport",
    "StateCountyID",
    "StateDistrictID",
    "StateSchoolID",
    "LowGradeLevel",
    "HighGradeLevel",
    "PrincipalName",
    "PrincipalEmailAddress",
    "AttendancePeriod",
    "Tracks",
    "ScheduleType",
    "SessionType",
    "AttendanceType",
    "AttendanceReporting",
    "ScheduleBasis",
    "PhoneNumber",
]


def fresh_district() -> SimDistrict:
    return build_sim_district(build_district(YEAR), through=THROUGH)


@pytest.fixture(scope="module")
def district() -> SimDistrict:
    return fresh_district()


@pytest.fixture(scope="module")
def sim(district):
    with start_simulator(district) as running:
        yield running


@pytest.fixture
def api(sim):
    """A raw HTTP client on the simulator's /api/v5 root, authenticated."""
    sim.faults.__init__()  # each test starts without faults
    with httpx.Client(base_url=f"{sim.base_url}/api/v5", headers={"AERIES-CERT": sim.cert}, timeout=10) as client:
        yield client


def fixture_json(name: str):
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"recorded Aeries demo responses not available at {FIXTURES}")
    return json.loads(path.read_text())


# -- routing and envelopes --------------------------------------------------------------------------


def test_paths_are_case_insensitive_and_accept_a_trailing_slash(api):
    canonical = api.get("/schools/102/AbsenceCodes").json()
    assert canonical
    for variant in ("/schools/102/absencecodes", "/SCHOOLS/102/ABSENCECODES/", "/Schools/102/AbsenceCodes/"):
        response = api.get(variant)
        assert response.status_code == 200, variant
        assert response.json() == canonical
    upper_root = httpx.get(api.base_url.copy_with(path=str(api.base_url.path).upper() + "SYSTEMINFO"))
    assert upper_root.status_code == 200


def test_a_single_school_is_a_one_element_array_and_an_unknown_one_is_404(api):
    school = api.get("/schools/201").json()
    assert isinstance(school, list) and len(school) == 1 and school[0]["SchoolCode"] == 201
    missing = api.get("/schools/4321")
    assert missing.status_code == 404
    assert set(missing.json()) == {"Message"} and missing.json()["Message"]


def test_a_single_student_is_an_array(api, district):
    record = next(r for r in district.students if r["SchoolCode"] == 101)
    body = api.get(f"/schools/101/students/{record['StudentID']}").json()
    assert isinstance(body, list) and [r["StudentID"] for r in body] == [record["StudentID"]]
    # No record at that school: an empty array, not 404 (KB 14000166308's behaviour).
    assert api.get(f"/schools/201/students/{record['StudentID']}").json() == []


def test_list_calls_with_no_match_are_200_empty(api):
    saturday = date(2025, 10, 4)
    for path, params in [
        ("/schools/999/students", {}),
        ("/schools/101/students/grade/12", {}),
        ("/schools/101/attendance", {"StartDate": f"{saturday:%Y%m%d}", "EndDate": f"{saturday:%Y%m%d}"}),
        ("/schools/101/enrollment/0/year/2001", {}),
        ("/schools/103/calendar", {}),
    ]:
        response = api.get(path, params=params)
        assert (response.status_code, response.json()) == (200, []), path


def test_missing_single_objects_and_unknown_routes_are_404_with_a_message(api):
    for path in ("/staff/424242", "/schools/101/AbsenceCodes/Z", "/no/such/resource"):
        response = api.get(path)
        assert response.status_code == 404, path
        assert isinstance(response.json()["Message"], str)
    staff = api.get("/staff/101001").json()
    assert isinstance(staff, dict) and staff["ID"] == 101001  # a bare object, as recorded


def test_the_certificate_is_required_and_compared_case_sensitively(sim, api):
    url = f"{sim.base_url}/api/v5/schools"
    for headers in ({}, {"AERIES-CERT": sim.cert.upper()}, {"AERIES-CERT": sim.cert[:-1]}):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401
        assert set(response.json()) == {"Message"}
    assert httpx.get(url, headers={"aeries-cert": sim.cert}).status_code == 200  # header names are not
    info = httpx.get(f"{sim.base_url}/api/v5/systeminfo")  # needs no cert
    assert info.status_code == 200 and info.json()["AeriesVersion"]
    assert DEMO_CERT.isalnum() and len(DEMO_CERT) == 32


def test_database_year_never_errors(api):
    default = api.get("/schools/101/calendar").json()
    for value in ("2025", "1999", "abc", ""):
        response = api.get("/schools/101/calendar", params={"DatabaseYear": value})
        assert response.status_code == 200 and response.json() == default


def test_systeminfo_reports_the_year_and_local_time_with_offset(api, district):
    info = api.get("/systeminfo").json()
    assert info["DatabaseYear"] == f"{YEAR}-{YEAR + 1}"
    assert f"{YEAR}-{YEAR + 1}" in info["AvailableDatabaseYears"]
    assert "Pacific" in info["LocalTimeZoneName"]
    text = info["CurrentDateTime"]
    assert len(text.split(".")[1]) == len("9539491-08:00")  # .NET: 7 fraction digits, then the offset
    assert text[-6:] in ("-08:00", "-07:00")


def test_paging_is_one_based_inclusive_in_student_number_order(api):
    everything = api.get("/schools/102/students").json()
    numbers = [r["StudentNumber"] for r in everything]
    assert numbers == sorted(numbers) and len(everything) > 10
    page = api.get("/schools/102/students", params={"StartingRecord": 4, "EndingRecord": 9})
    assert page.json() == everything[3:9]
    assert not {"x-total-count", "link"} & {k.lower() for k in page.headers}
    beyond = api.get("/schools/102/students", params={"StartingRecord": 500, "EndingRecord": 600})
    assert beyond.json() == []
    only_one = api.get("/schools/102/students", params={"StartingRecord": 4})
    assert only_one.json() == everything  # ignored unless both are given


def test_pseudo_schools_and_school_shapes(api):
    schools = api.get("/schools").json()
    codes = [s["SchoolCode"] for s in schools]
    assert {0, 999} <= set(codes)
    assert {code for code, *_ in SCHOOLS} <= set(codes)
    assert len({tuple(s) for s in schools}) == 1  # pseudo-schools have the same keys as real ones


def test_students_and_schools_have_the_recorded_key_sets(api):
    students = [r for code, *_ in SCHOOLS for r in api.get(f"/schools/{code}/students").json()]
    schools = api.get("/schools").json()
    assert all(list(r) == STUDENT_KEYS for r in students)
    assert all(list(s) == SCHOOL_KEYS for s in schools)
    assert all(isinstance(s["Terms"], list) for s in schools)
    dates = [s["SchoolEnterDate"] for s in students] + [s["SchoolLeaveDate"] for s in students if s["SchoolLeaveDate"]]
    assert all(len(d) == 19 and d.endswith("T00:00:00") for d in dates)
    assert all(isinstance(s["HomeRoomTeacherNumber"], str) and isinstance(s["AtRiskPoints"], str) for s in students)


def test_recorded_key_sets_match_these_and_value_types_agree(api):
    recorded_student = fixture_json("students.json")[0]
    recorded_school = fixture_json("schools.json")[0]
    recorded_staff = fixture_json("staff.json")
    assert list(recorded_student) == STUDENT_KEYS and list(recorded_school) == SCHOOL_KEYS
    students = [r for code, *_ in SCHOOLS for r in api.get(f"/schools/{code}/students").json()]
    schools = api.get("/schools").json()
    staff = api.get("/staff").json()
    for served, recorded in ((students, recorded_student), (schools, recorded_school), (staff, recorded_staff)):
        for record in served:
            assert list(record) == list(recorded)
            for key, value in record.items():
                if value is not None and recorded[key] is not None:
                    assert type(value) is type(recorded[key]), key
    term_keys = set(recorded_school["Terms"][0])
    assert all(set(t) == term_keys for s in schools for t in s["Terms"])


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
