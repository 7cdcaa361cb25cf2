"""The simulator holds several school years, one Aeries database each (reference §1, DatabaseYear): a request
with ``DatabaseYear=Y`` is answered from year Y's district when the server holds it, else silently from the
default year's, and ``systeminfo`` lists every year held. Over real HTTP on loopback, with the platform's own
client; one request log covers every year.
"""

from __future__ import annotations

from datetime import date

import dagster as dg
import httpx
import pytest

from aptool_assets import definitions
from aptool_assets.resilience.policy import AERIES_POLICY
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.aeries.assets import SCHOOLS_KEY, STUDENTS_KEY
from aptool_assets.sources.aeries.client import AeriesResource
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import open_warehouse
from aptool_assets.tables.aeries import PAST_YEAR_STUDENTS, STUDENTS
from aptool_assets_tests.conftest import with_default_resources
from aptool_demo.district import SCHOOLS, build_district, past_year_district
from aptool_demo.simulator import build_past_sim_districts, build_sim_district, start_simulator

YEAR = 2025
PAST = (2023, 2024)
THROUGH = date(2026, 3, 20)
SCHOOL = 101


@pytest.fixture(scope="module")
def district():
    return build_district(YEAR, students_per_school=30)


@pytest.fixture(scope="module")
def current(district):
    return build_sim_district(district, through=THROUGH)


@pytest.fixture(scope="module")
def past(district):
    return build_past_sim_districts(district, PAST)


@pytest.fixture(scope="module")
def sim(current, past):
    with start_simulator(current, past_years=past) as running:
        yield running


@pytest.fixture
def aeries(sim):
    sim.reset_stats()
    return AeriesResource(base_url=sim.base_url, cert=sim.cert, resilience=AERIES_POLICY.but(circuit_breaker=False))


def ids(records: list[dict]) -> set[int]:
    return {r["StudentID"] for r in records}


def grades(district) -> dict[int, int]:
    """StudentID → grade of each enrolled record (not the pre-enrolled ``*`` one for next year)."""
    return {r["StudentID"]: r["Grade"] for r in district.students if r["InactiveStatusCode"] != "*"}


def served_attendance(district, school: int, first: date, last: date) -> dict[tuple[int, date], str]:
    """(StudentID, day) → all-day code of what ``district`` holds at ``school`` in [first, last]."""
    return {
        (sid, day): entry["all_day"]
        for sid, days in district.attendance.get(school, {}).items()
        for day, entry in days.items()
        if first <= day <= last
    }


def pulled_attendance(records: list[dict]) -> dict[tuple[int, date], str]:
    return {
        (r["StudentID"], date.fromisoformat(d["CalendarDate"][:10])): d["AllDayAttendanceCode"]
        for r in records
        for d in r["AttendanceDays"]
    }


def test_past_rosters_differ_from_the_current_one(district, current, past):
    now = ids(current.students)
    for year, held in past.items():
        assert held.school_year == year
        then = ids(held.students)
        assert then - now, f"{year}: nobody has left since"  # aged out of grade 8, moved away
        assert now - then, f"{year}: nobody has arrived since"  # kindergarteners, moved in
        grade_then, grade_now = grades(held), grades(current)
        assert all(grade_then[s] == grade_now[s] - (YEAR - year) for s in then & now)  # the same students, younger
        left = [r for r in held.students if r["SchoolLeaveDate"] is not None]
        assert left and all(r["InactiveStatusCode"] for r in left)  # who left mid-year has a leave date
        assert {r["AcademicYear"] for r in held.enrollment} <= {str(year - 1), str(year)}
    # Deterministic: the same district and year give the same roster.
    assert past_year_district(district, 2024).students.equals(past_year_district(district, 2024).students)


@pytest.mark.parametrize("year", PAST)
def test_a_past_year_is_answered_from_its_own_district(sim, aeries, past, year):
    held = past[year]
    with aeries.client(database_year=year) as client:
        students = client.students(SCHOOL)
        calendar = client.calendar(SCHOOL)
        first, last = date(year, 11, 1), date(year + 1, 2, 28)
        attendance = client.attendance(SCHOOL, first, last)
        enrollment = client.enrollment(SCHOOL, year)
    assert ids(students) == {r["StudentID"] for r in held.students if r["SchoolCode"] == SCHOOL}
    assert {r["CalendarDate"][:4] for r in calendar} == {str(year), str(year + 1)}
    assert pulled_attendance(attendance) == served_attendance(held, SCHOOL, first, last) != {}
    assert ids(enrollment) == {r["StudentID"] for r in held.enrollment if r["SchoolCode"] == SCHOOL}
    assert {m["database_year"] for m in sim.request_meta} == {year}
    assert all(m["query"]["DatabaseYear"] == str(year) for m in sim.request_meta)


@pytest.mark.parametrize("asked", [2019, 2026, None])
def test_an_unknown_or_missing_year_falls_back_to_the_default(sim, aeries, current, asked):
    with aeries.client(database_year=asked) as client:
        students = client.students(SCHOOL)
        calendar = client.calendar(SCHOOL)
        attendance = client.attendance(SCHOOL, date(2025, 11, 1), date(2026, 2, 28))
        info = client.system_info()
    assert ids(students) == {r["StudentID"] for r in current.students if r["SchoolCode"] == SCHOOL}
    assert {r["CalendarDate"][:4] for r in calendar} == {"2025", "2026"}
    assert pulled_attendance(attendance) == served_attendance(current, SCHOOL, date(2025, 11, 1), date(2026, 2, 28))
    assert info["DatabaseYear"] == "2025-2026"
    assert all(s < 400 for _m, _p, s in sim.requests) and {m["database_year"] for m in sim.request_meta} == {YEAR}


def test_the_query_key_and_a_bad_value_never_error(sim, past):
    url = f"{sim.base_url}/api/v5/schools/{SCHOOL}/students"
    headers = {"AERIES-CERT": sim.cert}
    then = {r["StudentID"] for r in past[2023].students if r["SchoolCode"] == SCHOOL}
    for key in ("DatabaseYear", "databaseyear", "DATABASEYEAR"):
        answered = httpx.get(url, params={key: "2023"}, headers=headers)
        assert answered.status_code == 200 and ids(answered.json()) == then
    default = httpx.get(url, headers=headers).json()
    for value in ("abc", "", "2023-2024", "1999"):
        answered = httpx.get(url, params={"DatabaseYear": value}, headers=headers)
        assert answered.status_code == 200 and answered.json() == default


def test_systeminfo_lists_every_year_newest_first(sim, aeries):
    with aeries.client(database_year=2023) as client:
        past_info = client.system_info()
    with aeries.client() as client:
        info = client.system_info()
    expected = ["2025-2026", "2024-2025", "2023-2024"]
    assert info["AvailableDatabaseYears"] == past_info["AvailableDatabaseYears"] == expected
    assert info["DatabaseYear"] == "2025-2026" and past_info["DatabaseYear"] == "2023-2024"
    assert past_info["CurrentDateTime"][:13] == info["CurrentDateTime"][:13]  # one server clock
    assert list(sim.districts) == [2025, 2024, 2023]


def test_requests_of_every_year_are_counted(sim, aeries):
    for year in (2023, 2024, 2025):
        with aeries.client(database_year=year) as client:
            client.schools()
            client.absence_codes(SCHOOL)
    assert len(sim.requests) == 6
    assert sorted(m["database_year"] for m in sim.request_meta) == [2023, 2023, 2024, 2024, 2025, 2025]
    sim.reset_stats()
    assert sim.requests == [] and sim.request_meta == []


def test_one_year_only_still_works(current):
    with start_simulator(current) as running:
        info = httpx.get(f"{running.base_url}/api/v5/systeminfo", params={"DatabaseYear": "2024"}).json()
        assert info["AvailableDatabaseYears"] == ["2025-2026"] and info["DatabaseYear"] == "2025-2026"
        assert running.districts == {YEAR: current}


def test_past_years_must_be_other_years(current, past):
    with pytest.raises(ValueError, match="holds school year"):
        start_simulator(current, past_years={2022: past[2023]})
    with pytest.raises(ValueError, match="default district"):
        start_simulator(current, past_years={YEAR: current})


def test_a_past_year_roster_pull_keeps_that_years_students(sim, past, current, tmp_path):
    """The platform's ``students`` partition of a past year asks for its DatabaseYear and keeps that year's
    roster apart (``aptool.past_year_students``); the current year's partition is ``aptool.students``."""
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    resources = with_default_resources(
        aeries=AeriesResource(base_url=sim.base_url, cert=sim.cert, database_year=YEAR),
        warehouse=WarehouseResource(database_url=url),
        platform=PlatformResource(school_year=YEAR, as_of_date=THROUGH.isoformat()),
    )
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        for keys, partition in (((SCHOOLS_KEY,), None), ((STUDENTS_KEY,), "2024"), ((STUDENTS_KEY,), str(YEAR))):
            result = dg.materialize(
                [*definitions.ASSETS, *definitions.ASSET_CHECKS],
                selection=dg.AssetSelection.assets(*keys),
                partition_key=partition,
                resources=resources,
                instance=instance,
                run_config=quiet,
            )
            assert result.success
    wh = open_warehouse(url)
    real = {code for code, *_ in SCHOOLS}
    pulled_then = wh.read_table(PAST_YEAR_STUDENTS, where={"school_year": 2024})
    assert set(pulled_then.get_column("student_id")) == {r["StudentID"] for r in past[2024].students}
    assert {r["SchoolCode"] for r in past[2024].students} <= real
    assert set(wh.read_table(STUDENTS).get_column("student_id")) == ids(current.students)
