"""Run-status sensors that alert: every failed run, and a processing report after each successful one.

They watch every job of this code location (runs from schedules, sensors and the UI alike); the
daemon evaluates them, so they work however the runs were launched. A run retried by the daemon
posts one failure per attempt, which is what an operator wants to see.
"""

from __future__ import annotations

import dagster as dg

from aptool_assets.alerts.reports import failure_alert, processing_report
from aptool_assets.alerts.slack import AlertResource


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts each failed run (job, partition, failed steps and error classes; no student data) to "
    "APTOOL_ALERT_WEBHOOK_URL, or logs it when unset.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alerts: AlertResource) -> None:
    run = context.dagster_run
    alert = failure_alert(context.instance, run, alerts.run_link(run.run_id))
    alerts.send(alert)


@dg.run_status_sensor(
    name="processing_report_on_success",
    run_status=dg.DagsterRunStatus.SUCCESS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a successful run that materialized assets, posts a processing report: files processed, "
    "rows loaded and rejected, failed checks, dead letters pending.",
)
def processing_report_on_success(context: dg.RunStatusSensorContext, alerts: AlertResource):
    run = context.dagster_run
    report = processing_report(context.instance, run)
    if not report.assets:
        return dg.SkipReason(f"run {run.run_id[:8]} materialized nothing")
    if alerts.reports == "issues_only" and not report.has_issues:
        return dg.SkipReason(f"run {run.run_id[:8]}: no rejected rows, failed checks or dead letters")
    alerts.send(report.alert(alerts.run_link(run.run_id)))
    return None


ALERT_SENSORS = [alert_on_run_failure, processing_report_on_success]
