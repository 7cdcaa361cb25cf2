"""Aeries schedules. Attendance has no change feed and is back-posted and corrected after the fact,
so recent days are re-pulled several times a day, the whole year nightly, and today hourly (the
original design's safety sync)."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl

from aptool_assets.partitions import ATTENDANCE_START
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.aeries.jobs import aeries_attendance_job, aeries_reference_job, aeries_year_job
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.tables.aeries import SCHOOL_CALENDAR
from aptool_assets.vocabulary import school_year_bounds

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def _local_today(context: dg.ScheduleEvaluationContext, timezone: str) -> dt.date:
    """The district's date at the tick (ticks carry an aware time; a manual run uses now)."""
    when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    return when.astimezone(ZoneInfo(timezone)).date()


def range_request(first: dt.date, last: dt.date, reason: str, tick: str) -> dg.RunRequest:
    first = max(first, dt.date.fromisoformat(ATTENDANCE_START))
    return dg.RunRequest(
        run_key=f"aeries-attendance-{first}-{last}-{tick}",
        tags={RANGE_START: first.isoformat(), RANGE_END: last.isoformat(), "aptool/trigger": reason},
    )


def recent_window_start(calendar: pl.DataFrame, today: dt.date, school_days: int) -> dt.date:
    """The earliest of each school's ``school_days``-th most recent instructional day up to today.

    Without a calendar yet, fall back to enough calendar days to cover that many weekdays.
    """
    days = calendar.filter(pl.col("is_instructional") & (pl.col("calendar_date") <= today))
    if days.height:
        per_school = days.group_by("school_code").agg(
            pl.col("calendar_date").sort(descending=True).head(school_days).min().alias("first")
        )
        return per_school.get_column("first").min()
    return today - dt.timedelta(days=school_days * 7 // 5 + 4)


def _aeries_recent_attendance(timezone: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=aeries_attendance_job,
        cron_schedule="0 7,10,13,16 * * 1-5",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="School days at 07:00, 10:00, 13:00, 16:00: re-pull the last 14 school days of attendance.",
    )
    def aeries_recent_attendance(
        context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource, platform: PlatformResource
    ):
        today = _local_today(context, timezone)
        calendar = warehouse.get().read_table(SCHOOL_CALENDAR, where={"school_year": platform.settings().school_year})
        first = recent_window_start(calendar, today, platform.recent_attendance_school_days)
        return range_request(first, today, "recent_attendance", context.scheduled_execution_time.strftime("%Y%m%d%H%M"))

    return aeries_recent_attendance


def _aeries_hourly_safety_sync(timezone: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=aeries_attendance_job,
        cron_schedule="0 * * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly safety sync: re-pull today's attendance in case a window run or a webhook was missed.",
    )
    def aeries_hourly_safety_sync(context: dg.ScheduleEvaluationContext):
        today = _local_today(context, timezone)
        return dg.RunRequest(
            run_key=f"aeries-today-{context.scheduled_execution_time:%Y%m%d%H}",
            partition_key=today.isoformat(),
            tags={"aptool/trigger": "hourly_safety_sync"},
        )

    return aeries_hourly_safety_sync


def _aeries_nightly_reference(timezone: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=aeries_reference_job,
        cron_schedule="0 3 * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Nightly 03:00: schools and the full student roster of the current school year.",
    )
    def aeries_nightly_reference(context: dg.ScheduleEvaluationContext, platform: PlatformResource):
        year = platform.settings().school_year
        return dg.RunRequest(
            run_key=f"aeries-reference-{year}-{context.scheduled_execution_time:%Y%m%d}", partition_key=str(year)
        )

    return aeries_nightly_reference


def _aeries_nightly_full_year(timezone: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=aeries_attendance_job,
        cron_schedule="20 3 * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Nightly 03:20: re-pull the whole school year's attendance to date "
        "(one run, per school and month).",
    )
    def aeries_nightly_full_year(context: dg.ScheduleEvaluationContext, platform: PlatformResource):
        today = _local_today(context, timezone)
        first, last = school_year_bounds(platform.settings().school_year)
        return range_request(
            first, min(today, last), "nightly_full_year", context.scheduled_execution_time.strftime("%Y%m%d")
        )

    return aeries_nightly_full_year


def _aeries_nightly_year_sync(timezone: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=aeries_year_job,
        cron_schedule="50 3 * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Nightly 03:50: absence codes, calendar, enrollment and Aeries' totals for the school year, "
        "then the summary.",
    )
    def aeries_nightly_year_sync(context: dg.ScheduleEvaluationContext, platform: PlatformResource):
        year = platform.settings().school_year
        return dg.RunRequest(
            run_key=f"aeries-year-{year}-{context.scheduled_execution_time:%Y%m%d}", partition_key=str(year)
        )

    return aeries_nightly_year_sync


def build_aeries_schedules(timezone: str) -> list[dg.ScheduleDefinition]:
    """The Aeries schedules, ticking in the district's time zone."""
    return [
        build(timezone)
        for build in (
            _aeries_recent_attendance,
            _aeries_hourly_safety_sync,
            _aeries_nightly_reference,
            _aeries_nightly_full_year,
            _aeries_nightly_year_sync,
        )
    ]
