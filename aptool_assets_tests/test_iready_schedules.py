"""Safety-net schedules: daily unprocessed check, weekly re-sync, assessment-window close."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from aptool_assets import definitions
from aptool_assets.partitions import year_subject_key
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.iready.schedules import window_close_crons
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets_tests.conftest import evaluate_schedule, with_default_resources
from aptool_assets_tests.iready_helpers import write_file

YEAR = 2026
ELA = "i-ready_inform_results_reading_english_CONFIDENTIAL.csv"
MATH = "i-ready_inform_results_math_CONFIDENTIAL.csv"
UTC = dt.UTC
SCHEDULES = {s.name: s for s in definitions.defs.schedules}
iready_assessment_window_close = SCHEDULES["iready_assessment_window_close"]
iready_daily_unprocessed_check = SCHEDULES["iready_daily_unprocessed_check"]
iready_weekly_full_resync = SCHEDULES["iready_weekly_full_resync"]


def test_window_close_crons_follow_the_contract_defaults():
    assert window_close_crons() == ["0 3 16 11 *", "0 3 2 3 *", "0 3 1 7 *"]


@pytest.fixture
def env(sftp_server, sftp_test_dir, tmp_path):
    with dg.instance_for_test() as instance:
        resources = with_default_resources(
            iready_sftp=sftp_server.resource(remote_dir=sftp_server.remote_path(sftp_test_dir)),
            warehouse=WarehouseResource(database_url=f"duckdb:///{tmp_path / 'wh.duckdb'}"),
            platform=PlatformResource(school_year=YEAR, landing_dir=str(tmp_path / "landing")),
        )
        yield instance, resources, sftp_test_dir


def evaluate(schedule, instance, resources, when: dt.datetime):
    return evaluate_schedule(schedule, instance=instance, resources=resources, scheduled_execution_time=when)


def partition_keys(result) -> list[str]:
    return sorted(str(r.partition_key) for r in result) if isinstance(result, list) else []


def test_daily_check_requests_only_unprocessed_files(env):
    instance, resources, root = env
    write_file(root, "Current_Year", ELA, YEAR, "ela", layout="2026-27")
    write_file(root, "2025", "diagnostic_results_math_CONFIDENTIAL.csv", YEAR - 1, "math")
    when = dt.datetime(2026, 12, 1, 10, tzinfo=UTC)
    first = evaluate(iready_daily_unprocessed_check, instance, resources, when)
    assert partition_keys(first) == ["2025|math", "2026|ela"]

    result = dg.materialize(
        assets=[*definitions.ASSETS, *definitions.ASSET_CHECKS],
        selection=dg.AssetSelection.groups("iready"),
        partition_key=year_subject_key(YEAR, "ela"),
        resources=resources,
        instance=instance,
    )
    assert result.success
    second = evaluate(iready_daily_unprocessed_check, instance, resources, when + dt.timedelta(days=1))
    assert partition_keys(second) == ["2025|math"]  # the loaded file is no longer pending


def test_weekly_resync_requests_every_subject_of_the_current_year(env):
    instance, resources, root = env
    write_file(root, "Current_Year", ELA, YEAR, "ela", layout="2026-27")
    write_file(root, "Current_Year", MATH, YEAR, "math", layout="2026-27")
    write_file(root, "2025", "diagnostic_results_math_CONFIDENTIAL.csv", YEAR - 1, "math")
    result = evaluate(iready_weekly_full_resync, instance, resources, dt.datetime(2026, 12, 6, 9, tzinfo=UTC))
    assert partition_keys(result) == ["2026|ela", "2026|math"]
    assert all(r.tags["aptool/trigger"] == "weekly_full_resync" for r in result)


def test_window_close_on_july_first_reprocesses_the_year_that_ended(env):
    instance, resources, root = env
    write_file(root, "2025", "diagnostic_results_ela_CONFIDENTIAL.csv", YEAR - 1, "ela")
    write_file(root, "Current_Year", ELA, YEAR, "ela", layout="2026-27")
    july_first = dt.datetime(2026, 7, 1, 10, tzinfo=UTC)
    result = evaluate(iready_assessment_window_close, instance, resources, july_first)
    assert partition_keys(result) == ["2025|ela"]
    mid_year = evaluate(iready_assessment_window_close, instance, resources, dt.datetime(2026, 11, 16, 11, tzinfo=UTC))
    assert partition_keys(mid_year) == ["2026|ela"]


def test_schedules_skip_when_sftp_is_not_configured(tmp_path):
    from aptool_assets.sources.iready.resources import IReadySFTPResource

    with dg.instance_for_test() as instance:
        resources = {
            "iready_sftp": IReadySFTPResource(),
            "warehouse": WarehouseResource(database_url=f"duckdb:///{tmp_path / 'wh.duckdb'}"),
            "platform": PlatformResource(school_year=YEAR),
        }
        for schedule in (iready_daily_unprocessed_check, iready_weekly_full_resync, iready_assessment_window_close):
            result = evaluate(schedule, instance, resources, dt.datetime(2026, 12, 1, tzinfo=UTC))
            assert isinstance(result, dg.SkipReason)
