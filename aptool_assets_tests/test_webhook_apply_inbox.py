"""Applying webhook events (contract §5), the inbox side: retry with backoff, dead letters and replay,
the inbox sensor and the replay job."""

from __future__ import annotations

import datetime as dt
import uuid

import dagster as dg
import polars as pl

from aptool_assets.events.apply import apply_events
from aptool_assets.events.jobs import replay_dead_letters_job, retry_delay, settle_inbox
from aptool_assets.events.resources import WebhookInboxResource
from aptool_assets.storage.inbox import open_inbox
from aptool_assets.storage.warehouse import TableWrite
from aptool_assets.tables.aeries import STUDENTS
from aptool_assets_tests.conftest import evaluate_sensor
from aptool_assets_tests.webhook_apply_helpers import (  # noqa: F401 - district is a fixture
    DAY,
    SCHOOL,
    UTC,
    apply_webhook_events_job,
    day_row,
    district,
    webhook_inbox_sensor,
)

# ---------------------------------------------------------------------------------------------
# The inbox side: retry with backoff, dead letters, replay, the sensor and the job


def test_unknown_student_waits_with_backoff_then_is_dead_lettered_and_replay_applies_it(store_url, district):
    # store_url first: on PostgreSQL both share one database, and the store fixture resets the schema.
    box = open_inbox(store_url)
    box.setup()
    received = dt.datetime.now(UTC)
    body = {
        "eventId": "late-1",
        "eventType": "attendance.updated",
        "timestamp": received.isoformat(),
        "data": {"studentId": 5005, "schoolId": SCHOOL, "date": DAY.isoformat(), "period": None, "attendanceCode": "U"},
    }
    box.store("late-1", "attendance.updated", received, body, b"{}")
    window = dt.timedelta(hours=2)
    now = received
    for attempt in range(3):
        due = box.pending(now=now)
        assert [e.event_id for e in due] == ["late-1"] and due[0].attempts == attempt
        result = apply_events(district, due, now)
        settle_inbox(box, due, result, "run-x", window, now)
        assert box.pending(now=now) == []  # waits …
        now += retry_delay(attempt)  # … exactly its backoff: 1, 2, 4 minutes
    assert [retry_delay(a).total_seconds() for a in range(8)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    now = received + window + dt.timedelta(seconds=5)  # the first failure is stamped by the store's clock
    due = box.pending(now=now)
    settle_inbox(box, due, apply_events(district, due, now), "run-x", window, now)
    dead = box.dead_letters()
    assert [d["event_id"] for d in dead] == ["late-1"] and "unknown student 5005" in dead[0]["reason"]
    assert dead[0]["attempts"] == 4

    # Replayed (twice: the second is a no-op), it gets a fresh retry period, not an instant dead letter.
    assert box.replay(["late-1"]) == ["late-1"] and box.replay(["late-1"]) == []
    now = dt.datetime.now(UTC)
    due = box.pending(now=now)
    settle_inbox(box, due, apply_events(district, due, now), "run-y", window, now)
    assert box.event("late-1")["status"] == "pending" and box.event("late-1")["attempts"] == 1
    # The roster catches up: the next attempt applies it.
    extra = (
        district.read_table(STUDENTS)
        .filter(pl.col("student_id") == 1001)
        .with_columns(pl.lit(5005, pl.Int64).alias("student_id"))
    )
    district.write(TableWrite(STUDENTS, extra, replace_where=None))
    now += retry_delay(0)
    due = box.pending(now=now)
    settle_inbox(box, due, apply_events(district, due, now), "run-z", window, now)
    assert box.event("late-1")["status"] == "applied" and box.event("late-1")["run_id"] == "run-z"
    assert day_row(district, student=5005)["all_day_code"] == "U"
    box.close()


def test_sensor_requests_one_run_per_inbox_state_and_waits_for_a_run_in_flight(tmp_path):
    inbox_path = tmp_path / "inbox.sqlite"
    resource = WebhookInboxResource(inbox_path=str(inbox_path))
    with dg.instance_for_test() as instance:

        def tick():
            return evaluate_sensor(webhook_inbox_sensor, instance=instance, resources={"inbox": resource})

        assert "no webhook events due" in tick().skip_message
        box = resource.open()
        now = dt.datetime.now(UTC)
        for i in range(3):
            box.store(f"s-{i}", "attendance.updated", now, {"data": {}}, b"{}")
        first = tick()
        again = tick()
        assert first.run_key == again.run_key  # same state of the inbox, same idempotent key
        assert first.tags["aptool/events"] == "3"
        box.mark_retry("s-0", "unknown student", now - dt.timedelta(seconds=1))
        assert tick().run_key != first.run_key
        instance.create_run_for_job(
            apply_webhook_events_job, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED
        )
        busy = tick()
        assert "still applying" in busy.skip_message
        box.close()


def test_replay_job_requeues_dead_letters(tmp_path):
    resource = WebhookInboxResource(inbox_path=str(tmp_path / "inbox.sqlite"))
    box = resource.open()
    box.setup()
    now = dt.datetime.now(UTC)
    for i in range(2):
        box.store(f"d-{i}", "attendance.updated", now, {"data": {}}, b"{}")
        box.dead_letter(f"d-{i}", "unknown student 1 at that school (school 1)")
    result = replay_dead_letters_job.execute_in_process(
        resources={"inbox": resource},
        run_config={"ops": {"replay_dead_letter_events": {"config": {"event_ids": ["d-1"]}}}},
    )
    assert result.success
    assert [e.event_id for e in box.pending()] == ["d-1"]
    assert replay_dead_letters_job.execute_in_process(resources={"inbox": resource}).success
    assert sorted(e.event_id for e in box.pending()) == ["d-0", "d-1"]
    box.close()
