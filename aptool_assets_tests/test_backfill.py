"""`aptool backfill` (issue 16): past school years load in order, each pulled with its own DatabaseYear into
its own partitions, and the current year's roster, codes, calendars and metrics stay exactly as they were.

One simulated Aeries holds the district's current year and last year as two databases (``DatabaseYear``):
last year's roster has students who left since and lacks this year's newcomers. DuckDB and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from aptool_assets import definitions
from aptool_assets.cli import school_years_arg
from aptool_assets.resources import PlatformResource
from aptool_assets.runner import PipelineError, backfill, run_pipeline
from aptool_assets.sources.aeries.assets import SCHOOLS_KEY, STUDENTS_KEY
from aptool_assets.sources.aeries.client import AeriesResource
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import open_warehouse
from aptool_assets.tables.aeries import (
    ABSENCE_CODES,
    ENROLLMENT,
    PAST_YEAR_STUDENTS,
    SCHOOL_CALENDAR,
    STUDENT_DEMOGRAPHICS,
    STUDENTS,
)
from aptool_assets.tables.metrics import (
    STUDENT_ACADEMIC_RISK,
    STUDENT_ATTENDANCE_SUMMARY,
    STUDENT_INTERVENTION_RANKING,
)
from aptool_assets_tests.conftest import with_default_resources
from aptool_demo.build import build_past_sim_districts, build_sim_district
from aptool_demo.district import build_district
from aptool_demo.simulator import start_simulator

CURRENT = 2025
PAST = CURRENT - 1
AS_OF = dt.date(2026, 3, 13)


@pytest.fixture(scope="module")
def aeries():
    """The district's Aeries: the current year's database (the default) and last year's."""
    district = build_district(CURRENT)
    current = build_sim_district(district, through=AS_OF)
    with start_simulator(current, past_years=build_past_sim_districts(district, [PAST, PAST - 1])) as running:
        yield running


def roster_of(running, year: int) -> set[int]:
    return {s["StudentID"] for s in running.district_for(year).students}


def resources(simulator, warehouse_url: str) -> dict:
    return with_default_resources(
        aeries=AeriesResource(base_url=simulator.base_url, cert=simulator.cert),
        warehouse=WarehouseResource(database_url=warehouse_url),
        platform=PlatformResource(school_year=CURRENT, as_of_date=AS_OF.isoformat()),
    )


def snapshot(wh) -> dict[str, pl.DataFrame]:
    """The current year's one-version tables and its slices of the per-year ones, in a stable order."""
    current = [
        (STUDENTS, None),
        (STUDENT_DEMOGRAPHICS, None),
        (SCHOOL_CALENDAR, {"school_year": CURRENT}),
        (ABSENCE_CODES, {"school_year": CURRENT}),
        (ENROLLMENT, {"academic_year": CURRENT}),
        (STUDENT_ATTENDANCE_SUMMARY, {"school_year": CURRENT}),
        (STUDENT_ACADEMIC_RISK, {"school_year": CURRENT}),
        (STUDENT_INTERVENTION_RANKING, {"school_year": CURRENT}),
    ]
    return {t.name: wh.read_table(t, where=where).sort(list(t.key)) for t, where in current}


def test_a_past_year_loads_apart_and_leaves_the_current_year_as_it_was(aeries, warehouse_url):
    lines: list[str] = []
    with dg.instance_for_test() as instance:
        now = run_pipeline(only="aeries", instance=instance, resources=resources(aeries, warehouse_url), echo=print)
        assert now.ok, [(s.label, s.detail) for s in now.failures]
        wh = open_warehouse(warehouse_url)
        before = snapshot(wh)
        assert set(before[STUDENTS.name].get_column("student_id")) == roster_of(aeries, CURRENT)
        assert roster_of(aeries, PAST) != roster_of(aeries, CURRENT)  # who left, who came since

        summaries = backfill(
            [PAST, PAST - 1],
            only="aeries",
            instance=instance,
            resources=resources(aeries, warehouse_url),
            echo=lines.append,
        )
        assert [s.school_year for s in summaries] == [PAST - 1, PAST]  # oldest first
        for summary in summaries:
            assert summary.ok, [(s.label, s.detail) for s in summary.failures]

        after = snapshot(wh)
        for name, frame in before.items():
            assert frame.equals(after[name]), f"{name} of {CURRENT} changed by the backfill of {PAST}"

        # Each past year's own roster, from its own database, apart and without names.
        for year in (PAST - 1, PAST):
            held = wh.read_table(PAST_YEAR_STUDENTS, where={"school_year": year})
            assert set(held.get_column("student_id")) == roster_of(aeries, year), year
        past_roster = wh.read_table(PAST_YEAR_STUDENTS, where={"school_year": PAST})
        assert "first_name" not in past_roster.columns and "last_name" not in past_roster.columns
        # Its year's tables and metrics, computed over its own students as of its last day.
        calendar = wh.read_table(SCHOOL_CALENDAR, where={"school_year": PAST})
        assert calendar.get_column("calendar_date").min() >= dt.date(PAST, 7, 1)
        summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY, where={"school_year": PAST})
        assert summary.height and set(summary.get_column("as_of_date")) == {dt.date(PAST + 1, 6, 30)}
        risk = wh.read_table(STUDENT_ACADEMIC_RISK, where={"school_year": PAST})
        assert set(risk.get_column("student_id")) == set(past_roster.get_column("student_id"))
        ranking = wh.read_table(STUDENT_INTERVENTION_RANKING, where={"school_year": PAST})
        assert set(ranking.get_column("student_id")) <= set(past_roster.get_column("student_id"))

        # The Dagster partitions of the past year were materialized, the current year's not again.
        students_key = dg.AssetKey(["aptool", "students"])
        assert {str(PAST), str(CURRENT)} <= instance.get_materialized_partitions(students_key)
    headers = [line.strip() for line in lines if line.strip().startswith("== school year")]
    assert headers == [f"== school year {PAST - 1}-{str(PAST)[-2:]}", f"== school year {PAST}-{str(CURRENT)[-2:]}"]


def test_years_run_oldest_first_and_stop_at_the_first_failure(aeries, warehouse_url):
    """A year that fails stops the backfill: a later year's Dashboard change compares with it."""
    lines: list[str] = []
    broken = resources(aeries, warehouse_url)
    broken["aeries"] = AeriesResource(base_url=aeries.base_url, cert="not-the-certificate")
    with dg.instance_for_test() as instance:
        summaries = backfill([PAST, PAST - 1], only="aeries", instance=instance, resources=broken, echo=lines.append)
    assert [s.school_year for s in summaries] == [PAST - 1]  # the older year first, then stopped
    assert not summaries[0].ok
    assert not any(f"school year {PAST}-" in line for line in lines)


def test_years_without_a_partition_are_refused_before_anything_runs(aeries, warehouse_url):
    with dg.instance_for_test() as instance, pytest.raises(PipelineError, match=r"\[2019\].*from 2020"):
        backfill([2019, 2020], instance=instance, resources=resources(aeries, warehouse_url))


@pytest.mark.parametrize(
    ("text", "years"),
    [("2021-2025", [2021, 2022, 2023, 2024, 2025]), ("2023", [2023]), ("2024,2021-2022", [2021, 2022, 2024])],
)
def test_the_years_argument(text, years):
    assert school_years_arg(text) == years


@pytest.mark.parametrize("text", ["2025-2021", "21-25", "last year", ""])
def test_the_years_argument_refuses_what_is_not_a_range_of_start_years(text):
    with pytest.raises(Exception, match="not a list of school years"):
        school_years_arg(text)


def test_the_roster_of_a_year_that_has_not_begun_is_refused(aeries, warehouse_url):
    """Next school year's partition exists (a district prepares it in June), but its roster is not loaded over
    anything until the district switches APTOOL_SCHOOL_YEAR."""
    res = resources(aeries, warehouse_url)
    all_defs = [*definitions.ASSETS, *definitions.ASSET_CHECKS]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            all_defs,
            selection=[SCHOOLS_KEY, STUDENTS_KEY],
            partition_key=str(CURRENT + 1),
            resources=res,
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "aptool__students")
    assert f"school year {CURRENT + 1} has not begun" in failure.step_failure_data.error.message
    assert open_warehouse(warehouse_url).read_table(STUDENTS).height == 0
