"""School years as time windows (issue 16): a day maps to its own school year, so an attendance pull of
this week makes only this year stale, and the automation recomputes only this year, however many past
years the district keeps. Read from the asset graph and Dagster's automation evaluation, not from timing."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from aptool_assets.definitions import build_definitions
from aptool_assets.metrics.assets import STUDENT_ATTENDANCE_SUMMARY_KEY
from aptool_assets.metrics.dashboard import INDICATOR_KEY
from aptool_assets.partitions import FIRST_SCHOOL_YEAR, school_year_partitions
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.aeries.assets import ATTENDANCE_DAYS_KEY, STUDENTS_KEY
from aptool_assets.vocabulary import school_year_of

CURRENT = school_year_of(dt.datetime.now(ZoneInfo("America/Los_Angeles")).date())
YEARS = [str(CURRENT - 2), str(CURRENT - 1), str(CURRENT)]


def graph(timezone: str = "America/Los_Angeles"):
    defs = build_definitions(PlatformResource(school_year=CURRENT, timezone=timezone))
    return defs, defs.resolve_asset_graph()


def test_a_school_year_is_july_through_june_in_the_districts_time_zone():
    years = school_year_partitions("America/Los_Angeles")
    window = years.time_window_for_partition_key("2025")
    assert (window.start.isoformat(), window.end.isoformat()) == (
        "2025-07-01T00:00:00-07:00",
        "2026-07-01T00:00:00-07:00",
    )
    keys = years.get_partition_keys()
    assert keys[0] == str(FIRST_SCHOOL_YEAR)
    assert keys[-2:] == [str(CURRENT), str(CURRENT + 1)]  # the year in progress, and the next one being prepared


@pytest.mark.parametrize("timezone", ["America/Los_Angeles", "America/New_York"])
def test_every_year_partitioned_asset_shares_the_days_time_zone(timezone):
    _, asset_graph = graph(timezone)
    zones = set()
    for node in asset_graph.asset_nodes:
        pd = node.partitions_def
        if isinstance(pd, dg.MultiPartitionsDefinition):
            pd = pd.get_partitions_def_for_dimension("school_year")
        if isinstance(pd, dg.TimeWindowPartitionsDefinition):
            zones.add(pd.timezone)
    assert zones == {timezone}


def test_each_attendance_day_belongs_to_its_own_school_year_only():
    _, asset_graph = graph()
    days = asset_graph.get(ATTENDANCE_DAYS_KEY).partitions_def
    for day, year in ((f"{CURRENT}-06-30", CURRENT - 1), (f"{CURRENT}-07-01", CURRENT), (f"{CURRENT}-10-01", CURRENT)):
        subset = days.empty_subset().with_partition_keys([day])
        mapped = (
            asset_graph.get_partition_mapping(STUDENT_ATTENDANCE_SUMMARY_KEY, ATTENDANCE_DAYS_KEY)
            .get_downstream_partitions_for_partitions(
                subset, days, asset_graph.get(STUDENT_ATTENDANCE_SUMMARY_KEY).partitions_def
            )
            .get_partition_keys()
        )
        assert list(mapped) == [str(year)], day


def _report(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | dg.MultiPartitionKey | None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))


def _three_years_materialized(asset_graph, instance) -> None:
    """Every asset of three school years as if loaded (two school days per year for attendance)."""
    for node in asset_graph.asset_nodes:
        if not node.is_materializable:
            continue
        pd = node.partitions_def
        if pd is None:
            _report(instance, node.key, None)
        elif isinstance(pd, dg.DailyPartitionsDefinition):
            for year in YEARS:
                for day in (dt.date(int(year), 9, 1), dt.date(int(year), 10, 1)):
                    _report(instance, node.key, day.isoformat())
        elif isinstance(pd, dg.MultiPartitionsDefinition):
            for year in YEARS:
                for subject in ("ela", "math"):
                    _report(instance, node.key, dg.MultiPartitionKey({"school_year": year, "subject": subject}))
        else:
            for year in YEARS:
                _report(instance, node.key, year)


def _requested(result) -> dict[str, set[str]]:
    return {
        r.key.to_user_string(): set(result.get_requested_partitions(r.key))
        for r in result.results
        if result.get_num_requested(r.key)
    }


@pytest.fixture
def steady_state():
    """Three school years materialized and the automation settled (it launches nothing more)."""
    defs, asset_graph = graph()
    with dg.instance_for_test() as instance:
        _three_years_materialized(asset_graph, instance)
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
        assert settled.total_requested == 0
        yield defs, instance, settled.cursor


def test_a_repull_of_one_day_recomputes_only_its_own_school_year(steady_state):
    defs, instance, cursor = steady_state
    _report(instance, ATTENDANCE_DAYS_KEY, f"{CURRENT}-10-01")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    requested = _requested(result)
    assert requested, "the summary of the year must be recomputed"
    assert requested[STUDENT_ATTENDANCE_SUMMARY_KEY.to_user_string()] == {str(CURRENT)}
    assert set().union(*requested.values()) == {str(CURRENT)}, requested  # nothing of the other two years


def test_a_backfilled_past_day_recomputes_that_past_year_only(steady_state):
    """The years are not eager for the latest window only: a corrected past day recomputes its own year (and
    the next year's Dashboard change, which compares with it)."""
    defs, instance, cursor = steady_state
    _report(instance, ATTENDANCE_DAYS_KEY, f"{CURRENT - 2}-09-01")
    requested = _requested(dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor))
    assert requested[STUDENT_ATTENDANCE_SUMMARY_KEY.to_user_string()] == {str(CURRENT - 2)}
    assert requested[INDICATOR_KEY.to_user_string()] == {str(CURRENT - 2), str(CURRENT - 1)}
    assert str(CURRENT) not in set().union(*requested.values())


def test_a_roster_change_recomputes_only_the_current_year(steady_state):
    """The change feed refreshes the current roster every 15 minutes: the past years keep their own rosters."""
    defs, instance, cursor = steady_state
    _report(instance, STUDENTS_KEY, str(CURRENT))
    requested = _requested(dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor))
    assert requested and set().union(*requested.values()) == {str(CURRENT)}, requested


def test_the_indicator_reads_its_own_and_the_previous_years_summary():
    _, asset_graph = graph()
    years = asset_graph.get(INDICATOR_KEY).partitions_def
    mapping = asset_graph.get_partition_mapping(INDICATOR_KEY, STUDENT_ATTENDANCE_SUMMARY_KEY)
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        years.empty_subset().with_partition_keys(["2024"]), years, years
    )
    assert sorted(upstream.partitions_subset.get_partition_keys()) == ["2023", "2024"]
    first = mapping.get_upstream_mapped_partitions_result_for_partitions(
        years.empty_subset().with_partition_keys([str(FIRST_SCHOOL_YEAR)]), years, years
    )
    assert list(first.partitions_subset.get_partition_keys()) == [str(FIRST_SCHOOL_YEAR)]
