"""Applying webhook events (contract §5): who wins, the audit trail, retries, dead letters, replay.

The first half runs on a small hand-built roster in the warehouse (both backends); the second half
on the simulated district after a full pull, where an incremental update must equal a full
recompute and a later pull must confirm or overrule what the events wrote.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import uuid

import dagster as dg
import polars as pl
import pytest

from aptool_assets.definitions import defs
from aptool_assets.events.apply import WITHDRAWN_STATUS, apply_events
from aptool_assets.events.jobs import replay_dead_letters_job, retry_delay, settle_inbox
from aptool_assets.events.resources import WebhookInboxResource
from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, STUDENT_ATTENDANCE_SUMMARY_KEY
from aptool_assets.rules.attendance_cells import overlay_newer_cells
from aptool_assets.sources.aeries.assets import ATTENDANCE_DAYS_KEY
from aptool_assets.storage.inbox import InboxEvent, open_inbox
from aptool_assets.storage.sync_state import SYNC_STATE
from aptool_assets.storage.warehouse import TableWrite
from aptool_assets.tables.aeries import ABSENCE_CODES, ATTENDANCE_DAYS, ENROLLMENT, STUDENTS
from aptool_assets.tables.events import ATTENDANCE_CORRECTIONS, ATTENDANCE_EVENT_CELLS, ATTENDANCE_PULLS
from aptool_assets.tables.metrics import STUDENT_ATTENDANCE_SUMMARY, STUDENT_INTERVENTION_RANKING
from aptool_assets_tests.conftest import evaluate_sensor
from aptool_assets_tests.test_aeries_pipeline import YEAR, env, simulator  # noqa: F401 - the fixtures, used as parameters

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
DAY = dt.date(2026, 3, 10)
SCHOOL, OTHER_SCHOOL = 10, 20
CODES = [  # school, code, type_code, is_suspension, counts_for_ada, partial_truant, not_enrolled
    (SCHOOL, "A", 2, False, False, False, False),  # excused
    (SCHOOL, "U", 3, False, False, False, False),  # unexcused
    (SCHOOL, "T", 5, False, True, False, False),  # tardy
    (SCHOOL, "C", 8, False, True, True, False),  # truant tardy (period)
    (OTHER_SCHOOL, "X", 2, False, False, False, False),
]


def roster(wh) -> None:
    codes = pl.DataFrame(
        [
            {
                "school_code": s,
                "code": c,
                "title": f"code {c}",
                "type_code": t,
                "is_suspension": susp,
                "counts_for_ada": ada,
                "is_partial_day_truant": pt,
                "is_temporarily_not_enrolled": ne,
                "source_updated_at": T0 - dt.timedelta(days=30),
            }
            for s, c, t, susp, ada, pt, ne in CODES
        ]
    )
    students = pl.DataFrame(
        [
            {
                "student_id": sid,
                "school_code": SCHOOL,
                "student_number": sid - 1000,
                "state_student_id": f"S{sid}",
                "first_name": "Fn",
                "last_name": "Ln",
                "grade": 5,
                "school_enter_date": dt.date(2025, 8, 14),
                "school_leave_date": None,
                "inactive_status_code": "",
                "is_active": True,
                "source_updated_at": T0 - dt.timedelta(days=1),
            }
            for sid in (1001, 1002, 1003)
        ]
    )
    enrollment = students.select(
        "student_id",
        "school_code",
        pl.lit(2025).alias("academic_year"),
        "grade",
        pl.col("school_enter_date").alias("enter_date"),
        pl.lit(None, pl.Date).alias("leave_date"),
        pl.lit("").alias("exit_reason_code"),
        "source_updated_at",
    )
    wh.write(TableWrite(ABSENCE_CODES, codes), TableWrite(STUDENTS, students), TableWrite(ENROLLMENT, enrollment))


apply_webhook_events_job = defs.get_job_def("apply_webhook_events")
webhook_inbox_sensor = next(s for s in defs.sensors if s.name == "webhook_inbox_sensor")
_seq = itertools.count(1)


def event(event_type: str, ts: dt.datetime, event_id: str | None = None, **data) -> InboxEvent:
    seq = next(_seq)
    return InboxEvent(
        seq=seq,
        event_id=event_id or f"evt-{seq}",
        event_type=event_type,
        event_timestamp=ts,
        received_at=ts,
        payload={"eventType": event_type, "data": data},
        status="pending",
        attempts=0,
        next_attempt_at=None,
        last_error=None,
    )


def mark(student=1001, day=DAY, period=None, code="U", ts=T0, event_id=None, school=SCHOOL) -> InboxEvent:
    return event(
        "attendance.updated",
        ts,
        event_id,
        studentId=student,
        schoolId=school,
        date=day.isoformat(),
        period=period,
        attendanceCode=code,
    )


def day_row(wh, student=1001, day=DAY) -> dict | None:
    rows = wh.read_table(ATTENDANCE_DAYS).filter((pl.col("student_id") == student) & (pl.col("calendar_date") == day))
    return rows.row(0, named=True) if rows.height else None


@pytest.fixture
def district(warehouse):
    roster(warehouse)
    return warehouse


def test_an_all_day_event_creates_the_day_categorised_by_the_school_table(district):
    result = apply_events(district, [mark(code="U")])
    assert result.applied == [f"evt-{next(_seq) - 1}"] or len(result.applied) == 1
    row = day_row(district)
    assert row["all_day_code"] == "U" and row["absence_category"] == "absent_unexcused"
    assert row["is_full_day_absence"] is True and row["source"] == "webhook" and row["period_codes"] is None
    assert row["source_updated_at"] == T0
    assert result.touched.rows() == [(2025, 1001, SCHOOL)]


def test_period_events_merge_into_the_day_and_clearing_every_code_removes_it(district):
    apply_events(district, [mark(period="2", code="T"), mark(period="3", code="C", ts=T0 + dt.timedelta(seconds=1))])
    row = day_row(district)
    assert row["all_day_code"] is None and row["absence_category"] == "partial"
    assert row["period_codes"].replace(" ", "") == '{"2":"T","3":"C"}'
    apply_events(district, [mark(period="2", code="", ts=T0 + dt.timedelta(seconds=2))])
    assert day_row(district)["period_codes"].replace(" ", "") == '{"3":"C"}'
    apply_events(district, [mark(period="3", code="", ts=T0 + dt.timedelta(seconds=3))])
    assert day_row(district) is None  # negative attendance: a day without codes has no row


def test_latest_timestamp_wins_per_cell_and_a_late_older_event_is_superseded(district):
    newer = mark(code="A", ts=T0 + dt.timedelta(minutes=1), event_id="newer")
    older = mark(code="U", ts=T0, event_id="older")
    other_period = mark(period="4", code="T", ts=T0 - dt.timedelta(minutes=5), event_id="other-period")
    first = apply_events(district, [newer])
    late = apply_events(district, [older, other_period])
    assert first.applied == ["newer"]
    assert late.superseded == ["older"] and late.applied == ["other-period"]  # another cell: no conflict
    row = day_row(district)
    assert row["all_day_code"] == "A" and row["period_codes"].replace(" ", "") == '{"4":"T"}'
    clock = district.read_table(ATTENDANCE_EVENT_CELLS).sort("period")
    assert clock.get_column("event_id").to_list() == ["newer", "other-period"]


def test_out_of_order_delivery_converges_to_the_same_table(warehouse_url, tmp_path):
    """The same 40 events in four different orders and batchings give identical tables."""
    from aptool_assets.storage.warehouse import open_warehouse

    rng = random.Random(7)
    events = [
        mark(
            student=rng.choice([1001, 1002]),
            day=DAY - dt.timedelta(days=rng.randint(0, 2)),
            period=rng.choice([None, "1", "2"]),
            code=rng.choice(["A", "U", "T", ""]),
            ts=T0 + dt.timedelta(seconds=rng.randint(0, 20)),
            event_id=f"e{i:02d}",
        )
        for i in range(40)
    ]
    tables = []
    for trial in range(4):
        url = warehouse_url
        if url.startswith("duckdb"):
            url = f"duckdb:///{tmp_path / f'trial{trial}.duckdb'}"
        else:
            from aptool_assets_tests.conftest import schema_reset

            schema_reset(url)
        wh = open_warehouse(url)
        roster(wh)
        shuffled = events[:]
        rng.shuffle(shuffled)
        size = [2, 5, 13, 40][trial]
        for i in range(0, len(shuffled), size):
            apply_events(wh, shuffled[i : i + size])
        tables.append(wh.read_table(ATTENDANCE_DAYS).drop("source_updated_at").sort(ATTENDANCE_DAYS.key))
    assert tables[0].height > 0
    for other in tables[1:]:
        assert other.equals(tables[0])


def test_reapplying_a_batch_changes_nothing(district):
    batch = [mark(code="U"), mark(period="1", code="T"), mark(student=1002, code="A")]
    apply_events(district, batch)
    before = district.read_table(ATTENDANCE_DAYS).sort(ATTENDANCE_DAYS.key)
    again = apply_events(district, batch)
    assert sorted(again.applied) == sorted(e.event_id for e in batch)  # recognised as already applied
    assert district.read_table(ATTENDANCE_DAYS).sort(ATTENDANCE_DAYS.key).equals(before)


def test_an_event_older_than_the_last_pull_of_its_day_is_superseded(district):
    pulls = pl.DataFrame(
        {"school_code": [SCHOOL], "first_date": [DAY], "last_date": [DAY], "pulled_at": [T0 + dt.timedelta(minutes=1)]},
        schema=ATTENDANCE_PULLS.polars_schema,
    )
    district.write(TableWrite(ATTENDANCE_PULLS, pulls, replace_where=None))
    result = apply_events(district, [mark(ts=T0), mark(ts=T0 + dt.timedelta(minutes=2), period="1", code="T")])
    assert len(result.superseded) == 1 and len(result.applied) == 1
    assert day_row(district)["period_codes"].replace(" ", "") == '{"1":"T"}'


def test_corrections_keep_reason_author_and_what_was_there(district):
    apply_events(district, [mark(code="U", ts=T0)])
    fix = event(
        "attendance.corrected",
        T0 + dt.timedelta(hours=1),
        "fix-1",
        studentId=1001,
        schoolId=SCHOOL,
        date=DAY.isoformat(),
        period=None,
        originalCode="U",
        newCode="A",
        reason="note from home",
        correctedBy="staff-17",
    )
    stale = event(
        "attendance.corrected",
        T0 - dt.timedelta(hours=1),
        "fix-0",
        studentId=1001,
        schoolId=SCHOOL,
        date=DAY.isoformat(),
        period=None,
        originalCode="",
        newCode="T",
        reason="late entry",
        correctedBy="staff-3",
    )
    result = apply_events(district, [fix, stale])
    assert result.applied == ["fix-1"] and result.superseded == ["fix-0"]
    assert day_row(district)["absence_category"] == "absent_excused"
    audit = {r["event_id"]: r for r in district.read_table(ATTENDANCE_CORRECTIONS).iter_rows(named=True)}
    assert audit["fix-1"]["reason"] == "note from home" and audit["fix-1"]["corrected_by"] == "staff-17"
    assert audit["fix-1"]["code_before"] == "U" and audit["fix-1"]["outcome"] == "applied"
    assert audit["fix-0"]["outcome"] == "superseded"


def test_unknown_students_and_invalid_data_are_reported_not_applied(district):
    unknown = mark(student=999999, event_id="who")
    wrong_school = mark(student=1001, school=OTHER_SCHOOL, event_id="where")
    invalid = event(
        "attendance.updated",
        T0,
        "bad",
        studentId=1001,
        schoolId=SCHOOL,
        date="10/03/2026",
        period=None,
        attendanceCode="U",
    )
    unsupported = event("attendance.deleted", T0, "odd", studentId=1001)
    bad_grade = event(
        "student.enrolled", T0, "grade", studentId=1001, schoolId=SCHOOL, grade="fifth", enterDate="2026-03-02"
    )
    result = apply_events(district, [unknown, wrong_school, invalid, unsupported, bad_grade])
    assert set(result.unknown_student) == {"who", "where"}
    assert "999999" in result.unknown_student["who"]
    assert result.invalid == {
        "bad": "data.date must be a date as YYYY-MM-DD",
        "odd": "unsupported event type",
        "grade": "data.grade must be an integer grade from -2 to 18",
    }
    assert district.read_table(ATTENDANCE_DAYS).height == 0


def test_enrolment_at_a_new_school_and_withdrawal(district):
    enrol = event(
        "student.enrolled", T0, "enrol", studentId=1002, schoolId=OTHER_SCHOOL, grade=6, enterDate="2026-03-02"
    )
    leave = event(
        "student.withdrawn", T0, "leave", studentId=1003, schoolId=SCHOOL, leaveDate="2026-03-06", exitReason="E140"
    )
    stale = event(
        "student.enrolled",
        T0 - dt.timedelta(days=3),
        "stale",
        studentId=1003,
        schoolId=SCHOOL,
        grade=5,
        enterDate="2025-08-14",
    )  # older than the roster row (pulled a day before T0)
    result = apply_events(district, [enrol, leave, stale])
    assert sorted(result.applied) == ["enrol", "leave"] and result.superseded == ["stale"]
    students = {(r["student_id"], r["school_code"]): r for r in district.read_table(STUDENTS).iter_rows(named=True)}
    moved = students[(1002, OTHER_SCHOOL)]
    assert moved["student_number"] == 2 and moved["grade"] == 6 and moved["is_active"]  # identity from the roster
    assert moved["school_enter_date"] == dt.date(2026, 3, 2) and moved["source_updated_at"] == T0
    gone = students[(1003, SCHOOL)]
    assert gone["school_leave_date"] == dt.date(2026, 3, 6) and not gone["is_active"]
    assert gone["inactive_status_code"] == WITHDRAWN_STATUS
    stints = district.read_table(ENROLLMENT).filter(pl.col("student_id").is_in([1002, 1003]))
    assert stints.filter(pl.col("school_code") == OTHER_SCHOOL).item(0, "enter_date") == dt.date(2026, 3, 2)
    closed = stints.filter(pl.col("student_id") == 1003)
    assert closed.item(0, "leave_date") == dt.date(2026, 3, 6) and closed.item(0, "exit_reason_code") == "E140"
    # An attendance event at the new school is known in the same batch as the enrolment.
    both = apply_events(
        district,
        [  # grade 0 is kindergarten, a valid grade
            event(
                "student.enrolled",
                T0,
                "enrol-2",
                studentId=1001,
                schoolId=OTHER_SCHOOL,
                grade=0,
                enterDate="2026-03-09",
            ),
            mark(student=1001, school=OTHER_SCHOOL, code="X", event_id="mark-2"),
        ],
    )
    assert sorted(both.applied) == ["enrol-2", "mark-2"]


def test_a_pull_keeps_only_the_events_newer_than_itself():
    codes = pl.DataFrame(
        [
            {
                "school_code": SCHOOL,
                "code": "A",
                "type_code": 2,
                "counts_for_ada": False,
                "is_suspension": False,
                "is_partial_day_truant": False,
                "is_temporarily_not_enrolled": False,
            }
        ]
    )
    pulled = pl.DataFrame(
        {
            "student_id": [1001],
            "school_code": [SCHOOL],
            "calendar_date": [DAY],
            "all_day_code": [None],
            "absence_category": ["partial"],
            "period_codes": ['{"1":"A"}'],
            "is_full_day_absence": [False],
            "source": ["aeries_pull"],
            "source_updated_at": [T0],
        },
        schema=ATTENDANCE_DAYS.polars_schema,
    )
    newer = pl.DataFrame(
        {
            "student_id": [1001, 1002],
            "school_code": [SCHOOL, SCHOOL],
            "calendar_date": [DAY, DAY],
            "period": ["", ""],
            "code": ["A", "A"],
            "event_id": ["n1", "n2"],
            "event_type": ["attendance.updated"] * 2,
            "event_timestamp": [T0 + dt.timedelta(seconds=5)] * 2,
            "applied_at": [T0] * 2,
        },
        schema=ATTENDANCE_EVENT_CELLS.polars_schema,
    )
    out = overlay_newer_cells(pulled, newer, codes).sort("student_id")
    assert out.get_column("all_day_code").to_list() == ["A", "A"]
    assert out.get_column("absence_category").to_list() == ["absent_excused", "absent_excused"]
    assert out.item(0, "period_codes").replace(" ", "") == '{"1":"A"}' and out.item(1, "period_codes") is None
    assert out.get_column("source").to_list() == ["webhook", "webhook"]


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


# ---------------------------------------------------------------------------------------------
# On the simulated district: incremental equals full recompute; later pulls confirm or overrule


def _post(box, ev_id: str, event_type: str, ts: dt.datetime, **data) -> None:
    body = {"eventId": ev_id, "eventType": event_type, "timestamp": ts.isoformat(), "data": data}
    assert box.store(ev_id, event_type, ts, body, b"{}") == "accepted"


def _apply(env, inbox_resource) -> dg.ExecuteInJobResult:
    result = apply_webhook_events_job.execute_in_process(
        resources={**env.resources, "inbox": inbox_resource}, instance=env.instance, raise_on_error=False
    )
    assert result.success
    return result


@pytest.mark.slow
def test_events_update_only_their_students_and_schools_and_later_pulls_decide(env, tmp_path):
    env.full_sync()
    assert env.run(ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, partition_key=str(YEAR)).success
    wh = env.warehouse
    ranking_before = wh.read_table(STUDENT_INTERVENTION_RANKING)
    schools = sorted(ranking_before.get_column("school_code").unique().to_list())
    school, untouched_school = schools[0], schools[-1]
    attendance = wh.read_table(ATTENDANCE_DAYS)
    days = (
        wh.query(
            f"SELECT calendar_date FROM aptool.school_calendar WHERE school_code = {school} AND is_instructional "
            "AND calendar_date BETWEEN '2026-03-02' AND '2026-03-12' ORDER BY calendar_date"
        )
        .get_column("calendar_date")
        .to_list()
    )
    summary_before = wh.read_table(STUDENT_ATTENDANCE_SUMMARY).filter(pl.col("school_code") == school)
    student = summary_before.sort("days_absent").item(0, "student_id")  # a student with few absences
    present = [
        d
        for d in days
        if attendance.filter((pl.col("student_id") == student) & (pl.col("calendar_date") == d)).height == 0
    ]
    assert len(present) >= 3
    codes = env.sim.district.code_table(school)
    unexcused = next(c for c, row in codes.items() if row["TypeCode"] == 3 and not row["IsSuspension"])

    inbox = WebhookInboxResource(inbox_path=str(tmp_path / "inbox.sqlite"))
    box = inbox.open()
    box.setup()
    t = dt.datetime.now(UTC)  # after the full pull: newer than what it saw
    for i, day in enumerate(present[:3]):
        _post(
            box,
            f"abs-{i}",
            "attendance.updated",
            t,
            studentId=student,
            schoolId=school,
            date=day.isoformat(),
            period=None,
            attendanceCode=unexcused,
        )
    result = _apply(env, inbox)

    summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY)
    mine = summary.filter((pl.col("student_id") == student) & (pl.col("school_code") == school))
    was = summary_before.filter(pl.col("student_id") == student)
    assert mine.item(0, "days_unexcused") == was.item(0, "days_unexcused") + 3
    ranking = wh.read_table(STUDENT_INTERVENTION_RANKING)
    # Only the touched school was re-ranked; every other school's rows are untouched.
    kept = lambda df: df.filter(pl.col("school_code") != school).sort(STUDENT_INTERVENTION_RANKING.key)  # noqa: E731 - a one-line view of the frame, used twice below
    assert kept(ranking).equals(kept(ranking_before))
    assert (
        ranking.filter(pl.col("school_code") == school).get_column("computed_at").min()
        > ranking_before.get_column("computed_at").max()
    )
    assert untouched_school != school
    # What the run reports: the touched day partitions and the refreshed metric years.
    reported = {
        (m.asset_key, m.partition) for m in (e.materialization for e in result.get_asset_materialization_events())
    }
    assert {(ATTENDANCE_DAYS_KEY, d.isoformat()) for d in present[:3]} <= reported
    assert {(STUDENT_ATTENDANCE_SUMMARY_KEY, str(YEAR)), (INTERVENTION_RANKING_KEY, str(YEAR))} <= reported
    assert {box.event(f"abs-{i}")["status"] for i in range(3)} == {"applied"}

    # The incremental rows are exactly what a full recompute gives.
    incremental_summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY).sort(STUDENT_ATTENDANCE_SUMMARY.key)
    incremental_ranking = (
        wh.read_table(STUDENT_INTERVENTION_RANKING).drop("computed_at").sort(STUDENT_INTERVENTION_RANKING.key)
    )
    assert env.run(STUDENT_ATTENDANCE_SUMMARY_KEY, INTERVENTION_RANKING_KEY, partition_key=str(YEAR)).success
    assert wh.read_table(STUDENT_ATTENDANCE_SUMMARY).sort(STUDENT_ATTENDANCE_SUMMARY.key).equals(incremental_summary)
    assert (
        wh.read_table(STUDENT_INTERVENTION_RANKING)
        .drop("computed_at")
        .sort(STUDENT_INTERVENTION_RANKING.key)
        .equals(incremental_ranking)
    )

    # A later pull is the truth for the days it covers: Aeries never had the first two absences, so
    # the pull overrules them; an event newer than the pull's start is laid back over it.
    _post(
        box,
        "future",
        "attendance.updated",
        dt.datetime.now(UTC) + dt.timedelta(seconds=30),
        studentId=student,
        schoolId=school,
        date=present[2].isoformat(),
        period="3",
        attendanceCode=unexcused,
    )
    _apply(env, inbox)
    for day in present[:3]:
        assert env.run(ATTENDANCE_DAYS_KEY, partition_key=day.isoformat()).success
    after = wh.read_table(ATTENDANCE_DAYS).filter(pl.col("student_id") == student)
    assert after.filter(pl.col("calendar_date").is_in(present[:2])).height == 0
    kept_row = after.filter(pl.col("calendar_date") == present[2]).row(0, named=True)
    assert kept_row["all_day_code"] is None and kept_row["source"] == "webhook"
    assert kept_row["period_codes"].replace(" ", "") == f'{{"3":"{unexcused}"}}'
    # And an event older than that pull, arriving late, is superseded.
    _post(
        box,
        "late",
        "attendance.updated",
        t,
        studentId=student,
        schoolId=school,
        date=present[0].isoformat(),
        period=None,
        attendanceCode=unexcused,
    )
    _apply(env, inbox)
    assert box.event("late")["status"] == "superseded"
    box.close()
    # aptool.sync_state says how fresh each entity is, written with the data it describes.
    state = {(r["source"], r["entity"]): r for r in wh.read_table(SYNC_STATE).iter_rows(named=True)}
    assert {("aeries", "students"), ("aeries", "attendance_days"), ("webhooks", "events")} <= set(state)
    assert state[("aeries", "attendance_days")]["cursor"] == f"{present[2]}..{present[2]}"
    assert state[("webhooks", "events")]["last_sync_at"] > state[("aeries", "attendance_days")]["last_sync_at"]
