"""Aeries schedules: which attendance window or school year each tick asks for."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from aptool_assets.definitions import defs
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.aeries.schedules import RANGE_END, RANGE_START, recent_window_start
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import TableWrite, open_warehouse
from aptool_assets.tables.aeries import SCHOOL_CALENDAR
from aptool_assets_tests.conftest import evaluate_schedule

UTC = dt.UTC
SCHEDULES = {s.name: s for s in defs.schedules}
aeries_hourly_safety_sync = SCHEDULES["aeries_hourly_safety_sync"]
aeries_nightly_full_year = SCHEDULES["aeries_nightly_full_year"]
aeries_nightly_reference = SCHEDULES["aeries_nightly_reference"]
aeries_nightly_year_sync = SCHEDULES["aeries_nightly_year_sync"]
aeries_recent_attendance = SCHEDULES["aeries_recent_attendance"]


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def tick(schedule, instance, when: dt.datetime, **resources):
    return evaluate_schedule(schedule, instance=instance, scheduled_execution_time=when, resources=resources or None)


def calendar(school_code: int, first: dt.date, days: int) -> pl.DataFrame:
    dates = [first + dt.timedelta(days=i) for i in range(days)]
    return pl.DataFrame(
        {
            "school_year": [2026] * days,
            "school_code": [school_code] * days,
            "calendar_date": dates,
            "holiday_code": ["" if d.weekday() < 5 else "@" for d in dates],
            "calendar_day_number": list(range(1, days + 1)),
            "is_instructional": [d.weekday() < 5 for d in dates],
        },
        schema=SCHOOL_CALENDAR.polars_schema,
    )


def test_recent_window_counts_school_days_of_the_slowest_school():
    cal = pl.concat([calendar(101, dt.date(2026, 11, 2), 30), calendar(102, dt.date(2026, 11, 2), 30)])
    # School 102 closed the week of Nov 23: its 5th-last school day lies further back.
    cal = cal.with_columns(
        pl.when(
            (pl.col("school_code") == 102)
            & pl.col("calendar_date").is_between(dt.date(2026, 11, 23), dt.date(2026, 11, 27))
        )
        .then(False)
        .otherwise(pl.col("is_instructional"))
        .alias("is_instructional")
    )
    today = dt.date(2026, 11, 30)
    assert recent_window_start(cal, today, 5) == dt.date(2026, 11, 17)
    assert recent_window_start(cal.head(0), today, 14) == today - dt.timedelta(days=14 * 7 // 5 + 4)


def test_recent_attendance_requests_one_ranged_run(instance, tmp_path):
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    open_warehouse(url).write(TableWrite(SCHOOL_CALENDAR, calendar(101, dt.date(2026, 10, 1), 61)))
    request = tick(
        aeries_recent_attendance,
        instance,
        dt.datetime(2026, 11, 30, 18, tzinfo=UTC),  # 10:00 in Los Angeles
        warehouse=WarehouseResource(database_url=url),
        platform=PlatformResource(school_year=2026),
    )
    assert request.tags[RANGE_END] == "2026-11-30"
    assert request.tags[RANGE_START] == "2026-11-11"  # 14 school days back
    assert request.run_key.endswith("202611301800")


def test_hourly_sync_pulls_the_districts_today(instance):
    late_evening = dt.datetime(2026, 11, 30, 7, 30, tzinfo=UTC)  # still Nov 29 in Los Angeles
    assert tick(aeries_hourly_safety_sync, instance, late_evening).partition_key == "2026-11-29"


def test_nightly_full_year_and_year_sync(instance):
    when = dt.datetime(2026, 11, 30, 11, 20, tzinfo=UTC)
    platform = PlatformResource(school_year=2026)
    full = tick(aeries_nightly_full_year, instance, when, platform=platform)
    assert (full.tags[RANGE_START], full.tags[RANGE_END]) == ("2026-07-01", "2026-11-30")
    year = tick(aeries_nightly_year_sync, instance, when, platform=platform)
    assert year.partition_key == "2026"
    reference = tick(aeries_nightly_reference, instance, when, platform=platform)
    assert reference.partition_key == "2026"  # the roster of the current school year: aptool.students
