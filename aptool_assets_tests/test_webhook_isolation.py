"""One event that cannot be applied is dead-lettered alone (contract §5): bad payloads stored by an older
receiver, rows the warehouse refuses, payloads the inbox cannot decode; the rest of the batch applies.

Bad events go straight into the inbox store (SQLite and PostgreSQL), as an older receiver would have
stored them, and are read back and applied on both warehouses.
"""

from __future__ import annotations

import datetime as dt
import uuid

import duckdb
import polars as pl
import psycopg
import pytest

from aptool_assets.events.apply import apply_events
from aptool_assets.events.frame import event_frame
from aptool_assets.events.jobs import settle_inbox
from aptool_assets.resilience.retry import RetryExhausted, RetrySettings
from aptool_assets.storage.inbox import open_inbox
from aptool_assets.storage.inbox.payload import MAX_STORED_DEPTH, decode_payload, json_depth
from aptool_assets.storage.warehouse import TableWrite, open_warehouse
from aptool_assets.storage.warehouse.postgres import PostgresWarehouse
from aptool_assets.tables.aeries import ATTENDANCE_DAYS, STUDENTS
from aptool_assets.tables.events import ATTENDANCE_EVENT_CELLS
from aptool_assets_tests.conftest import schema_reset
from aptool_assets_tests.webhook_apply_helpers import DAY, SCHOOL, T0, day_row, event, mark, roster

NOW = dt.datetime(2026, 3, 10, 18, 0, tzinfo=dt.UTC)


def nested(levels: int) -> object:
    value: object = "x"
    for _ in range(levels):
        value = {"a": value}
    return value


def bad_payloads(student: int, school: int, day: dt.date) -> dict[str, tuple[str, dict, str]]:
    """The payloads of the issue that stopped every apply: name → (event type, data, what the reason names)."""
    mark_data = {"studentId": student, "schoolId": school, "date": day.isoformat(), "period": None}
    return {
        "school_id_over_int32": (
            "attendance.updated",
            {**mark_data, "attendanceCode": "U", "schoolId": 2**31},
            "schoolId",
        ),
        "student_id_of_20_digits": (
            "attendance.updated",
            {**mark_data, "attendanceCode": "U", "studentId": "12345678901234567890"},
            "studentId",
        ),
        "reason_an_object": (
            "attendance.corrected",
            {**mark_data, "originalCode": "", "newCode": "U", "reason": {"text": "note"}, "correctedBy": "staff-1"},
            "reason",
        ),
        "nul_byte_in_code": ("attendance.updated", {**mark_data, "attendanceCode": "U\x00"}, "attendanceCode"),
        "grade_in_words": (
            "student.enrolled",
            {"studentId": student, "schoolId": school, "grade": "ninth", "enterDate": day.isoformat()},
            "grade",
        ),
        "deeply_nested_json": (
            "attendance.updated",
            {**mark_data, "attendanceCode": "U", "note": nested(900)},
            "nested deeper",
        ),
    }


def store(box, event_id: str, event_type: str, data: dict, ts: dt.datetime = T0) -> None:
    body = {"eventId": event_id, "eventType": event_type, "timestamp": ts.isoformat(), "data": data}
    assert box.store(event_id, event_type, ts, body, b"{}") == "accepted"


def test_each_bad_payload_is_dead_lettered_alone_and_the_valid_event_applies(stored, district):
    """One batch: the six payloads of the issue, each among valid events, straight from the stored store."""
    bad = bad_payloads(1001, SCHOOL, DAY)
    store(stored, "valid-before", "attendance.updated", {**_mark(1002), "attendanceCode": "A"})
    for name, (event_type, data, _) in bad.items():
        store(stored, name, event_type, data)
    store(stored, "valid-after", "attendance.updated", {**_mark(1003), "attendanceCode": "U"})

    due = stored.pending(now=NOW)
    assert len(due) == len(bad) + 2  # reading the inbox never fails on what one event holds
    result = apply_events(district, due, NOW)
    settle_inbox(stored, due, result, "run-1", dt.timedelta(hours=1), NOW)

    assert sorted(result.applied) == ["valid-after", "valid-before"]
    assert set(result.invalid) == set(bad)
    for name, (_, _, named) in bad.items():
        assert named in result.invalid[name], result.invalid[name]
        assert stored.event(name)["status"] == "dead_letter"
    assert day_row(district, student=1002)["all_day_code"] == "A"
    assert day_row(district, student=1003)["all_day_code"] == "U"
    assert day_row(district, student=1001) is None
    # Reasons name keys, never the values an event carried.
    assert not any("2147483648" in r or "12345678901234567890" in r or "ninth" in r for r in result.invalid.values())


def _mark(student: int) -> dict:
    return {"studentId": student, "schoolId": SCHOOL, "date": DAY.isoformat(), "period": None}


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"studentId": 0}, "studentId"),
        ({"studentId": 1_000_000_000}, "studentId"),
        ({"studentId": 1.5}, "studentId"),
        ({"schoolId": 10_000}, "schoolId"),
        ({"date": "2026-02-30"}, "date"),
        ({"date": "1999-12-31"}, "date"),
        ({"date": "2999-01-01"}, "date"),
        ({"period": "1\x00"}, "period"),
        ({"period": "123456789"}, "period"),
        ({"attendanceCode": "\ud800"}, "attendanceCode"),
        ({"attendanceCode": "A\u00a0"}, "attendanceCode"),
        ({"attendanceCode": ["U"]}, "attendanceCode"),
    ],
)
def test_a_value_the_published_columns_cannot_hold_is_invalid_and_named(data, named):
    ev = event("attendance.updated", T0, "bad", **{**_mark(1001), "attendanceCode": "U", **data})
    frame, invalid = event_frame([ev, mark(student=1002, event_id="good")], today=NOW.date())
    assert frame.get_column("event_id").to_list() == ["good"]
    assert list(invalid) == ["bad"] and f"data.{named} " in invalid["bad"], invalid


def test_text_fields_of_corrections_and_withdrawals_are_checked_too():
    fix = {**_mark(1001), "originalCode": "", "newCode": "A", "reason": "note", "correctedBy": "staff-17"}
    cases = {
        "ok-fix": ("attendance.corrected", fix),
        "long-reason": ("attendance.corrected", {**fix, "reason": "x" * 501}),
        "newline": ("attendance.corrected", {**fix, "reason": "two\nlines"}),
        "author-object": ("attendance.corrected", {**fix, "correctedBy": {"id": 1}}),
        "ok-leave": ("student.withdrawn", {"studentId": 1001, "schoolId": SCHOOL, "leaveDate": "2026-03-06"}),
        "exit-nul": (
            "student.withdrawn",
            {"studentId": 1001, "schoolId": SCHOOL, "leaveDate": "2026-03-06", "exitReason": "E\x00"},
        ),
        "grade-99": (
            "student.enrolled",
            {"studentId": 1001, "schoolId": SCHOOL, "grade": 99, "enterDate": "2026-03-02"},
        ),
        "ok-grade": (
            "student.enrolled",
            {"studentId": 1001, "schoolId": SCHOOL, "grade": -1, "enterDate": "2026-03-02"},
        ),
        "grade-text": (
            "student.enrolled",
            {"studentId": 1001, "schoolId": SCHOOL, "grade": "-1", "enterDate": "2026-03-02"},
        ),
        "author-number": ("attendance.corrected", {**fix, "correctedBy": 17}),
        "not-an-object": ("student.enrolled", "data"),
    }
    events = [
        event(t, T0, name, **d) if isinstance(d, dict) else _raw_event(name, t, d) for name, (t, d) in cases.items()
    ]
    frame, invalid = event_frame(events, today=NOW.date())
    assert sorted(frame.get_column("event_id").to_list()) == ["ok-fix", "ok-grade", "ok-leave"]
    assert frame.filter(pl.col("event_id") == "ok-fix").item(0, "corrected_by") == "staff-17"
    assert frame.filter(pl.col("event_id") == "ok-grade").item(0, "grade") == -1
    # What the receiver refuses (contract §5: free text is text, a grade an integer) is dead-lettered alike.
    assert invalid["author-number"].startswith("data.correctedBy must be text")
    assert invalid["grade-text"] == "data.grade must be an integer grade from -2 to 18"
    assert invalid["long-reason"].startswith("data.reason must be text of at most 500")
    assert invalid["newline"].startswith("data.reason must be text")
    assert invalid["author-object"].startswith("data.correctedBy must be text")
    assert invalid["exit-nul"].startswith("data.exitReason must be")
    assert invalid["grade-99"] == "data.grade must be an integer grade from -2 to 18"
    assert invalid["not-an-object"] == "data must be an object"


def _raw_event(event_id: str, event_type: str, data: object):
    ev = event(event_type, T0, event_id)
    return type(ev)(**{**ev.__dict__, "payload": {"eventType": event_type, "data": data}})


# ---------------------------------------------------------------------------------------------
# Rows the warehouse refuses: bisected down to the one event


def _refuse_code(wh, code: str) -> None:
    """Create aptool.attendance_days with a CHECK that refuses ``code`` (a constraint the district added)."""
    wh.execute("CREATE SCHEMA IF NOT EXISTS aptool")
    create = wh.create_table_sql(ATTENDANCE_DAYS)
    wh.execute(f"{create[:-1]}, CHECK (all_day_code IS NULL OR all_day_code <> '{code}'))")


def test_rows_the_warehouse_refuses_are_bisected_to_the_one_event(district):
    _refuse_code(district, "Z")
    ok = [mark(student=1001 + i % 3, day=DAY - dt.timedelta(days=i), code="U", event_id=f"ok-{i}") for i in range(8)]
    refused = mark(student=1002, day=DAY - dt.timedelta(days=20), code="Z", event_id="refused")
    batch = [*ok[:5], refused, *ok[5:]]

    result = apply_events(district, batch, NOW)

    assert sorted(result.applied) == sorted(e.event_id for e in ok)
    assert list(result.invalid) == ["refused"]
    assert result.invalid["refused"].startswith("the warehouse refused the event's rows (")
    assert district.read_table(ATTENDANCE_DAYS).height == 8
    assert "refused" not in district.read_table(ATTENDANCE_EVENT_CELLS).get_column("event_id").to_list()
    assert result.rows_written[ATTENDANCE_DAYS.name] == 8
    assert sorted(result.touched.get_column("student_id").unique().to_list()) == [1001, 1002, 1003]


def _unreachable() -> PostgresWarehouse:
    """A warehouse on a port nothing listens on, tried once."""
    return PostgresWarehouse(
        "postgresql://postgres@127.0.0.1:9/nowhere", retry=RetrySettings(1, 0, 0), connect_timeout_s=2
    )


def test_rejects_rows_tells_refused_data_from_connection_trouble(warehouse):
    _refuse_code(warehouse, "Z")
    row = pl.DataFrame(
        [{"student_id": 1, "school_code": 1, "calendar_date": DAY, "all_day_code": "Z", "absence_category": None,
          "period_codes": None, "is_full_day_absence": True, "source": "webhook", "source_updated_at": T0}],
        schema=ATTENDANCE_DAYS.polars_schema,
    )  # fmt: skip
    with pytest.raises((psycopg.errors.CheckViolation, duckdb.ConstraintException)) as refused:
        warehouse.write(TableWrite(ATTENDANCE_DAYS, row, replace_where=None))
    assert warehouse.rejects_rows(refused.value)
    too_big = pl.DataFrame({**{c: [None] for c in STUDENTS.columns}, "school_code": [2**40]})
    with pytest.raises(pl.exceptions.InvalidOperationError) as overflow:
        warehouse.write(TableWrite(STUDENTS, too_big, upsert=True))
    assert warehouse.rejects_rows(overflow.value)

    with pytest.raises(RetryExhausted) as down:
        _unreachable().read_table(STUDENTS)
    assert isinstance(down.value.last, psycopg.OperationalError)
    assert not warehouse.rejects_rows(down.value) and not warehouse.rejects_rows(down.value.last)
    assert not warehouse.rejects_rows(KeyboardInterrupt()) and not warehouse.rejects_rows(OSError("disk"))


def test_connection_trouble_fails_the_apply_instead_of_dead_lettering():
    with pytest.raises(psycopg.OperationalError):
        apply_events(_unreachable(), [mark(event_id="kept")], NOW)


@pytest.mark.postgres
def test_a_write_refused_for_permissions_fails_the_apply_instead_of_bisecting(postgres_url):
    """Reads work, the write is refused for something other than the rows (a role without write grants):
    bisecting would dead-letter every event, so the apply fails and the run is retried."""
    owner = open_warehouse(postgres_url)
    schema_reset(postgres_url)
    roster(owner)
    role = f"aptool_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(f"CREATE ROLE {role} LOGIN")
        con.execute(f"GRANT USAGE ON SCHEMA aptool TO {role}")
        con.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA aptool TO {role}")
    try:
        reader = open_warehouse(postgres_url.replace("postgres@", f"{role}@"))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            apply_events(reader, [mark(event_id="a"), mark(student=1002, event_id="b")], NOW)
        assert owner.read_table(ATTENDANCE_DAYS).height == 0
    finally:
        schema_reset(postgres_url)
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(f"DROP OWNED BY {role}")
            con.execute(f"DROP ROLE {role}")


# ---------------------------------------------------------------------------------------------
# Payloads the inbox cannot decode


def test_json_depth_counts_nesting_not_brackets_inside_strings():
    assert json_depth('{"data": {"a": [1, 2]}}') == 3
    assert json_depth('{"a": "' + "[" * 500 + '"}') == 1
    assert json_depth('{"a": "\\"' + "{" * 100 + '"}') == 1  # an escaped quote does not end the string
    assert json_depth("[" * 70 + "]" * 70) == 70
    too_deep = "[" * (MAX_STORED_DEPTH + 1) + "]" * (MAX_STORED_DEPTH + 1)
    assert decode_payload(too_deep) == ({}, f"stored payload is nested deeper than {MAX_STORED_DEPTH} levels")
    assert decode_payload(b'{"data": {}}') == ({"data": {}}, None)
    assert decode_payload("{broken")[1].startswith("stored payload is not valid JSON")


def test_the_inbox_reads_any_stored_payload_even_deep_in_a_stack(inbox):
    store(inbox, "deep", "attendance.updated", {"note": nested(950)})
    assert inbox.store("a-list", "attendance.updated", T0, [1, 2], b"[]") == "accepted"
    store(inbox, "fine", "attendance.updated", {**_mark(1001), "attendanceCode": "U"})

    def deep_in_the_stack(levels: int):  # as deep as a Dagster run's op: json.loads of 950 levels would fail
        return deep_in_the_stack(levels - 1) if levels else inbox.pending(now=NOW)

    due = {e.event_id: e for e in deep_in_the_stack(300)}
    assert due["deep"].payload_error == f"stored payload is nested deeper than {MAX_STORED_DEPTH} levels"
    assert due["a-list"].payload_error == "stored payload is not a JSON object" and due["a-list"].data == {}
    assert due["fine"].payload_error is None and due["fine"].data["studentId"] == 1001
    _, invalid = event_frame(due.values(), today=NOW.date())
    assert set(invalid) == {"deep", "a-list"}
    assert inbox.event("deep")["payload_error"].startswith("stored payload is nested")  # `dead-letters show` works


@pytest.fixture
def district(warehouse):
    roster(warehouse)
    return warehouse


@pytest.fixture
def stored(store_url, district):
    """The inbox, set up after the warehouse: on PostgreSQL both live in one database and schema, which
    each fixture resets first."""
    box = open_inbox(store_url)
    box.setup()
    yield box
    box.close()
