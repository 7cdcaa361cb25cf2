"""The one entry point: every asset, check, job, sensor, schedule and resource of the platform.

The configuration is read once, here (``PlatformResource.from_env``), and handed to the factories
whose definitions depend on it: the daily attendance and school-year partitions and the schedules tick
in the district's time zone, the assessment-window schedule follows the district's windows. The webhook
path is handed the metrics' incremental refresh, because the metrics sit in a layer above it.
"""

from __future__ import annotations

import os

import dagster as dg

from aptool_assets.alerts.breakers import circuit_breakers, circuit_breakers_sensor
from aptool_assets.alerts.sensors import ALERT_SENSORS
from aptool_assets.alerts.slack import AlertResource
from aptool_assets.events.jobs import AfterApply, build_apply_job, replay_dead_letters_job
from aptool_assets.events.resources import WebhookInboxResource
from aptool_assets.events.sensors import build_webhook_inbox_sensor
from aptool_assets.metrics.assets import (
    INTERVENTION_RANKING_KEY,
    STUDENT_ATTENDANCE_SUMMARY_KEY,
    student_academic_risk,
    student_attendance_summary,
    student_intervention_ranking,
)
from aptool_assets.metrics.checks import METRICS_CHECKS
from aptool_assets.metrics.compute import refresh_after_events
from aptool_assets.metrics.dashboard import DASHBOARD_ASSETS
from aptool_assets.metrics.jobs import academic_risk_job
from aptool_assets.metrics.outlook import OUTLOOK_ASSETS
from aptool_assets.partitions import attendance_day_partitions, in_time_zone
from aptool_assets.resilience.policy import aeries_policy, iready_policy
from aptool_assets.resources import PlatformResource
from aptool_assets.settings import parse_windows, positive_number
from aptool_assets.sources.aeries.assets import build_aeries_assets
from aptool_assets.sources.aeries.checks import AERIES_CHECKS
from aptool_assets.sources.aeries.client import AeriesResource
from aptool_assets.sources.aeries.jobs import AERIES_JOBS
from aptool_assets.sources.aeries.schedules import build_aeries_schedules
from aptool_assets.sources.aeries.sensors import aeries_student_changes_sensor
from aptool_assets.sources.iready.assets import iready_diagnostic_results, raw_diagnostic_files
from aptool_assets.sources.iready.checks import IREADY_CHECKS
from aptool_assets.sources.iready.jobs import iready_landing_retention_job, iready_sync_job
from aptool_assets.sources.iready.resources import DEFAULT_SFTP_MAX_FILE_MB, IReadySFTPResource
from aptool_assets.sources.iready.schedules import build_iready_schedules
from aptool_assets.sources.iready.sensors import iready_sftp_sensor
from aptool_assets.storage.backends import uses_postgres
from aptool_assets.storage.resources import WarehouseResource


def _secret(name: str) -> dg.EnvVar | None:
    """Secrets reach resources only as EnvVar (never read into code); unset → None."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def _sftp_max_file_mb(text: str | None) -> float:
    return positive_number("IREADY_SFTP_MAX_FILE_MB", float)(text) if text else DEFAULT_SFTP_MAX_FILE_MB


def build_resources(platform: PlatformResource | None = None) -> dict[str, dg.ConfigurableResource]:
    env = os.environ
    platform = platform or PlatformResource.from_env()
    return {
        "warehouse": WarehouseResource(database_url=_secret("APTOOL_DATABASE_URL")),
        "iready_sftp": IReadySFTPResource(
            host=env.get("IREADY_SFTP_HOST") or None,
            port=int(env.get("IREADY_SFTP_PORT") or 22),
            username=env.get("IREADY_SFTP_USERNAME") or None,
            password=_secret("IREADY_SFTP_PASSWORD"),
            private_key_path=env.get("IREADY_SFTP_PRIVATE_KEY") or None,
            known_hosts_path=env.get("IREADY_SFTP_KNOWN_HOSTS") or "~/.ssh/known_hosts",
            remote_dir=env.get("IREADY_SFTP_REMOTE_DIR") or "/exports",
            max_file_mb=_sftp_max_file_mb(env.get("IREADY_SFTP_MAX_FILE_MB")),
            resilience=iready_policy(),
        ),
        "aeries": AeriesResource(
            base_url=env.get("AERIES_BASE_URL") or None,
            cert=_secret("AERIES_CERT"),
            database_year=platform.school_year,
            resilience=aeries_policy(),
        ),
        "alerts": AlertResource(
            webhook_url=_secret("APTOOL_ALERT_WEBHOOK_URL"),
            reports=env.get("APTOOL_ALERT_REPORTS") or "every_run",
            ui_url=env.get("APTOOL_DAGSTER_UI_URL") or None,
        ),
        "platform": platform,
        "inbox": WebhookInboxResource(
            database_url=_secret("APTOOL_DATABASE_URL"), inbox_path=env.get("APTOOL_INBOX_PATH") or None
        ),
    }


def _executor() -> dg.ExecutorDefinition:
    # An embedded DuckDB file admits one writer process at a time: run steps in one process there.
    return dg.multiprocess_executor if uses_postgres() else dg.in_process_executor


AFTER_WEBHOOK_EVENTS = AfterApply(
    refresh=refresh_after_events, asset_keys=(STUDENT_ATTENDANCE_SUMMARY_KEY, INTERVENTION_RANKING_KEY)
)
"""After an apply run: the touched students' summaries and their schools' rankings."""


def build_definitions(platform: PlatformResource | None = None) -> dg.Definitions:
    """The code location for ``platform`` (default: the environment's configuration)."""
    platform = platform or PlatformResource.from_env()
    day_partitions = attendance_day_partitions(platform.timezone)
    apply_job = build_apply_job(AFTER_WEBHOOK_EVENTS, day_partitions)
    return dg.Definitions(
        assets=in_time_zone(
            [
                raw_diagnostic_files,
                iready_diagnostic_results,
                *build_aeries_assets(day_partitions),
                student_attendance_summary,
                student_academic_risk,
                student_intervention_ranking,
                *DASHBOARD_ASSETS,
                *OUTLOOK_ASSETS,
                circuit_breakers,
            ],
            platform.timezone,
        ),
        asset_checks=[*IREADY_CHECKS, *AERIES_CHECKS, *METRICS_CHECKS],
        jobs=[
            iready_sync_job,
            iready_landing_retention_job,
            *AERIES_JOBS,
            academic_risk_job,
            apply_job,
            replay_dead_letters_job,
        ],
        sensors=[
            iready_sftp_sensor,
            aeries_student_changes_sensor,
            build_webhook_inbox_sensor(apply_job),
            circuit_breakers_sensor,
            *ALERT_SENSORS,
            dg.AutomationConditionSensorDefinition(
                "aptool_automation",
                target=dg.AssetSelection.all(),
                default_status=dg.DefaultSensorStatus.RUNNING,
                description="Keeps derived metrics (academic risk, …) up to date when their inputs change.",
            ),
        ],
        schedules=[
            *build_iready_schedules(platform.timezone, parse_windows(platform.assessment_windows)),
            *build_aeries_schedules(platform.timezone),
        ],
        resources=build_resources(platform),
        executor=_executor(),
    )


defs = build_definitions()

# What tests and the runner materialize directly.
ASSETS = list(defs.assets or [])
ASSET_CHECKS = list(defs.asset_checks or [])
