"""The Aeries client's program calls against the loopback simulator (one request per school, one per student,
a district that refuses the whole-school call), and the tolerant frames of program records and of the
demographic codes of student records: inferred field names, missing optional fields, blanks.
"""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from aptool_assets.resilience.policy import AERIES_POLICY
from aptool_assets.sources.aeries.client import (
    AeriesNotFoundError,
    AeriesRequestRefusedError,
    AeriesResource,
    AeriesResponseError,
)
from aptool_assets.sources.aeries.frames import (
    DEMOGRAPHICS_SCHEMA,
    PROGRAMS_SCHEMA,
    demographics_frame,
    programs_frame,
    roster_frame,
    students_frame,
)
from aptool_assets.storage.breakers import open_breaker_store
from aptool_assets.tables.aeries import DEMOGRAPHIC_CODE_COLUMNS, STUDENT_DEMOGRAPHICS
from aptool_assets_tests.aeries_sim_helpers import (  # noqa: F401 - the fixtures; _clean_simulator is autouse
    YEAR,
    _clean_simulator,
    district,
    make_client,
    sim,
)

WHOLE_SCHOOL = "/aeries/api/v5/schools/101/students/programs"


# -- requests ----------------------------------------------------------------------------------------


def test_programs_of_a_school_cost_one_request_with_the_database_year(sim, district, make_client):
    client = make_client()
    records = client.programs(101)
    at_school = {r["StudentID"] for r in district.students if r["SchoolCode"] == 101}
    assert len(records) == len([p for p in district.programs if p["StudentID"] in at_school])
    assert sim.requests == [("GET", WHOLE_SCHOOL, 200)]
    assert sim.request_meta[-1]["query"] == {"DatabaseYear": str(YEAR)}
    frame = programs_frame(records)
    assert frame.schema == pl.Schema(PROGRAMS_SCHEMA) and frame.height == len(records)

    free = client.programs(101, code="181")
    assert free and {r["ProgramCode"] for r in free} == {"181"}
    assert sim.request_meta[-1]["query"] == {"code": "181", "DatabaseYear": str(YEAR)}


def test_one_students_programs_and_an_empty_answer(sim, district, make_client):
    client = make_client()
    sid = district.programs[0]["StudentID"]
    school = next(r["SchoolCode"] for r in district.students if r["StudentID"] == sid)
    records = client.student_programs(school, sid)
    assert records and {r["StudentID"] for r in records} == {sid}
    assert sim.requests[-1] == ("GET", f"/aeries/api/v5/schools/{school}/students/{sid}/programs", 200)
    other = next(code for code in (101, 102, 201) if code != school)
    assert client.student_programs(other, sid) == []


def test_map_students_keeps_the_concurrency_bound(sim, district, make_client):
    client = make_client(max_concurrency=2)
    ids = sorted({r["StudentID"] for r in district.students if r["SchoolCode"] == 102})
    sim.faults.latency_s = 0.02
    answers = client.map_students(lambda sid: client.student_programs(102, sid), ids)
    assert list(answers) == ids and client.request_count == len(ids)
    assert 1 <= sim.max_in_flight <= 2


@pytest.mark.parametrize(("status", "error"), [(400, AeriesRequestRefusedError), (404, AeriesNotFoundError)])
def test_a_refused_whole_school_call_raises_for_the_caller_to_fall_back(sim, status, error):
    resource = AeriesResource(
        base_url=sim.base_url, cert=sim.cert, database_year=YEAR, resilience=AERIES_POLICY.but(retry_base_delay_s=0.001)
    )
    sim.faults.school_programs_refusal = status
    with resource.client() as client:
        with pytest.raises(error) as raised:
            client.programs(101)
        assert f"HTTP {status}" in str(raised.value) and sim.cert not in str(raised.value)
        assert client.request_count == 1  # a refusal is not retried
        sid = next(r["StudentID"] for r in sim.district.students if r["SchoolCode"] == 101)
        client.student_programs(101, sid)  # the per-student form still answers
    guard = resource.guard()
    try:
        # The server answered: no failed operation kept, nothing counted against the breaker.
        assert guard.store.failed_operations() == []
        assert not guard.breaker.state().is_open
    finally:
        guard.store.close()
    if status == 400:
        assert raised.value.status == 400


def test_an_unexpected_400_elsewhere_is_still_kept_as_a_failed_operation(sim):
    resource = AeriesResource(base_url=sim.base_url, cert=sim.cert, database_year=YEAR)
    with resource.client() as client, pytest.raises(AeriesRequestRefusedError):
        client._get_list("/StudentDataChanges/student/2026/13/1/0/0")  # an impossible date: 400
    store = open_breaker_store()
    try:
        (letter,) = store.failed_operations()
    finally:
        store.close()
    assert letter["error_type"] == "AeriesRequestRefusedError"


# -- program frames ------------------------------------------------------------------------------------


def test_programs_frame_maps_the_assumed_fields_and_prefers_participation_dates():
    frame = programs_frame(
        [
            {
                "StudentID": 100001,
                "ProgramCode": "144",
                "ProgramDescription": "Special Education",
                "EligibilityStartDate": "2023-08-01T00:00:00",
                "EligibilityEndDate": None,
                "ParticipationStartDate": "2023-09-05T00:00:00",
                "ParticipationEndDate": "2026-01-16T00:00:00",
                "ExtendedProperties": [],
            },
            {"StudentID": "100002", "ProgramCode": 181, "EligibilityStartDate": "2025-07-01T00:00:00"},
            {"StudentID": 100003, "ProgramCode": "191", "ParticipationStartDate": "", "EligibilityEndDate": ""},
        ]
    )
    assert frame.schema == pl.Schema(PROGRAMS_SCHEMA)
    assert frame.rows() == [
        (100001, "144", "Special Education", date(2023, 9, 5), date(2026, 1, 16)),
        (100002, "181", None, date(2025, 7, 1), None),  # no description, eligibility start as the start
        (100003, "191", None, None, None),  # blank dates are no dates
    ]


def test_programs_frame_reads_alternative_key_names_and_old_null_dates():
    frame = programs_frame(
        [
            {"PermanentID": 7, "Code": "127", "Description": "GATE", "StartDate": "0001-01-01T00:00:00"},
            {"StudentID": 8, "Code": " 135 ", "EndDate": "2026-02-02T00:00:00"},
        ]
    )
    assert frame.rows() == [(7, "127", "GATE", None, None), (8, "135", None, None, date(2026, 2, 2))]


@pytest.mark.parametrize(
    ("records", "names"),
    [
        ([{"ProgramCode": "144"}], "StudentID or PermanentID"),
        ([{"StudentID": 1, "ProgramCode": ""}], "ProgramCode or Code"),
        ([{"StudentID": 1, "ProgramCode": "144", "ParticipationStartDate": "next week"}], "ParticipationStartDate"),
        ([{"StudentID": "x", "ProgramCode": "144"}], "StudentID"),
    ],
)
def test_programs_frame_names_what_is_wrong(records, names):
    with pytest.raises(AeriesResponseError, match=names):
        programs_frame(records, endpoint="/api/v5/schools/101/students/programs")


def test_programs_frame_of_nothing_and_of_the_wrong_shape():
    assert programs_frame([]).schema == pl.Schema(PROGRAMS_SCHEMA)
    assert programs_frame({"StudentID": 1, "ProgramCode": "144"}).height == 1  # a bare object
    with pytest.raises(AeriesResponseError):
        programs_frame("144")


# -- demographic frames --------------------------------------------------------------------------------


def test_demographics_frame_nulls_blank_and_missing_codes():
    frame = demographics_frame(
        [
            {
                "StudentID": 1,
                "SchoolCode": 101,
                "EthnicityCode": "N",
                "RaceCode1": "700",
                "RaceCode2": "600",
                "RaceCode3": "",
                "RaceCode4": "",
                "RaceCode5": "",
                "LanguageFluencyCode": "L",
                "ParentEdLevelCode": "14",
                "SchoolEnterDate": "2025-08-13T00:00:00",
            },
            {"StudentID": 2, "SchoolCode": "102", "EthnicityCode": "Y", "RaceCode1": ""},  # an older server
        ]
    )
    assert frame.schema == pl.Schema(DEMOGRAPHICS_SCHEMA)
    assert list(frame.columns) == [c for c in STUDENT_DEMOGRAPHICS.columns if c != "source_updated_at"]
    first, second = frame.iter_rows(named=True)
    assert (first["race_code_1"], first["race_code_2"], first["race_code_3"]) == ("700", "600", None)
    assert (first["language_fluency_code"], first["parent_ed_level_code"]) == ("L", "14")
    assert first["school_enter_date"] == date(2025, 8, 13)
    assert second["ethnicity_code"] == "Y" and second["school_code"] == 102
    assert all(second[c] is None for c in DEMOGRAPHIC_CODE_COLUMNS if c != "ethnicity_code")
    with pytest.raises(AeriesResponseError, match="SchoolCode"):
        demographics_frame([{"StudentID": 1, "EthnicityCode": "N"}])


def test_roster_frame_puts_the_codes_beside_the_student_columns(make_client):
    records = make_client().students(101)
    roster = roster_frame(records)
    assert roster.select(students_frame(records).columns).equals(students_frame(records))
    codes = demographics_frame(records)
    assert roster.select(codes.columns).equals(codes)
    assert roster.get_column("ethnicity_code").null_count() == 0
    assert roster.get_column("race_code_5").null_count() == roster.height  # unused in the demo
    assert set(roster.get_column("language_fluency_code")) <= {"E", "L", "I", "R", "T"}
    assert roster_frame([]).columns == roster.columns
