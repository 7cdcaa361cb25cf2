"""What a valid webhook event is (contract §5, issue #12 §1): every field's type and range at the
receiver, each boundary on both sides, and the payloads that once got 200 and then broke the apply
(or the sensor) -- each now a 400 naming the field, after which a valid event is still accepted."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from aptool_assets.events.app import create_app
from aptool_assets.events.validation import (
    DATA_FIELDS,
    MAX_JSON_DEPTH,
    REQUIRED_DATA,
    add_years,
    data_problem,
)
from aptool_assets.storage.inbox.payload import json_depth
from aptool_assets_tests.webhook_helpers import SECRET, UTC, ThreadedServer, encode, make_event, post, stored_ids

TODAY = dt.date(2026, 2, 28)
FROZEN = dt.datetime(2026, 2, 28, 12, 0, tzinfo=UTC)
UPDATED = {"studentId": 1001, "schoolId": 994, "date": "2026-02-27", "period": None, "attendanceCode": "A"}
CORRECTED = {
    **UPDATED,
    "period": "2",
    "originalCode": "A",
    "newCode": "E",
    "reason": "note from parent",
    "correctedBy": "clerk7",
}
ENROLLED = {"studentId": 1001, "schoolId": 994, "grade": 9, "enterDate": "2025-08-14"}
WITHDRAWN = {"studentId": 1001, "schoolId": 994, "leaveDate": "2026-02-27"}
VALID = {
    "attendance.updated": UPDATED,
    "attendance.corrected": CORRECTED,
    "student.enrolled": ENROLLED,
    "student.withdrawn": WITHDRAWN,
}


def problem(event_type: str, **changes) -> str | None:
    data = {k: v for k, v in {**VALID[event_type], **changes}.items() if v is not ...}
    return data_problem(event_type, data, TODAY)


# -- the rules, boundary by boundary (pure) ----------------------------------------------------
def test_every_type_declares_its_fields():
    assert set(DATA_FIELDS) == set(REQUIRED_DATA) == set(VALID)
    for event_type, data in VALID.items():
        assert problem(event_type) is None, event_type
        assert set(REQUIRED_DATA[event_type]) <= set(data)


@pytest.mark.parametrize("event_type", list(VALID))
@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        ("studentId", [1, 999_999_999, "999999999"], [0, -1, 1_000_000_000, "1000000000", "12345678901234567890"]),
        ("studentId", [], [True, 1001.0, "1e3", " 1001", "１００１", None, {"id": 1}]),
        ("schoolId", [1, 9_999], [0, -5, 10_000, 2_147_483_648, False, None]),
    ],
)
def test_ids_are_positive_and_fit_the_published_columns(event_type, key, good, bad):
    for value in good:
        assert problem(event_type, **{key: value}) is None, value
    for value in bad:
        message = problem(event_type, **{key: value})
        assert message and message.startswith(f"data.{key} "), (value, message)


@pytest.mark.parametrize(("event_type", "key"), [(t, k) for t, f in DATA_FIELDS.items() for k in f if "ate" in k])
def test_dates_are_real_and_between_2000_and_a_year_from_today(event_type, key):
    for value in ("2000-01-01", "2027-02-28", "2024-02-29"):
        assert problem(event_type, **{key: value}) is None, value
    for value in ("1999-12-31", "2027-03-01", "2025-02-29", "2026-13-01", "10/01/2025", "20251001", "2025-W40-3"):
        message = problem(event_type, **{key: value})
        assert message and message.startswith(f"data.{key} "), (value, message)
    assert problem(event_type, **{key: 20251001}).startswith(f"data.{key} ")


def test_one_year_after_a_leap_day():
    assert add_years(dt.date(2028, 2, 29), 1) == dt.date(2029, 2, 28)
    leap = {**UPDATED, "date": "2029-02-28"}
    assert data_problem("attendance.updated", leap, dt.date(2028, 2, 29)) is None
    assert data_problem("attendance.updated", {**leap, "date": "2029-03-01"}, dt.date(2028, 2, 29))


@pytest.mark.parametrize(
    ("event_type", "key"),
    [
        ("attendance.updated", "attendanceCode"),
        ("attendance.corrected", "originalCode"),
        ("attendance.corrected", "newCode"),
        ("student.withdrawn", "exitReason"),
    ],
)
def test_codes_are_1_to_8_printable_characters_or_empty(event_type, key):
    for value in ("", "A", "UT", "12345678", "%", "E140"):
        assert problem(event_type, **{key: value}) is None, value
    for value in ("123456789", "A\x00", "\x00", "A\nB", "   ", "\t", 7, ["A"], {"code": "A"}):
        message = problem(event_type, **{key: value})
        assert message and message.startswith(f"data.{key} "), (value, message)


@pytest.mark.parametrize("event_type", ["attendance.updated", "attendance.corrected"])
def test_period_is_null_or_a_short_code(event_type):
    for value in (None, "", "0", "1", "12345678"):
        assert problem(event_type, period=value) is None, value
    for value in ("123456789", 2, "2\x00", {"p": 1}):
        assert problem(event_type, period=value).startswith("data.period "), value
    assert problem(event_type, period=...).startswith("data is missing required keys")


@pytest.mark.parametrize("key", ["reason", "correctedBy"])
def test_free_text_is_at_most_500_characters_without_control_characters(key):
    for value in ("", "x" * 500, 'élève — 生徒 "quoted" \\ back', "a\u00a0b"):
        assert problem("attendance.corrected", **{key: value}) is None, value
    for value in ("x" * 501, "line\nbreak", "tab\there", "nul\x00", "c1\x85", {"text": "x"}, ["x"], 5):
        message = problem("attendance.corrected", **{key: value})
        assert message and message.startswith(f"data.{key} "), (value, message)


def test_grade_is_an_integer_from_minus_2_to_18():
    for value in (-2, 0, 9, 18):
        assert problem("student.enrolled", grade=value) is None, value
    for value in (-3, 19, "ninth", "9", 9.0, True):
        assert problem("student.enrolled", grade=value) == "data.grade must be an integer grade from -2 to 18", value
    assert problem("student.enrolled", grade=None) == "data.grade must not be null"


def test_optional_fields():
    assert problem("attendance.updated", minutes=0) is None
    assert problem("attendance.updated", minutes=1440) is None
    assert problem("attendance.updated", minutes=None) is None
    for value in (-1, 1441, "15", 1.5, 10**30):
        assert problem("attendance.updated", minutes=value).startswith("data.minutes "), value
    assert problem("student.withdrawn", exitReason=None) is None
    assert problem("student.withdrawn", exitReason=...) is None


def test_json_depth_counts_structure_not_strings():
    assert json_depth(b"{}") == 1
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth(b'{"a": "[[[[{{{{"}') == 1
    assert json_depth(b'{"a": "\\"[[[", "b": "\\\\", "c": [[]]}') == 3
    assert json_depth("[" * 100_000) == 100_000  # never recurses
    assert json_depth(b"[" * 100_000, stop_above=16) == 17  # stops early


# -- through the real receiver: 400 naming the field, nothing stored, the next event accepted ----
@pytest.fixture
def frozen_client(inbox):
    """A receiver whose clock says 2026-02-28 12:00 UTC (so "one year after today" is 2027-02-28)."""
    with (
        ThreadedServer(create_app(inbox, SECRET, clock=lambda: FROZEN)) as running,
        httpx.Client(base_url=running.url, timeout=20) as c,
    ):
        yield c


def nested(levels: int, event_type: str = "attendance.updated") -> bytes:
    """A valid event whose JSON nests ``levels`` deep (the event is level 1, ``data`` level 2)."""
    extra = "[" * (levels - 2) + "]" * (levels - 2)
    body = encode(make_event(event_type, ts=FROZEN, data={**VALID[event_type], "extra": None}))
    return body.replace(b'"extra": null', b'"extra": ' + extra.encode())


def assert_refused(c: httpx.Client, body, field: str) -> None:
    r = post(c, body)
    assert r.status_code == 400, (field, r.status_code, r.text)
    assert field in r.json()["error"], (field, r.json())


def test_issue_payloads_get_400_naming_the_field_and_a_valid_event_still_passes(frozen_client, inbox):
    def event(event_type="attendance.updated", **changes):
        return make_event(event_type, ts=FROZEN, data={**VALID[event_type], **changes})

    cases = [
        (event(schoolId=2_147_483_648), "data.schoolId"),
        (event(studentId="12345678901234567890"), "data.studentId"),
        (event("attendance.corrected", reason={"text": "why"}), "data.reason"),
        (event(attendanceCode="A\x00"), "data.attendanceCode"),
        (event("student.enrolled", grade="ninth"), "data.grade"),
        (nested(900), "nested deeper than 16"),
        (nested(970), "nested deeper than 16"),  # once a 503: the sender retried forever
        (nested(1_000), "nested deeper than 16"),
        (nested(30_000), "nested deeper than 16"),  # 60 KB of brackets, under the size limit
    ]
    for body, field in cases:
        assert_refused(frozen_client, body, field)
    assert stored_ids(inbox) == set()
    valid = event()
    assert post(frozen_client, valid).json() == {"status": "accepted", "eventId": valid["eventId"]}


def test_boundaries_through_the_receiver(frozen_client, inbox):
    def event(event_type="attendance.updated", **changes):
        return make_event(event_type, ts=FROZEN, data={**VALID[event_type], **changes})

    accepted = [
        event(studentId=999_999_999),
        event(schoolId=9_999),
        event(studentId=1, schoolId=1),
        event(date="2000-01-01"),
        event(date="2027-02-28"),  # one year after today
        event(attendanceCode="12345678"),
        event("attendance.corrected", reason="r" * 500, correctedBy="c" * 500),
        event("student.enrolled", grade=-2),
        event("student.enrolled", grade=18),
    ]
    refused = [
        (event(studentId=1_000_000_000), "data.studentId"),
        (event(schoolId=10_000), "data.schoolId"),
        (event(studentId=0), "data.studentId"),
        (event(schoolId=-1), "data.schoolId"),
        (event(date="1999-12-31"), "data.date"),
        (event(date="2027-03-01"), "data.date"),  # a day more
        (event(attendanceCode="123456789"), "data.attendanceCode"),
        (event("attendance.corrected", reason="r" * 501), "data.reason"),
        (event("student.enrolled", grade=19), "data.grade"),
        (event("student.enrolled", enterDate="2026-02-30"), "data.enterDate"),
        (event("student.withdrawn", leaveDate="1999-12-31"), "data.leaveDate"),
        ({**event(), "eventId": "x" * 257}, "eventId"),
        ({**event(), "eventId": "a\x00b"}, "eventId"),
        ({**event(), "eventType": "attendance.updated\n"}, "eventType"),
        ({**event(), "timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp"),
        ({**event(), "timestamp": "9999-12-31T23:59:59-12:00"}, "timestamp"),
        (nested(MAX_JSON_DEPTH + 1), "nested deeper than 16"),
        (b'{"eventId": "x", "data": {"k": "\\ud800"}}', "data.k"),  # half a surrogate pair: no database stores it
        ('{"eventId": "\ud800"}'.encode("utf-8", "surrogatepass"), "malformed JSON"),  # not UTF-8
    ]
    for body, field in refused:
        assert_refused(frozen_client, body, field)
    assert stored_ids(inbox) == set()

    ok = [*accepted, {**event(), "eventId": "x" * 256}]
    for body in ok:
        r = post(frozen_client, body)
        assert r.json() == {"status": "accepted", "eventId": body["eventId"]}, (body["data"], r.text)
    deepest = nested(MAX_JSON_DEPTH)
    assert json_depth(deepest) == MAX_JSON_DEPTH
    assert post(frozen_client, deepest).json()["status"] == "accepted"
    assert len(stored_ids(inbox)) == len(ok) + 1
