"""The Aeries simulator's API agrees with the reference (aeries-api.md §10) and the recorded demo
responses: routing and envelopes, the certificate, paging, and the shapes of the records it serves.

Requests go over real HTTP to the loopback server; nothing is mocked.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import httpx
import pytest

from aptool_assets_tests.aeries_sim_helpers import (  # noqa: F401 - the fixtures, used as parameters
    YEAR,
    api,
    district,
    sim,
)
from aptool_demo.district import SCHOOLS
from aptool_demo.simulator import DEMO_CERT

FIXTURES = Path("/work/shared/fixtures/aeries-demo")
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
