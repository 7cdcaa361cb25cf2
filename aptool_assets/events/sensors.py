"""The sensor that turns stored webhook events into runs of ``apply_webhook_events`` (contract §5)."""

import hashlib

import dagster as dg

from aptool_assets.events.jobs import BATCH_SIZE, SOURCE_TAG
from aptool_assets.events.resources import WebhookInboxResource

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def build_webhook_inbox_sensor(apply_job: dg.JobDefinition) -> dg.SensorDefinition:
    """The sensor that starts ``apply_job`` (see :func:`aptool_assets.events.jobs.build_apply_job`)."""

    @dg.sensor(
        job=apply_job,
        minimum_interval_seconds=10,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Every 10 s: when the webhook inbox holds due events and no apply run is in flight, "
        "request one run that applies them (one at a time, so events apply in order).",
    )
    def webhook_inbox_sensor(context: dg.SensorEvaluationContext, inbox: WebhookInboxResource):
        busy = context.instance.get_run_records(
            filters=dg.RunsFilter(job_name=apply_job.name, statuses=IN_FLIGHT), limit=1
        )
        if busy:
            return dg.SkipReason(f"run {busy[0].dagster_run.run_id} is still applying events")
        with inbox.session() as box:
            due = box.pending(limit=BATCH_SIZE)
        if not due:
            return dg.SkipReason("no webhook events due")
        # The same due events (and attempt counts) give the same run_key: one run per state of the inbox.
        fingerprint = hashlib.sha256("\n".join(f"{e.event_id}:{e.attempts}" for e in due).encode()).hexdigest()[:20]
        context.log.info(f"{len(due)} webhook events due (seq {due[0].seq}..{due[-1].seq})")
        return dg.RunRequest(run_key=f"webhooks-{fingerprint}", tags={**SOURCE_TAG, "aptool/events": str(len(due))})

    return webhook_inbox_sensor
