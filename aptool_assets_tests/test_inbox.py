"""The durable inbox on both stores (real SQLite file, real PostgreSQL): the API the receiver and
the applying sensor share, and the SQL an operator reads to learn what happened to an event."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from aptool_assets.events.validation import REQUIRED_DATA, SUPPORTED_EVENT_TYPES, data_problem
from aptool_assets.storage.inbox import (
    Inbox,
    PostgresInbox,
    SqliteInbox,
    default_inbox_path,
    open_inbox,
)
from aptool_assets_tests.conftest import drop_database, throwaway_database

REPO = Path(__file__).resolve().parents[1]
UTC = dt.UTC


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def event_body(event_id: str, event_type: str = "attendance.updated", **data) -> dict:
    return {
        "eventId": event_id,
        "eventType": event_type,
        "timestamp": now().isoformat(),
        "data": {
            "studentId": 1001,
            "schoolId": 994,
            "date": "2025-10-01",
            "period": None,
            "attendanceCode": "A",
            **data,
        },
    }


def put(
    box: Inbox, event_id: str, event_type: str = "attendance.updated", ts: dt.datetime | None = None, **data
) -> str:
    body = event_body(event_id, event_type, **data)
    return box.store(event_id, event_type, ts or now(), body, repr(body).encode())


def raw_rows(box: Inbox, sql: str, params=()) -> list[dict]:
    """Plain SQL against the store, bypassing the Inbox API (what an operator would run)."""
    if isinstance(box, PostgresInbox):
        with psycopg.connect(box.url, row_factory=psycopg.rows.dict_row) as con:
            return con.execute(sql.replace("?", "%s").replace("{s}", "aptool."), params).fetchall()
    con = sqlite3.connect(box.path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql.replace("{s}", ""), params).fetchall()]
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
def test_setup_is_idempotent_and_creates_both_tables(inbox):
    inbox.setup()
    inbox.setup()
    assert raw_rows(inbox, "SELECT * FROM {s}webhook_events") == []
    put(inbox, "e-1")
    row = raw_rows(inbox, "SELECT * FROM {s}webhook_events")[0]
    assert {
        "seq",
        "event_id",
        "event_type",
        "event_timestamp",
        "received_at",
        "payload",
        "raw_body",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "applied_at",
        "run_id",
    } <= set(row)
    dead = raw_rows(inbox, "SELECT * FROM {s}dead_letter_events")
    assert dead == []
    assert inbox.healthy()


def test_store_accepts_once_and_is_visible_to_another_connection(inbox, store_url):
    assert put(inbox, "e-1") == "accepted"
    assert put(inbox, "e-1") == "duplicate"
    assert put(inbox, "e-1", event_type="student.withdrawn") == "duplicate"  # the id decides, not the type
    other = open_inbox(store_url)  # another connection, as the sensor's process would have
    try:
        ev = other.event("e-1")
        assert ev["status"] == "pending" and ev["attempts"] == 0
        assert ev["event_type"] == "attendance.updated"
        assert ev["payload"]["data"]["attendanceCode"] == "A"
        assert ev["received_at"].tzinfo is not None and ev["event_timestamp"].tzinfo is not None
    finally:
        other.close()


def test_payload_round_trips_exactly(inbox):
    body = event_body("e-uni", reason="élève — 生徒 \x00 \n end", minutes=12)
    raw = b"the signed bytes"
    assert inbox.store("e-uni", "attendance.updated", now(), body, raw) == "accepted"
    assert inbox.event("e-uni")["payload"] == body
    stored = raw_rows(inbox, "SELECT raw_body FROM {s}webhook_events WHERE event_id = ?", ("e-uni",))[0]["raw_body"]
    assert bytes(stored) == raw


def test_store_refuses_naive_timestamps_and_empty_ids(inbox):
    with pytest.raises(ValueError):
        inbox.store("e-1", "attendance.updated", dt.datetime(2025, 1, 1), {}, b"")
    with pytest.raises(ValueError):
        inbox.store("", "attendance.updated", now(), {}, b"")


def test_astore_and_async_dead_letter(inbox):
    async def scenario():
        try:
            results = await asyncio.gather(
                *[inbox.astore("a-1", "student.enrolled", now(), {"n": i}, b"x") for i in range(8)]
            )
            dl = await inbox.astore_dead_letter("a-2", "grade.posted", now(), {}, b"y", "unsupported event type")
            dl_again = await inbox.astore_dead_letter("a-2", "grade.posted", now(), {}, b"y", "unsupported event type")
            healthy = await inbox.ahealthy()
            return results, dl, dl_again, healthy
        finally:
            await inbox.aclose()

    results, dl, dl_again, healthy = asyncio.run(scenario())
    assert sorted(results) == ["accepted"] + ["duplicate"] * 7
    assert (dl, dl_again, healthy) == ("accepted", "duplicate", True)


def test_async_stores_keep_arrival_order_and_answer_each_caller(inbox):
    """Concurrent astore calls (group-committed on PostgreSQL): each id accepted exactly once, by
    its first arrival; repeats within and across batches are duplicates. Batches in flight together
    may commit either way round, so the order checked is seq's; sequential arrival order is checked
    in the receiver tests, and the race of a repeat with its original in test_inbox_group_commit."""
    ids = [f"g-{i:03d}" for i in range(60)]
    calls = ids + ids[::7]  # repeats of some ids, queued behind their originals

    async def scenario():
        try:
            return await asyncio.gather(
                *[inbox.astore(event_id, "attendance.updated", now(), {"id": event_id}, b"x") for event_id in calls]
            )
        finally:
            await inbox.aclose()

    results = asyncio.run(scenario())
    assert results[: len(ids)] == ["accepted"] * len(ids)
    assert results[len(ids) :] == ["duplicate"] * len(ids[::7])
    pending = inbox.pending(limit=1000)
    assert sorted(e.event_id for e in pending) == ids
    assert [e.seq for e in pending] == sorted(e.seq for e in pending)
    assert all(e.payload == {"id": e.event_id} for e in pending)


def test_pending_is_arrival_order_with_limit_and_due_time(inbox):
    base = now()
    # Event timestamps deliberately out of order: pending() follows arrival (seq), not timestamp.
    for i in range(5):
        put(inbox, f"e-{i}", ts=base - dt.timedelta(seconds=i))
    assert [e.event_id for e in inbox.pending()] == [f"e-{i}" for i in range(5)]
    seqs = [e.seq for e in inbox.pending()]
    assert seqs == sorted(seqs)
    assert [e.event_id for e in inbox.pending(limit=2)] == ["e-0", "e-1"]

    later = now() + dt.timedelta(minutes=10)
    assert inbox.mark_retry("e-1", "student 1001 unknown", later)
    assert [e.event_id for e in inbox.pending()] == ["e-0", "e-2", "e-3", "e-4"]
    due_later = inbox.pending(now=later + dt.timedelta(seconds=1))
    assert [e.event_id for e in due_later] == [f"e-{i}" for i in range(5)]
    retried = due_later[1]
    assert retried.attempts == 1 and retried.last_error == "student 1001 unknown"
    assert retried.next_attempt_at == later
    assert retried.payload["data"]["studentId"] == 1001 and retried.data["schoolId"] == 994


def test_mark_applied_and_superseded(inbox):
    for i in range(3):
        put(inbox, f"e-{i}")
    inbox.mark_applied(["e-0"], run_id="run-abc")
    inbox.mark_applied(["e-1"], run_id="run-abc", outcome="superseded")
    assert [e.event_id for e in inbox.pending()] == ["e-2"]
    ev = inbox.event("e-0")
    assert ev["status"] == "applied" and ev["run_id"] == "run-abc" and ev["applied_at"] is not None
    assert inbox.event("e-1")["status"] == "superseded"
    with pytest.raises(ValueError):
        inbox.mark_applied(["e-2"], outcome="done")
    inbox.mark_applied([])  # nothing to do
    # Only pending events move: a dead letter is not silently marked applied.
    inbox.dead_letter("e-2", "student unknown")
    inbox.mark_applied(["e-2", "e-0"], run_id="run-late")
    assert inbox.event("e-2")["status"] == "dead_letter"
    assert inbox.event("e-0")["run_id"] == "run-abc"


def test_dead_letter_records_attempts_reason_and_history(inbox):
    put(inbox, "e-1", reason="payload-detail")
    retry_at = now() - dt.timedelta(seconds=1)
    assert inbox.mark_retry("e-1", "student 1001 unknown", retry_at)
    assert inbox.mark_retry("e-1", "student 1001 unknown", retry_at)
    assert inbox.dead_letter("e-1", "student 1001 unknown after 3 attempts")
    assert not inbox.dead_letter("e-1", "again")  # no longer pending
    assert not inbox.mark_retry("e-1", "again", retry_at)
    assert inbox.pending() == []

    (dl,) = inbox.dead_letters()
    assert dl["event_id"] == "e-1" and dl["event_type"] == "attendance.updated"
    assert dl["reason"] == "student 1001 unknown after 3 attempts"
    assert dl["attempts"] == 3
    assert dl["first_failed_at"] <= dl["last_failed_at"]
    assert dl["replayed_at"] is None and dl["replay_count"] == 0 and dl["status"] == "dead_letter"
    assert "payload" not in dl

    detail = inbox.dead_letter_detail("e-1")
    assert detail["payload"]["data"]["reason"] == "payload-detail"
    assert detail["inbox"]["status"] == "dead_letter"
    assert detail["inbox"]["attempts"] == 3
    assert detail["inbox"]["last_error"] == "student 1001 unknown after 3 attempts"
    assert inbox.dead_letter_detail("nope") is None


def test_store_dead_letter_for_unsupported_types(inbox):
    body = {"eventId": "u-1", "eventType": "grade.posted", "timestamp": now().isoformat(), "data": {}}
    assert inbox.store_dead_letter("u-1", "grade.posted", now(), body, b"raw", "unsupported event type") == "accepted"
    assert inbox.store_dead_letter("u-1", "grade.posted", now(), body, b"raw", "unsupported event type") == "duplicate"
    assert inbox.store("u-1", "attendance.updated", now(), body, b"raw") == "duplicate"
    (dl,) = inbox.dead_letters()
    assert dl["event_id"] == "u-1" and dl["reason"] == "unsupported event type" and dl["attempts"] == 0
    assert inbox.event("u-1")["status"] == "dead_letter"
    assert inbox.pending() == []


def test_replay_is_idempotent(inbox):
    put(inbox, "e-1")
    put(inbox, "e-2")
    put(inbox, "e-3")
    inbox.mark_retry("e-1", "boom", now())
    inbox.dead_letter("e-1", "student unknown")
    inbox.dead_letter("e-2", "student unknown")
    inbox.mark_applied(["e-3"])

    assert inbox.replay(["e-1"]) == ["e-1"]
    assert inbox.replay(["e-1"]) == []  # already pending: no-op
    assert inbox.replay(["e-3", "unknown-id"]) == []  # applied / unknown: no-op
    ev = inbox.event("e-1")
    assert ev["status"] == "pending" and ev["attempts"] == 0 and ev["next_attempt_at"] is None
    assert ev["dead_letter"]["replay_count"] == 1 and ev["dead_letter"]["replayed_at"] is not None
    assert [d["event_id"] for d in inbox.dead_letters()] == ["e-2"]
    assert [d["event_id"] for d in inbox.dead_letters(include_replayed=True)] == ["e-1", "e-2"]
    assert [e.event_id for e in inbox.pending()] == ["e-1"]

    # Fails again: it is a live dead letter again, keeps its first failure and replay history.
    first_failed = ev["dead_letter"]["first_failed_at"]
    inbox.dead_letter("e-1", "still unknown")
    again = inbox.event("e-1")["dead_letter"]
    assert again["first_failed_at"] == first_failed and again["reason"] == "still unknown"
    assert again["attempts"] == 1 and again["replay_count"] == 1
    assert inbox.replay() == ["e-1", "e-2"]  # None: every dead letter not yet replayed
    assert inbox.replay() == []
    assert inbox.event("e-1")["dead_letter"]["replay_count"] == 2
    assert inbox.event("e-2")["dead_letter"]["replay_count"] == 1


def test_concurrent_replays_requeue_once(inbox, store_url):
    put(inbox, "e-1")
    inbox.dead_letter("e-1", "student unknown")
    boxes = [open_inbox(store_url) for _ in range(4)]
    barrier = threading.Barrier(len(boxes))
    results: list[list[str]] = []

    def replay(box):
        barrier.wait()
        results.append(box.replay(["e-1"]))

    threads = [threading.Thread(target=replay, args=(b,)) for b in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for b in boxes:
        b.close()
    assert sorted(results) == [[], [], [], ["e-1"]]
    assert inbox.event("e-1")["dead_letter"]["replay_count"] == 1


def test_event_answers_what_happened(inbox):
    assert inbox.event("never-seen") is None
    put(inbox, "e-1")
    assert inbox.event("e-1")["status"] == "pending" and inbox.event("e-1")["dead_letter"] is None
    inbox.mark_retry("e-1", "student unknown", now())
    inbox.dead_letter("e-1", "student unknown")
    inbox.replay(["e-1"])
    inbox.mark_applied(["e-1"], run_id="run-42")
    ev = inbox.event("e-1")
    assert ev["status"] == "applied" and ev["run_id"] == "run-42"
    assert ev["last_error"] == "student unknown"
    assert ev["dead_letter"]["replay_count"] == 1 and ev["dead_letter"]["attempts"] == 2


def test_what_happened_is_answerable_from_sql_alone(inbox):
    put(inbox, "e-1")
    inbox.mark_retry("e-1", "student unknown", now())
    inbox.dead_letter("e-1", "student unknown")
    inbox.replay(["e-1"])
    inbox.mark_applied(["e-1"], run_id="run-42")
    (row,) = raw_rows(
        inbox,
        "SELECT w.status, w.attempts, w.last_error, w.applied_at, w.run_id, d.reason, d.attempts AS failed_attempts, "
        "d.first_failed_at, d.last_failed_at, d.replayed_at, d.replay_count "
        "FROM {s}webhook_events w LEFT JOIN {s}dead_letter_events d ON d.event_id = w.event_id "
        "WHERE w.event_id = ?",
        ("e-1",),
    )
    assert row["status"] == "applied" and row["run_id"] == "run-42" and row["applied_at"] is not None
    assert row["reason"] == "student unknown" and row["failed_attempts"] == 2
    assert row["replayed_at"] is not None and row["replay_count"] == 1


def test_healthy_follows_the_store(store_url, tmp_path):
    if store_url.startswith("postgresql"):
        with throwaway_database("aptool_inbox_health") as url:
            box = open_inbox(url)
            try:
                box.setup()
                assert box.healthy()
                drop_database(url)
                assert not box.healthy()
            finally:
                box.close()
    else:
        box = open_inbox(store_url)
        try:
            assert not box.healthy()  # no inbox file yet
            box.setup()
            assert box.healthy()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{box.path}{suffix}").unlink(missing_ok=True)
            assert not box.healthy()
        finally:
            box.close()


# -- routing and the embedded store ----------------------------------------------------------
def test_open_inbox_routes_by_database_url(tmp_path, monkeypatch):
    monkeypatch.delenv("APTOOL_INBOX_PATH", raising=False)
    monkeypatch.delenv("APTOOL_DATABASE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    box = open_inbox(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    assert isinstance(box, SqliteInbox) and box.path == (tmp_path / "home" / "inbox.sqlite").resolve()
    assert isinstance(open_inbox(), SqliteInbox)
    assert default_inbox_path() == tmp_path / "home" / "inbox.sqlite"
    monkeypatch.setenv("APTOOL_INBOX_PATH", str(tmp_path / "elsewhere.sqlite"))
    assert open_inbox(None).path == (tmp_path / "elsewhere.sqlite").resolve()
    pg = open_inbox("postgresql://aptool:s3cret-pw@db.example.org:5432/aptool")
    assert isinstance(pg, PostgresInbox) and pg.pool_size == 32
    assert "s3cret-pw" not in pg.describe()
    monkeypatch.setenv("APTOOL_DATABASE_URL", "postgresql://aptool@db.example.org:5432/aptool")
    assert isinstance(open_inbox(), PostgresInbox)  # None = the configured database
    with pytest.raises(ValueError):
        open_inbox("mysql://x/y")


def test_sqlite_inbox_is_wal_with_full_sync(tmp_path):
    box = SqliteInbox(tmp_path / "inbox.sqlite")
    try:
        box.setup()
        pragmas = box.pragmas()
        assert pragmas["journal_mode"] == "wal"
        assert pragmas["synchronous"] == 2  # FULL
        assert pragmas["busy_timeout"] >= 5000
    finally:
        box.close()


WRITER = """
import datetime as dt, sys
from aptool_assets.storage.inbox import SqliteInbox
box = SqliteInbox(sys.argv[1])
box.setup()
for i in range(int(sys.argv[3])):
    stored = box.store(f"{sys.argv[2]}-{i}", "attendance.updated", dt.datetime.now(dt.timezone.utc), {"i": i}, b"x")
    assert stored == "accepted"
box.close()
"""


def test_sqlite_inbox_takes_writers_from_several_processes(tmp_path):
    path = tmp_path / "inbox.sqlite"
    reader = SqliteInbox(path)
    reader.setup()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"p{n}", "150"], cwd=REPO, stderr=subprocess.PIPE)
        for n in range(3)
    ]
    # The "sensor" reads and marks while the writers write.
    applied = 0
    while any(p.poll() is None for p in procs):
        batch = reader.pending(limit=50)
        reader.mark_applied([e.event_id for e in batch], run_id="sensor")
        applied += len(batch)
    for p in procs:
        assert p.wait(60) == 0, p.stderr.read().decode()
    batch = reader.pending(limit=1000)
    reader.mark_applied([e.event_id for e in batch], run_id="sensor")
    applied += len(batch)
    assert applied == 450
    (row,) = raw_rows(
        reader, "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM {s}webhook_events WHERE status = 'applied'"
    )
    assert row["n"] == row["d"] == 450
    reader.close()


# -- payload validation (shared by the receiver and the sensor) ------------------------------
def test_required_data_per_type():
    assert set(REQUIRED_DATA) == set(SUPPORTED_EVENT_TYPES)
    assert REQUIRED_DATA["attendance.updated"] == ("studentId", "schoolId", "date", "period", "attendanceCode")
    assert "exitReason" not in REQUIRED_DATA["student.withdrawn"]
    ok = {"studentId": 1, "schoolId": 2, "date": "2025-10-01", "period": None, "attendanceCode": ""}
    assert data_problem("attendance.updated", ok) is None
    assert data_problem("attendance.updated", {**ok, "period": "3", "minutes": 15}) is None
    assert data_problem("attendance.updated", {**ok, "studentId": "1001"}) is None
    missing_period = {k: v for k, v in ok.items() if k != "period"}
    assert "period" in data_problem("attendance.updated", missing_period)
    assert data_problem("attendance.updated", {**ok, "date": "10/01/2025"})
    assert data_problem("attendance.updated", {**ok, "studentId": True})
    assert data_problem("attendance.updated", {**ok, "attendanceCode": None})
    assert data_problem("attendance.updated", {**ok, "minutes": "15"})
    assert data_problem("student.withdrawn", {"studentId": 1, "schoolId": 2, "leaveDate": "2025-12-19"}) is None
    assert data_problem("grade.posted", {}) is None  # unknown types are not validated here
