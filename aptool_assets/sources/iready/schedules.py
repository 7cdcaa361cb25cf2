"""Safety-net schedules from the original design (the sensor does the day-to-day work).

- every day at 02:00: load any diagnostic file whose current version was never processed;
- every Sunday at 01:00: re-sync the current school year in full;
- the day after each assessment window closes: re-process the window's school year, so the
  window's final results are in before reports are pulled;
- every night at 04:30: prune the landing area (``iready_landing_retention``).
"""

import datetime as dt
from collections import defaultdict

import dagster as dg
import polars as pl

from aptool_assets.resources import PlatformResource
from aptool_assets.rules.academic import DEFAULT_WINDOWS, AssessmentWindows
from aptool_assets.sources.iready.files import DiagnosticFile, diagnostic_files
from aptool_assets.sources.iready.jobs import iready_landing_retention_job, iready_sync_job
from aptool_assets.sources.iready.resources import IReadySFTPResource
from aptool_assets.sources.iready.sensors import partition_run_requests
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.tables.iready import DIAGNOSTIC_RESULTS, LANDED_FILES
from aptool_assets.vocabulary import school_year_of

NOT_CONFIGURED = "i-Ready SFTP is not configured"


def _group(files: list[DiagnosticFile]) -> dict[tuple[int, str], list[DiagnosticFile]]:
    out: dict[tuple[int, str], list[DiagnosticFile]] = defaultdict(list)
    for f in files:
        if f.remote.size > 0:
            out[(f.school_year, f.subject)].append(f)
    return out


def unprocessed_files(files: list[DiagnosticFile], landed: pl.DataFrame, loaded: pl.DataFrame) -> list[DiagnosticFile]:
    """Files whose current (size, mtime) was never landed, or was selected but never loaded since."""
    landed_fp = {
        (r["remote_path"], r["size_bytes"], int(r["remote_mtime"].timestamp())): r for r in landed.iter_rows(named=True)
    }
    last_load = dict(loaded.group_by("source_file").agg(pl.col("loaded_at").max()).iter_rows())
    out = []
    for f in files:
        if f.remote.size == 0:
            continue
        row = landed_fp.get(f.fingerprint)
        if row is None:
            out.append(f)
        elif row["status"] == "selected":
            loaded_at = last_load.get(f.remote.path)
            if loaded_at is None or loaded_at < row["landed_at"]:
                out.append(f)
    return out


def _start_runs(context: dg.ScheduleEvaluationContext, by_partition, reason: str):
    if not by_partition:
        return dg.SkipReason(f"{reason}: nothing to load")
    requests = partition_run_requests(by_partition, reason, context.log)
    tick = context.scheduled_execution_time.strftime("%Y%m%d%H%M") if context.scheduled_execution_time else "manual"
    return [dg.RunRequest(run_key=f"{r.run_key}-{tick}", partition_key=r.partition_key, tags=r.tags) for r in requests]


def window_close_crons(windows=DEFAULT_WINDOWS) -> list[str]:
    """03:00 on the day after BOY and MOY close, and on July 1 (EOY closes with the year)."""
    days = []
    for month, day in (windows.boy_last_day, windows.moy_last_day):
        nxt = dt.date(2001, month, day) + dt.timedelta(days=1)  # a non-leap year: Feb 28 → Mar 1
        days.append((nxt.month, nxt.day))
    days.append((7, 1))
    return [f"0 3 {d} {m} *" for m, d in days]


def _iready_daily_unprocessed_check(timezone: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=iready_sync_job,
        cron_schedule="0 2 * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily 02:00: load any diagnostic file on the server whose current version was not processed.",
    )
    def iready_daily_unprocessed_check(
        context: dg.ScheduleEvaluationContext,
        iready_sftp: IReadySFTPResource,
        warehouse: WarehouseResource,
        platform: PlatformResource,
    ):
        if not iready_sftp.is_configured():
            return dg.SkipReason(NOT_CONFIGURED)
        files = diagnostic_files(iready_sftp.list_files(), platform.settings().school_year)
        wh = warehouse.get()
        landed = wh.read_table(LANDED_FILES)
        loaded = wh.read_table(DIAGNOSTIC_RESULTS, columns=["source_file", "loaded_at"])
        pending = unprocessed_files(files, landed, loaded)
        context.log.info(f"{len(files)} diagnostic files on the server, {len(pending)} unprocessed")
        return _start_runs(context, _group(pending), "daily_unprocessed_check")

    return iready_daily_unprocessed_check


def _iready_weekly_full_resync(timezone: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=iready_sync_job,
        cron_schedule="0 1 * * 0",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Sunday 01:00: re-sync every i-Ready partition of the current school year from the server.",
    )
    def iready_weekly_full_resync(
        context: dg.ScheduleEvaluationContext, iready_sftp: IReadySFTPResource, platform: PlatformResource
    ):
        if not iready_sftp.is_configured():
            return dg.SkipReason(NOT_CONFIGURED)
        year = platform.settings().school_year
        files = [f for f in diagnostic_files(iready_sftp.list_files(), year) if f.school_year == year]
        return _start_runs(context, _group(files), "weekly_full_resync")

    return iready_weekly_full_resync


def _iready_assessment_window_close(timezone: str, windows: AssessmentWindows) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=iready_sync_job,
        cron_schedule=window_close_crons(windows),
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="The day after each assessment window (BOY, MOY, EOY) closes: "
        "re-process that window's school year.",
    )
    def iready_assessment_window_close(
        context: dg.ScheduleEvaluationContext, iready_sftp: IReadySFTPResource, platform: PlatformResource
    ):
        if not iready_sftp.is_configured():
            return dg.SkipReason(NOT_CONFIGURED)
        when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        year = school_year_of((when - dt.timedelta(days=1)).date())  # July 1 closes the previous year's EOY
        files = [
            f
            for f in diagnostic_files(iready_sftp.list_files(), platform.settings().school_year)
            if f.school_year == year
        ]
        return _start_runs(context, _group(files), "assessment_window_close")

    return iready_assessment_window_close


def _iready_landing_retention(timezone: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=iready_landing_retention_job,
        cron_schedule="30 4 * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Nightly 04:30: prune landed and quarantined i-Ready files older than "
        "APTOOL_LANDING_RETENTION_DAYS, keeping the files the published results came from.",
    )
    def iready_landing_retention(context: dg.ScheduleEvaluationContext):
        when = context.scheduled_execution_time
        return dg.RunRequest(
            run_key=f"landing-retention-{when:%Y%m%d}" if when else None, tags={"aptool/trigger": "landing_retention"}
        )

    return iready_landing_retention


def build_iready_schedules(timezone: str, windows: AssessmentWindows = DEFAULT_WINDOWS) -> list[dg.ScheduleDefinition]:
    """The i-Ready schedules, ticking in the district's time zone (the window closes after its windows)."""
    return [
        _iready_daily_unprocessed_check(timezone),
        _iready_weekly_full_resync(timezone),
        _iready_assessment_window_close(timezone, windows),
        _iready_landing_retention(timezone),
    ]
