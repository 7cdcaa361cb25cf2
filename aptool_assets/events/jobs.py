"""Jobs of the webhook path: apply the inbox's due events; replay dead letters after a fix.

Applying is an op job, not an asset: it changes a few rows of tables that assets own. It reports
what it changed as materializations of those assets (the attendance days it touched, the roster,
the summary and ranking years it refreshed), so the UI's lineage and history show webhook updates
beside pulls, and the eager metrics do not recompute the whole district after it.

The metrics sit in a layer above the webhook path, so the apply job is built by a factory that is
handed the metrics' incremental refresh (:class:`AfterApply`) by the definitions.
"""

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import polars as pl

from aptool_assets.events.apply import ApplyResult, apply_events
from aptool_assets.events.resources import WebhookInboxResource
from aptool_assets.partitions import known_school_years
from aptool_assets.resources import PlatformResource
from aptool_assets.storage.inbox import Inbox, InboxEvent, utcnow
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import Warehouse
from aptool_assets.tables import asset_key
from aptool_assets.tables.aeries import ATTENDANCE_DAYS, ENROLLMENT, STUDENTS

BATCH_SIZE = 5000
FIRST_RETRY_S = 60.0
MAX_RETRY_S = 3600.0
SOURCE_TAG = {"aptool/source": "webhooks"}


@dataclass(frozen=True)
class AfterApply:
    """What an apply run recomputes once its events have landed.

    ``refresh(warehouse, touched, platform)`` gets the touched (school_year, student_id, school_code)
    rows and returns counts per school year it refreshed; each of ``asset_keys`` is then reported as
    materialized for those years.
    """

    refresh: Callable[[Warehouse, pl.DataFrame, PlatformResource], dict[int, dict[str, int]]]
    asset_keys: tuple[dg.AssetKey, ...] = ()


def retry_delay(attempts: int) -> dt.timedelta:
    """Backoff for an event whose student is unknown: 1, 2, 4 … minutes, at most an hour."""
    return dt.timedelta(seconds=min(FIRST_RETRY_S * 2 ** max(attempts, 0), MAX_RETRY_S))


def settle_inbox(
    inbox: Inbox,
    events: list[InboxEvent],
    result: ApplyResult,
    run_id: str | None,
    retry_for: dt.timedelta,
    now: dt.datetime,
) -> dict[str, int]:
    """Record each event's fate; an unknown student's event waits with backoff until ``retry_for``
    after its first failed attempt (since receipt, or since its last replay)."""
    inbox.mark_applied(result.applied, run_id=run_id)
    inbox.mark_applied(result.superseded, run_id=run_id, outcome="superseded")
    for event_id, reason in result.invalid.items():
        inbox.dead_letter(event_id, reason)
    by_id = {e.event_id: e for e in events}
    retried = dead = 0
    for event_id, reason in result.unknown_student.items():
        ev = by_id[event_id]
        if now - (ev.first_failed_at or now) >= retry_for:
            hours = retry_for.total_seconds() / 3600
            inbox.dead_letter(event_id, f"{reason}; still unknown after {ev.attempts + 1} attempts over {hours:g} h")
            dead += 1
        else:
            inbox.mark_retry(event_id, reason, now + retry_delay(ev.attempts))
            retried += 1
    return {
        "applied": len(result.applied),
        "superseded": len(result.superseded),
        "dead_lettered": len(result.invalid) + dead,
        "retrying": retried,
    }


def _report(
    context: dg.OpExecutionContext,
    result: ApplyResult,
    refreshed: dict[int, dict[str, int]],
    after: AfterApply,
    day_partitions: dg.PartitionsDefinition,
    current_year: int,
) -> None:
    """Materializations of the assets whose rows changed, dependencies first (so the eager
    automation sees the metrics as newer than their inputs and leaves them be)."""
    instance = context.instance
    day_keys = set()
    if result.touched_dates:
        valid = set(day_partitions.get_partition_keys(dynamic_partitions_store=instance))
        day_keys = {d.isoformat() for d in result.touched_dates} & valid
    meta = {"source": "webhook", "run_id": context.run_id}
    for key in sorted(day_keys):
        context.log_event(dg.AssetMaterialization(asset_key(ATTENDANCE_DAYS), partition=key, metadata=meta))
    if result.students_changed:
        # Events change the current roster (aptool.students): the current school year's partition.
        context.log_event(dg.AssetMaterialization(asset_key(STUDENTS), partition=str(current_year), metadata=meta))
        for year in known_school_years(result.touched.get_column("school_year").to_list()):
            context.log_event(dg.AssetMaterialization(asset_key(ENROLLMENT), partition=str(year), metadata=meta))
    for year, counts in sorted(refreshed.items()):
        for key in after.asset_keys:
            context.log_event(dg.AssetMaterialization(key, partition=str(year), metadata={**meta, **counts}))


def build_apply_job(after: AfterApply, day_partitions: dg.PartitionsDefinition) -> dg.JobDefinition:
    """The ``apply_webhook_events`` job: apply the due events, then ``after`` (the metrics' refresh);
    ``day_partitions`` are those of ``aptool/attendance_days`` (touched days are reported on them)."""

    @dg.op(
        name="apply_inbox_events",
        description="Apply the inbox's due webhook events to attendance and the roster, then recompute the "
        "touched students' summaries and re-rank their schools.",
        tags=SOURCE_TAG,
    )
    def apply_inbox_events(
        context: dg.OpExecutionContext,
        inbox: WebhookInboxResource,
        warehouse: WarehouseResource,
        platform: PlatformResource,
    ) -> None:
        with inbox.session() as box:
            now = utcnow()
            events = box.pending(limit=BATCH_SIZE, now=now)
            if not events:
                context.log.info("no webhook events due")
                return
            wh = warehouse.get()
            result = apply_events(wh, events, now)
            retry_for = dt.timedelta(hours=platform.unknown_student_retry_hours)
            # The warehouse first, the inbox after: a run dying in between re-applies idempotently.
            try:
                refreshed = after.refresh(wh, result.touched, platform)
            except Exception as exc:
                if wh.rejects_rows(exc):
                    # The events are in the tables and a retry cannot refresh these students either:
                    # settle them so later events are not held back; the next full summary catches up.
                    settle_inbox(box, events, result, context.run_id, retry_for, now)
                raise
            fates = settle_inbox(box, events, result, context.run_id, retry_for, now)
            _report(context, result, refreshed, after, day_partitions, platform.settings().school_year)
            students = result.touched.select("student_id", "school_code").unique().height
            context.log.info(
                f"{len(events)} events: {fates}; {students} student records touched; "
                f"metrics refreshed for years {sorted(refreshed) or 'none'}"
            )
            if result.invalid:
                reasons = Counter(result.invalid.values()).most_common(10)
                context.log.warning(f"{len(result.invalid)} events dead-lettered as invalid: {reasons}")

    @dg.job(
        name="apply_webhook_events",
        description="Drain the webhook inbox (started by webhook_inbox_sensor; safe to run by hand).",
        tags=SOURCE_TAG,
    )
    def apply_webhook_events_job():
        apply_inbox_events()

    return apply_webhook_events_job


class ReplayConfig(dg.Config):
    event_ids: list[str] = []  # empty: every event currently dead-lettered


@dg.op(description="Put dead letters back in the inbox as pending; the inbox sensor applies them.")
def replay_dead_letter_events(
    context: dg.OpExecutionContext, config: ReplayConfig, inbox: WebhookInboxResource
) -> None:
    with inbox.session() as box:
        requeued = box.replay(config.event_ids or None)
    context.log.info(f"requeued {len(requeued)} dead letters: {requeued[:20]}")


@dg.job(
    name="replay_dead_letters",
    description="Replay dead letters after a fix (all, or the event IDs in the run config); idempotent.",
    tags=SOURCE_TAG,
)
def replay_dead_letters_job():
    replay_dead_letter_events()
