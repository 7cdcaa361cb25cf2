"""The Aeries simulator's program records and demographic codes (what the Dashboard's student groups are
built from): the programs routes (whole school, one student, ``?code=``, case-insensitive paths, the
switch that makes a district refuse the whole-school call), a realistic and deterministic mix on the demo
district that leaves its attendance untouched, and program changes in the ``program`` change feed.

Requests go over real HTTP to the loopback server; nothing is mocked.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime

import httpx
import pytest

from aptool_assets.vocabulary import school_year_bounds
from aptool_assets_tests.aeries_sim_helpers import (  # noqa: F401 - the fixtures; _clean_simulator is autouse
    THROUGH,
    YEAR,
    _clean_simulator,
    api,
    district,
    fresh_district,
    sim,
)
from aptool_demo import build as build_module
from aptool_demo.district import SCHOOLS, build_district
from aptool_demo.records import PROGRAM_DESCRIPTIONS
from aptool_demo.simulator import build_sim_district, start_simulator

PROGRAM_KEYS = [
    "StudentID",
    "ProgramCode",
    "ProgramDescription",
    "EligibilityStartDate",
    "EligibilityEndDate",
    "ParticipationStartDate",
    "ParticipationEndDate",
]
FIRST, LAST = school_year_bounds(YEAR)


def _students_at(district, school: int) -> set[int]:
    return {r["StudentID"] for r in district.students if r["SchoolCode"] == school}


def _in_year(row: dict) -> bool:
    start = row["ParticipationStartDate"] or row["EligibilityStartDate"] or FIRST
    end = row["ParticipationEndDate"] or row["EligibilityEndDate"]
    return start <= LAST and (end is None or end >= FIRST)


def _students_in(district, *codes: str) -> set[int]:
    return {p["StudentID"] for p in district.programs if p["ProgramCode"] in codes and _in_year(p)}


# -- routes ----------------------------------------------------------------------------------------


def test_the_whole_school_call_serves_every_students_programs_at_that_school(api, district):
    for code, *_ in SCHOOLS:
        body = api.get(f"/schools/{code}/students/programs").json()
        expected = [p for p in district.programs if p["StudentID"] in _students_at(district, code)]
        assert len(body) == len(expected) > 0
        assert {r["StudentID"] for r in body} <= _students_at(district, code)
        assert all(list(r) == PROGRAM_KEYS for r in body)
        assert all(isinstance(r["StudentID"], int) and isinstance(r["ProgramCode"], str) for r in body)
        dates = [r[k] for r in body for k in PROGRAM_KEYS[3:] if r[k] is not None]
        assert dates and all(len(d) == 19 and d.endswith("T00:00:00") for d in dates)
        assert [(r["StudentID"], r["ProgramCode"]) for r in body] == sorted(
            (r["StudentID"], r["ProgramCode"]) for r in body
        )
    assert api.get("/schools/999/students/programs").json() == []  # no student records there: 200 []


def test_one_students_programs_are_scoped_by_school_and_filtered_by_code(api, district):
    several = Counter(p["StudentID"] for p in district.programs)
    sid = next(s for s, n in sorted(several.items()) if n >= 2)
    school = next(r["SchoolCode"] for r in district.students if r["StudentID"] == sid)
    body = api.get(f"/schools/{school}/students/{sid}/programs").json()
    assert sorted(r["ProgramCode"] for r in body) == sorted(
        p["ProgramCode"] for p in district.programs if p["StudentID"] == sid
    )
    assert {r["StudentID"] for r in body} == {sid}
    other = next(code for code, *_ in SCHOOLS if sid not in _students_at(district, code))
    assert api.get(f"/schools/{other}/students/{sid}/programs").json() == []  # no record there: empty, not 404

    wanted = body[0]["ProgramCode"]
    one = api.get(f"/schools/{school}/students/{sid}/programs", params={"code": wanted}).json()
    assert one and {r["ProgramCode"] for r in one} == {wanted}
    free = api.get(f"/schools/{school}/students/programs", params={"code": "181"}).json()
    assert free and {r["ProgramCode"] for r in free} == {"181"}
    assert api.get(f"/schools/{school}/students/programs", params={"code": "999"}).json() == []


def test_program_paths_are_case_insensitive_and_need_the_certificate(sim, api):
    canonical = api.get("/schools/101/students/programs").json()
    for variant in ("/SCHOOLS/101/STUDENTS/PROGRAMS", "/schools/101/Students/Programs/"):
        response = api.get(variant)
        assert response.status_code == 200 and response.json() == canonical, variant
    sid = canonical[0]["StudentID"]
    assert (
        api.get(f"/Schools/101/Students/{sid}/PROGRAMS").json()
        == api.get(f"/schools/101/students/{sid}/programs").json()
    )
    assert httpx.get(f"{sim.base_url}/api/v5/schools/101/students/programs").status_code == 401


@pytest.mark.parametrize("status", [400, 404])
def test_the_refusal_switch_refuses_only_the_whole_school_call(sim, api, status):
    served = api.get("/schools/102/students/programs").json()
    sim.faults.school_programs_refusal = status
    refused = api.get("/schools/102/students/programs")
    assert refused.status_code == status
    assert set(refused.json()) == {"Message"} and refused.json()["Message"]
    per_student = [
        r
        for sid in sorted({r["StudentID"] for r in served})
        for r in api.get(f"/schools/102/students/{sid}/programs").json()
    ]
    assert sorted(map(str, per_student)) == sorted(map(str, served))  # the per-student calls still answer, in full
    sim.faults.__init__()
    assert api.get("/schools/102/students/programs").status_code == 200


# -- the mix on the demo district ------------------------------------------------------------------


def test_the_demo_districts_program_mix_is_realistic(district):
    students = {r["StudentID"] for r in district.students}
    n = len(students)
    share = lambda *codes: len(_students_in(district, *codes)) / n  # noqa: E731 - a one-line view of the mix
    assert 0.09 <= share("144") <= 0.15
    assert 0.54 <= share("181", "182") <= 0.66
    assert 0.35 <= share("181") <= 0.52 and 0.08 <= share("182") <= 0.22
    for code, at_most in (("191", 0.04), ("190", 0.02), ("135", 0.04), ("101", 0.06), ("127", 0.10)):
        assert len(_students_in(district, code)) >= 1 and share(code) <= at_most, code
    # Homeless, foster and migrant students are categorically eligible for free meals.
    assert _students_in(district, "191", "190", "135") <= _students_in(district, "181")
    per_student = Counter(p["StudentID"] for p in district.programs)
    assert sum(n >= 2 for n in per_student.values()) >= 10  # students in several programs
    assert {p["ProgramCode"] for p in district.programs} == set(PROGRAM_DESCRIPTIONS)
    assert all(p["ProgramDescription"] == PROGRAM_DESCRIPTIONS[p["ProgramCode"]] for p in district.programs)


def test_stints_start_and_end_at_realistic_times(district):
    ended = [p for p in district.programs if (p["ParticipationEndDate"] or p["EligibilityEndDate"])]
    mid_year = [p for p in ended if FIRST <= (p["ParticipationEndDate"] or p["EligibilityEndDate"]) <= THROUGH]
    assert len({p["ProgramCode"] for p in mid_year}) >= 3  # special education, homeless, meals, 504 ...
    assert any(not _in_year(p) for p in district.programs)  # a stint that ended last year
    assert any(p["ParticipationStartDate"] is None and p["EligibilityStartDate"] for p in district.programs)
    assert any(all(p[k] is None for k in PROGRAM_KEYS[3:]) for p in district.programs)  # a record without dates
    assert any(p["ParticipationStartDate"] and p["ParticipationStartDate"] < FIRST for p in district.programs)
    for p in district.programs:
        start, end = p["ParticipationStartDate"], p["ParticipationEndDate"]
        assert end is None or start is None or start <= end
        assert max(d for d in (start, end, p["EligibilityStartDate"], date.min) if d) <= THROUGH
    meals = Counter(p["StudentID"] for p in district.programs if p["ProgramCode"] in ("181", "182"))
    assert any(n == 2 for n in meals.values())  # moved from reduced-price to free meals mid-year


def test_student_records_carry_the_demographic_codes_of_a_california_mix(district):
    first: dict[int, dict] = {}
    for record in district.students:
        first.setdefault(record["StudentID"], record)
        assert all(isinstance(record[k], str) for k in ("EthnicityCode", "LanguageFluencyCode", "ParentEdLevelCode"))
        assert all(isinstance(record[f"RaceCode{i}"], str) for i in range(1, 6))
        same = first[record["StudentID"]]  # every record of a student carries the student's codes
        assert all(record[k] == same[k] for k in ("EthnicityCode", "RaceCode1", "RaceCode2", "LanguageFluencyCode"))
    students = list(first.values())
    n = len(students)
    assert {r["EthnicityCode"] for r in students} == {"Y", "N"}
    assert 0.25 <= sum(r["EthnicityCode"] == "Y" for r in students) / n <= 0.6
    races = Counter(r["RaceCode1"] for r in students)
    assert {"700", "600", "100", "400", "303", ""} <= set(races) and any(c.startswith("2") for c in races)
    assert any(r["RaceCode2"] for r in students if r["EthnicityCode"] == "N")  # two races
    assert any(not r["RaceCode1"] for r in students if r["EthnicityCode"] == "N")  # none reported
    fluency = Counter(r["LanguageFluencyCode"] for r in students)
    assert 0.15 <= fluency["L"] / n <= 0.25 and {"E", "I", "R", "T"} <= set(fluency)
    parent_ed = Counter(r["ParentEdLevelCode"] for r in students)
    assert set(parent_ed) <= {"10", "11", "12", "13", "14", "15"} and parent_ed["14"] >= 0.08 * n


# -- determinism and the change feed ---------------------------------------------------------------


def test_programs_and_codes_are_deterministic_and_leave_the_attendance_unchanged(monkeypatch, district):
    again = fresh_district()
    assert again.programs == district.programs and again.students == district.students
    other = build_sim_district(build_district(YEAR), seed=8, through=THROUGH)
    assert other.programs != district.programs
    monkeypatch.setattr(build_module, "add_programs", lambda *args: None)
    monkeypatch.setattr(build_module, "add_demographics", lambda *args: None)
    without = fresh_district()
    assert without.programs == []
    assert without.attendance == district.attendance and without.history == district.history
    assert without.enrollment == district.enrollment and without.corrections == district.corrections


def test_program_changes_are_in_the_program_area_of_the_change_feed():
    district = fresh_district()
    district.set_clock(datetime(2026, 3, 23, 10, 15))
    with start_simulator(district) as running:
        api = httpx.Client(base_url=f"{running.base_url}/api/v5", headers={"AERIES-CERT": running.cert})
        feed = lambda area: api.get(f"/StudentDataChanges/{area}/2026/3/23/10/0").json()  # noqa: E731 - a one-line view of the feed
        taken = {p["StudentID"] for p in district.programs if p["ProgramCode"] == "144"}
        record = next(r for r in district.students if r["SchoolCode"] == 201 and r["StudentID"] not in taken)
        sid = record["StudentID"]
        assert feed("program") == []
        district.add_program(sid, "144", date(2026, 3, 23))
        hit = {"StudentID": sid, "SchoolCode": 201, "StudentNumber": record["StudentNumber"]}
        assert feed("program") == [hit] and hit not in feed("student")
        served = api.get(f"/schools/201/students/{sid}/programs", params={"code": "144"}).json()
        assert (
            served[-1]["ParticipationStartDate"] == "2026-03-23T00:00:00" and served[-1]["ParticipationEndDate"] is None
        )

        district.set_clock(datetime(2026, 3, 24, 9, 0))
        district.end_program(sid, "144", date(2026, 3, 24))
        assert hit in api.get("/StudentDataChanges/program/2026/3/24/0/0").json()
        served = api.get(f"/schools/201/students/{sid}/programs", params={"code": "144"}).json()
        assert served[-1]["ParticipationEndDate"] == "2026-03-24T00:00:00"
        with pytest.raises(KeyError):
            district.end_program(sid, "144", date(2026, 3, 25))  # nothing open any more
        with pytest.raises(KeyError):
            district.add_program(4242, "144", date(2026, 3, 25))  # no such student
        api.close()
