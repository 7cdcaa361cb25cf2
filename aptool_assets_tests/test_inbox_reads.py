"""Reading the inbox never raises and never creates (issue #12 §1 and §7), on both stores: a stored
payload that cannot be decoded (nested 1,000 levels deep, not JSON) is handed out with a marker
instead of failing the sensor's every tick, and a missing store is reported, not made."""

from __future__ import annotations

import datetime as dt
import sqlite3

import psycopg
import pytest

from aptool_assets.storage.inbox import PostgresInbox, SqliteInbox, open_inbox
from aptool_assets.storage.inbox.payload import MAX_STORED_DEPTH, decode_payload
from aptool_assets_tests.conftest import schema_reset

UTC = dt.UTC


def insert_raw(box, event_id: str, payload_text: str) -> None:
    """A row as an older receiver (or a hand-written INSERT) could have left it."""
    now = dt.datetime.now(UTC)
    sql = (
        "INSERT INTO {t} (event_id, event_type, event_timestamp, received_at, payload, status, attempts, "
        "updated_at) VALUES (%s, 'attendance.updated', %s, %s, %s, 'pending', 0, %s)"
    )
    if isinstance(box, PostgresInbox):
        with psycopg.connect(box.url, autocommit=True) as con:
            con.execute(sql.format(t="aptool.webhook_events"), (event_id, now, now, payload_text, now))
        return
    con = sqlite3.connect(box.path)
    try:
        params = (event_id, now.isoformat(), now.isoformat(), payload_text, now.isoformat())
        con.execute(sql.format(t="webhook_events").replace("%s", "?"), params)
        con.commit()
    finally:
        con.close()


def deep(levels: int) -> str:
    return '{"eventId": "x", "data": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def test_pending_hands_out_undecodable_payloads_with_a_marker(inbox):
    good = {"eventId": "good", "eventType": "attendance.updated", "timestamp": "2026-03-02T09:00:00+00:00"}
    inbox.store("before", "attendance.updated", dt.datetime.now(UTC), {**good, "eventId": "before"}, b"{}")
    insert_raw(inbox, "deep-1000", deep(1_000))  # once a RecursionError in pending(): the sensor tick failed
    insert_raw(inbox, "deep-65", deep(MAX_STORED_DEPTH + 1))
    insert_raw(inbox, "deep-64", deep(MAX_STORED_DEPTH))
    insert_raw(inbox, "array", "[1, 2]")
    if isinstance(inbox, SqliteInbox):  # PostgreSQL's json and timestamptz types refuse these themselves
        insert_raw(inbox, "not-json", '{"eventId": ')
        insert_raw(inbox, "bad-time", '{"eventId": "bad-time"}')
        con = sqlite3.connect(inbox.path)
        con.execute("UPDATE webhook_events SET event_timestamp = 'yesterday' WHERE event_id = 'bad-time'")
        con.commit()
        con.close()
    inbox.store("after", "attendance.updated", dt.datetime.now(UTC), {**good, "eventId": "after"}, b"{}")

    events = {e.event_id: e for e in inbox.pending()}
    assert events["before"].payload_error is None and events["after"].payload["eventId"] == "after"
    assert events["deep-1000"].payload_error == f"stored payload is nested deeper than {MAX_STORED_DEPTH} levels"
    assert events["deep-1000"].payload == {} and events["deep-1000"].data == {}
    assert events["deep-65"].payload_error and events["deep-64"].payload_error is None
    assert events["array"].payload_error == "stored payload is not a JSON object"
    if isinstance(inbox, SqliteInbox):
        assert events["not-json"].payload_error.startswith("stored payload is not valid JSON")
        assert events["bad-time"].payload_error == "stored event_timestamp is not a timezone-aware timestamp"
        assert events["bad-time"].event_timestamp.tzinfo is not None and events["bad-time"].payload == {}
    assert [e for e in inbox.pending() if e.payload_error is None] == [
        events[i] for i in ("before", "deep-64", "after")
    ]

    # What happened to it, and its dead letter, can be read too.
    assert inbox.event("deep-1000")["payload_error"].startswith("stored payload is nested")
    assert inbox.dead_letter("deep-1000", events["deep-1000"].payload_error)
    detail = inbox.dead_letter_detail("deep-1000")
    assert detail["payload"] == {} and detail["payload_error"] and detail["inbox"]["status"] == "dead_letter"
    assert "deep-1000" not in {e.event_id for e in inbox.pending()}


def test_decode_payload_never_raises():
    assert decode_payload('{"a": 1}') == ({"a": 1}, None)
    assert decode_payload(b'{"a": 1}') == ({"a": 1}, None)
    assert decode_payload({"a": 1}) == ({"a": 1}, None)
    for stored in ("[" * 200_000, "{" * 50 + "}" * 49, b"\xff\xfe", None, 7, "NaN", '"text"'):
        payload, error = decode_payload(stored)
        assert payload == {} and error, stored


def test_exists_reports_without_creating(store_url, tmp_path):
    if store_url.startswith("postgresql"):
        schema_reset(store_url)
        box = open_inbox(store_url)
        try:
            assert not box.exists()
            with psycopg.connect(store_url) as con:
                assert con.execute("SELECT to_regnamespace('aptool')").fetchone()[0] is None  # nothing made
            box.setup()
            assert box.exists()
        finally:
            box.close()
        return
    path = tmp_path / "sub" / "inbox.sqlite"
    box = SqliteInbox(path)
    try:
        assert not box.exists() and not path.exists() and not path.parent.exists()
        path.parent.mkdir()
        sqlite3.connect(path).close()  # an empty file: not an inbox
        assert not box.exists()
        box.setup()
        assert box.exists()
    finally:
        box.close()


@pytest.mark.parametrize("garbage", [b"not a database at all" * 100, b""])
def test_a_file_that_is_not_an_inbox_is_not_one(tmp_path, garbage):
    path = tmp_path / "inbox.sqlite"
    path.write_bytes(garbage)
    assert not SqliteInbox(path).exists()
    assert path.read_bytes() == garbage
