"""What the student groups need, through Dagster against the loopback simulator, on DuckDB and PostgreSQL:
program records pulled with one request per school (or student by student where a district refuses the
whole-school call: same rows, and the metadata says so), the demographic codes published with the roster
(full pull and change-feed merge), and the change-feed sensor re-pulling one school's programs after a
program change.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from aptool_assets.sources.aeries.assets import SCHOOLS_KEY, STUDENT_PROGRAMS_KEY, STUDENTS_KEY
from aptool_assets.sources.aeries.sensors import aeries_student_changes_sensor
from aptool_assets.storage.sync_state import SYNC_STATE
from aptool_assets.tables.aeries import DEMOGRAPHIC_CODE_COLUMNS, STUDENT_DEMOGRAPHICS, STUDENT_PROGRAMS, STUDENTS
from aptool_assets.vocabulary import school_year_bounds
from aptool_assets_tests.conftest import evaluate_sensor
from aptool_assets_tests.test_aeries_pipeline import YEAR, env, simulator  # noqa: F401 - the fixtures, used as parameters

FIRST, LAST = school_year_bounds(YEAR)
PROGRAM_ROW = ["student_id", "school_code", "program_code", "program_description", "start_date", "end_date"]
SOURCE_CODES = ["EthnicityCode", *(f"RaceCode{i}" for i in range(1, 6)), "LanguageFluencyCode", "ParentEdLevelCode"]


def _real_schools(env) -> list[int]:
    return (
        env.warehouse.query("SELECT school_code FROM aptool.schools WHERE is_real_school ORDER BY 1")
        .to_series()
        .to_list()
    )


def _expected_programs(district, schools: list[int]) -> set[tuple]:
    """The stints that overlap the year, per school the student has a record at (computed from the simulator)."""
    rows = set()
    for school in schools:
        at_school = {r["StudentID"] for r in district.students if r["SchoolCode"] == school}
        for p in district.programs:
            start = p["ParticipationStartDate"] or p["EligibilityStartDate"] or FIRST
            end = p["ParticipationEndDate"] or p["EligibilityEndDate"]
            if p["StudentID"] in at_school and start <= LAST and (end is None or end >= FIRST):
                rows.add((p["StudentID"], school, p["ProgramCode"], p["ProgramDescription"], start, end))
    return rows


def _program_rows(env) -> pl.DataFrame:
    return env.warehouse.read_table(STUDENT_PROGRAMS).sort(STUDENT_PROGRAMS.key)


def _materialization(result, key):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()}


def _program_requests(env) -> list[tuple[str, int]]:
    return [(path, status) for _, path, status in env.sim.requests if path.lower().endswith("/programs")]


def test_programs_are_pulled_with_one_request_per_school(env):
    assert env.run(SCHOOLS_KEY, STUDENTS_KEY, partition_key=str(YEAR)).success
    env.sim.reset_stats()
    result = env.run(STUDENT_PROGRAMS_KEY, partition_key=str(YEAR))
    assert result.success
    schools = _real_schools(env)
    expected = [(f"/aeries/api/v5/schools/{sc}/students/programs", 200) for sc in schools]
    assert sorted(_program_requests(env)) == expected  # concurrent: in any order
    assert all(meta["query"].get("DatabaseYear") == str(YEAR) for meta in env.sim.request_meta)

    rows = _program_rows(env)
    assert set(rows.get_column("school_year")) == {YEAR}
    assert set(rows.select(PROGRAM_ROW).iter_rows()) == _expected_programs(env.sim.district, schools)
    assert rows.height == len(_expected_programs(env.sim.district, schools))
    assert rows.get_column("start_date").null_count() == 0  # a record without dates starts with the year
    assert FIRST in rows.get_column("start_date").to_list()
    meta = _materialization(result, STUDENT_PROGRAMS_KEY)
    assert meta["per_student_fallback_schools"] == [] and meta["per_student_requests"] == 0
    assert meta["aeries_requests"] == len(schools) and meta["dagster/row_count"] == rows.height
    state = env.warehouse.read_table(SYNC_STATE).filter(pl.col("entity") == f"student_programs/{YEAR}")
    assert state.height == 1


@pytest.mark.parametrize("refusal", [400, 404])
def test_a_refused_whole_school_call_falls_back_to_the_rosters_students(env, refusal):
    assert env.run(SCHOOLS_KEY, STUDENTS_KEY, partition_key=str(YEAR)).success
    assert env.run(STUDENT_PROGRAMS_KEY, partition_key=str(YEAR)).success
    whole_school = _program_rows(env).drop("source_updated_at")

    env.sim.faults.school_programs_refusal = refusal
    env.sim.reset_stats()
    result = env.run(STUDENT_PROGRAMS_KEY, partition_key=str(YEAR))
    assert result.success
    schools = _real_schools(env)
    roster = env.warehouse.read_table(STUDENTS)
    per_school = {sc: roster.filter(pl.col("school_code") == sc).get_column("student_id").n_unique() for sc in schools}
    requests = _program_requests(env)
    refused = [p for p, status in requests if status == refusal]
    per_student = [p for p, status in requests if status == 200]
    assert sorted(refused) == [f"/aeries/api/v5/schools/{sc}/students/programs" for sc in sorted(schools)]
    assert len(per_student) == sum(per_school.values())
    assert all("/students/programs" not in p for p in per_student)
    assert env.sim.max_in_flight <= env.resources["aeries"].max_concurrency

    meta = _materialization(result, STUDENT_PROGRAMS_KEY)
    assert meta["per_student_fallback_schools"] == schools
    assert meta["per_student_requests"] == sum(per_school.values())
    assert meta["aeries_requests"] == len(schools) + sum(per_school.values())
    assert _program_rows(env).drop("source_updated_at").equals(whole_school)  # the same rows either way
    logged = [entry.user_message for entry in env.instance.all_logs(result.run_id)]
    assert sum("whole-school programs call was refused" in m for m in logged) == len(schools)


def test_the_roster_pull_publishes_the_demographic_codes_in_the_same_pull(env):
    result = env.run(SCHOOLS_KEY, STUDENTS_KEY, partition_key=str(YEAR))
    assert result.success
    students = env.warehouse.read_table(STUDENTS).sort(STUDENTS.key)
    codes = env.warehouse.read_table(STUDENT_DEMOGRAPHICS).sort(STUDENT_DEMOGRAPHICS.key)
    assert codes.select(STUDENT_DEMOGRAPHICS.key).equals(students.select(STUDENTS.key))
    assert codes.get_column("source_updated_at").equals(students.get_column("source_updated_at"))
    assert codes.get_column("school_enter_date").equals(students.get_column("school_enter_date"))
    by_key = {(r["student_id"], r["school_code"]): r for r in codes.iter_rows(named=True)}
    for record in env.sim.district.students:
        row = by_key[(record["StudentID"], record["SchoolCode"])]
        assert [row[c] for c in DEMOGRAPHIC_CODE_COLUMNS] == [record[k] or None for k in SOURCE_CODES]
    assert _materialization(result, STUDENTS_KEY)["demographics_rows"] == codes.height
    assert "first_name" not in codes.columns and "last_name" not in codes.columns


def test_a_change_feed_merge_updates_only_the_changed_students_codes(env):
    assert env.run(SCHOOLS_KEY, STUDENTS_KEY, partition_key=str(YEAR)).success
    before = env.warehouse.read_table(STUDENT_DEMOGRAPHICS)
    record = next(r for r in env.sim.district.students if r["LanguageFluencyCode"] == "L")
    sid, sc = record["StudentID"], record["SchoolCode"]
    env.sim.district.update_student(sid, sc, LanguageFluencyCode="R")  # reclassified fluent English proficient
    config = {"ops": {"aptool__students": {"config": {"changed": [[sc, sid]]}}}}
    assert env.run(STUDENTS_KEY, partition_key=str(YEAR), run_config=config).success
    after = env.warehouse.read_table(STUDENT_DEMOGRAPHICS)
    changed = (pl.col("student_id") == sid) & (pl.col("school_code") == sc)
    assert after.filter(changed).item(0, "language_fluency_code") == "R"
    assert after.filter(changed).item(0, "source_updated_at") > before.filter(changed).item(0, "source_updated_at")
    assert (
        after.filter(~changed)
        .sort(STUDENT_DEMOGRAPHICS.key)
        .equals(before.filter(~changed).sort(STUDENT_DEMOGRAPHICS.key))
    )


def test_a_program_change_repulls_that_schools_programs_for_the_year(env):
    district = env.sim.district
    district.set_clock(dt.datetime(2026, 3, 16, 10, 0))
    assert env.run(SCHOOLS_KEY, STUDENTS_KEY, partition_key=str(YEAR)).success
    assert env.run(STUDENT_PROGRAMS_KEY, partition_key=str(YEAR)).success
    before = _program_rows(env)
    resources = {"aeries": env.resources["aeries"], "platform": env.resources["platform"]}
    first = evaluate_sensor(aeries_student_changes_sensor, resources=resources, instance=env.instance)
    assert not first.run_requests  # the district's own history is older than the first look-back

    homeless = {p["StudentID"] for p in district.programs if p["ProgramCode"] == "191"}
    record = next(r for r in district.students if r["SchoolCode"] == 102 and r["StudentID"] not in homeless)
    sid = record["StudentID"]
    district.set_clock(dt.datetime(2026, 3, 16, 10, 5))
    district.add_program(sid, "191", dt.date(2026, 3, 16))
    second = evaluate_sensor(
        aeries_student_changes_sensor, cursor=first.cursor, resources=resources, instance=env.instance
    )
    (request,) = second.run_requests  # a program change re-pulls programs, not the student record
    assert request.job_name == "aeries_program_changes" and request.partition_key == str(YEAR)
    assert request.run_config == {"ops": {"aptool__student_programs": {"config": {"schools": [102]}}}}
    assert request.run_key.startswith(f"aeries-programs-{YEAR}-")
    again = evaluate_sensor(
        aeries_student_changes_sensor, cursor=first.cursor, resources=resources, instance=env.instance
    )
    assert [r.run_key for r in again.run_requests] == [request.run_key]  # the overlap gives the same run
    assert second.cursor == again.cursor

    env.sim.reset_stats()
    assert env.run(STUDENT_PROGRAMS_KEY, partition_key=str(YEAR), run_config=request.run_config).success
    assert _program_requests(env) == [("/aeries/api/v5/schools/102/students/programs", 200)]
    after = _program_rows(env)
    new = after.filter((pl.col("student_id") == sid) & (pl.col("program_code") == "191"))
    assert new.select("school_code", "start_date", "end_date").rows() == [(102, dt.date(2026, 3, 16), None)]
    other = pl.col("school_code") != 102
    assert after.filter(other).equals(before.filter(other))  # other schools' rows untouched
    same_school = after.filter(~other & ~((pl.col("student_id") == sid) & (pl.col("program_code") == "191")))
    assert same_school.drop("source_updated_at").equals(before.filter(~other).drop("source_updated_at"))
