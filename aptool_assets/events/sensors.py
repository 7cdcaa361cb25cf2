"""The sensor that turns stored webhook events into runs of ``apply_webhook_events`` (contract §5).

One run at a time, for the events due now. The run key is the state of the inbox (the due events and
their attempt counts), so a tick never launches the same work twice; after a failed run the key also
counts the failed runs of that state, so the same events are tried again instead of being skipped as
"already requested" forever. Failed runs are retried with backoff: the first at the next tick (10 s),
then after 20, 40, 80, 160 s, and every 5 minutes while the failures go on (:func:`run_retry_delay`).
"""

import datetime as dt
import hashlib
import time

import dagster as dg

from aptool_assets.events.jobs import BATCH_SIZE, SOURCE_TAG
from aptool_assets.events.resources import WebhookInboxResource

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
FAILED = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
INBOX_STATE_TAG = "aptool/inbox-state"
FIRST_RUN_RETRY_S = 10.0
MAX_RUN_RETRY_S = 300.0
_STREAK_LIMIT = 50  # failed runs looked back on: enough to reach the longest delay
_clock = time.time  # epoch seconds (tests move it forward past a backoff)


def run_retry_delay(failures: int) -> dt.timedelta:
    """How long after the last of ``failures`` failed runs in a row the next run may start: none after
    one failure (the next tick), then 20, 40, 80, 160 s, at most 5 minutes, never given up."""
    if failures <= 1:
        return dt.timedelta(0)
    return dt.timedelta(seconds=min(FIRST_RUN_RETRY_S * 2 ** (failures - 1), MAX_RUN_RETRY_S))


def failure_streak(instance: dg.DagsterInstance, job_name: str) -> tuple[int, float | None]:
    """How many of the job's latest runs failed (or were canceled) in a row, and when the last one ended
    (epoch seconds; None without failures)."""
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=job_name), limit=_STREAK_LIMIT)
    streak = 0
    for record in records:
        if record.dagster_run.status not in FAILED:
            break
        streak += 1
    if not streak:
        return 0, None
    return streak, records[0].end_time or records[0].update_timestamp.timestamp()


def build_webhook_inbox_sensor(apply_job: dg.JobDefinition) -> dg.SensorDefinition:
    """The sensor that starts ``apply_job`` (see :func:`aptool_assets.events.jobs.build_apply_job`)."""

    @dg.sensor(
        job=apply_job,
        minimum_interval_seconds=10,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Every 10 s: when the webhook inbox holds due events and no apply run is in flight, "
        "request one run that applies them (one at a time, so events apply in order). A failed run is "
        "retried with backoff: at the next tick, then after 20 s doubling to at most 5 minutes.",
    )
    def webhook_inbox_sensor(context: dg.SensorEvaluationContext, inbox: WebhookInboxResource):
        instance = context.instance
        busy = instance.get_run_records(filters=dg.RunsFilter(job_name=apply_job.name, statuses=IN_FLIGHT), limit=1)
        if busy:
            return dg.SkipReason(f"run {busy[0].dagster_run.run_id} is still applying events")
        with inbox.session() as box:
            due = box.pending(limit=BATCH_SIZE)
        if not due:
            return dg.SkipReason("no webhook events due")
        streak, last_end = failure_streak(instance, apply_job.name)
        wait = run_retry_delay(streak).total_seconds() - (_clock() - (last_end or 0.0))
        if streak and wait > 0:
            return dg.SkipReason(f"the last {streak} apply run(s) failed; retrying in {wait:.0f} s")
        # The same due events (and attempt counts) give the same state: one run per state of the inbox,
        # and one more for each failed run of that state.
        state = hashlib.sha256("\n".join(f"{e.event_id}:{e.attempts}" for e in due).encode()).hexdigest()[:20]
        failed = instance.get_runs_count(
            dg.RunsFilter(job_name=apply_job.name, statuses=FAILED, tags={INBOX_STATE_TAG: state})
        )
        run_key = f"webhooks-{state}" + (f"-retry{failed}" if failed else "")
        context.log.info(f"{len(due)} webhook events due (seq {due[0].seq}..{due[-1].seq}); run key {run_key}")
        return dg.RunRequest(
            run_key=run_key, tags={**SOURCE_TAG, "aptool/events": str(len(due)), INBOX_STATE_TAG: state}
        )

    return webhook_inbox_sensor
