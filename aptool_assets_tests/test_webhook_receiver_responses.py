"""The webhook receiver (contract §5), request by request on real uvicorn on a loopback port with real
SQLite and PostgreSQL inboxes: signatures, and every row of the response table in the order the checks
run (size, signature, JSON, fields, timestamp, duplicate, type)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import socket
import time

import httpx
import pytest

from aptool_assets.events import signatures
from aptool_assets.events.app import create_app
from aptool_assets.events.signatures import sign, verify
from aptool_assets_tests.webhook_helpers import (  # noqa: F401 - server and client are fixtures
    PATH,
    SECRET,
    SENTINEL,
    UTC,
    ThreadedServer,
    client,
    encode,
    make_event,
    post,
    server,
    stored_ids,
)


# -- signatures -------------------------------------------------------------------------------
def test_sign_and_verify():
    body = b'{"eventId":"x"}'
    header = sign(body, SECRET)
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert header == f"sha256={digest}"
    assert verify(body, header, SECRET)
    assert verify(body, digest, SECRET)  # bare hex
    assert verify(body, digest.upper(), SECRET)
    assert verify(body, f"SHA256={digest}", SECRET)
    assert not verify(body + b" ", header, SECRET)
    assert not verify(body, header, "other-secret")
    for garbled in (None, "", "sha256=", "sha256=zz", f"sha1={digest}", digest[:-1], f"sha256={digest}00", "  "):
        assert not verify(body, garbled, SECRET)


def test_verify_compares_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signatures.hmac, "compare_digest", spy)
    body = b"{}"
    assert verify(body, sign(body, SECRET), SECRET)
    assert not verify(body, sign(body, "wrong"), SECRET)
    assert len(calls) == 2


# -- the §5 response table, on both stores ------------------------------------------------------
def test_accepted_only_once_stored_then_duplicate(client, inbox):
    event = make_event()
    r = post(client, event)
    assert r.status_code == 200
    assert r.json() == {"status": "accepted", "eventId": event["eventId"]}
    stored = inbox.event(event["eventId"])
    assert stored["status"] == "pending" and stored["payload"] == event

    r = post(client, event)
    assert (r.status_code, r.json()) == (200, {"status": "duplicate"})
    # Same id, new body (a re-send with a fresh timestamp): still a duplicate, not stored twice.
    resend = {**event, "timestamp": dt.datetime.now(UTC).isoformat()}
    assert post(client, resend).json() == {"status": "duplicate"}
    assert inbox.event(event["eventId"])["payload"] == event


@pytest.mark.parametrize(
    "event_type", ["attendance.updated", "attendance.corrected", "student.enrolled", "student.withdrawn"]
)
def test_every_supported_type_is_accepted(client, inbox, event_type):
    event = make_event(event_type)
    assert post(client, event).json() == {"status": "accepted", "eventId": event["eventId"]}
    assert inbox.event(event["eventId"])["event_type"] == event_type


def test_bare_hex_signature_is_accepted(client, inbox):
    event = make_event()
    body = encode(event)
    bare = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    r = post(client, body, signature=bare)
    assert r.status_code == 200 and r.json()["status"] == "accepted"


def test_bad_or_missing_signature_is_401(client, inbox):
    event = make_event()
    body = encode(event)
    cases = {
        "missing": post(client, body, signature=None),
        "wrong secret": post(client, body, secret="not-the-secret"),
        "garbled": post(client, body, signature="sha256=not-hex"),
        "other algorithm": post(client, body, signature="sha1=" + "0" * 40),
    }
    # HMAC of the RAW body: a signature over an equivalent re-serialization does not count.
    spaced = json.dumps(event, indent=2).encode()
    cases["re-serialized"] = post(client, spaced, signature=sign(body, SECRET))
    for name, r in cases.items():
        assert r.status_code == 401, name
        assert r.json() == {"error": "bad or missing signature"}, name
    assert stored_ids(inbox) == set()
    # The spaced body with its own signature is fine: what is signed is what was sent.
    assert post(client, spaced).status_code == 200


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def test_malformed_json_or_fields_is_400(client, inbox):
    good = make_event()
    data = good["data"]
    cases = {
        "not json": b'{"eventId": "x", ',
        "not utf-8": b'\xff\xfe{"eventId": 1}',
        "array": b"[]",
        "string": b'"hello"',
        "NaN": b'{"eventId": "x", "eventType": "attendance.updated", "timestamp": "2025-01-01T00:00:00Z", '
        b'"data": {"minutes": NaN}}',
        "no eventId": _without(good, "eventId"),
        "empty eventId": {**good, "eventId": ""},
        "numeric eventId": {**good, "eventId": 123},
        "control char in eventId": {**good, "eventId": "a\nb"},
        "no eventType": _without(good, "eventType"),
        "numeric eventType": {**good, "eventType": 7},
        "no timestamp": _without(good, "timestamp"),
        "timestamp not a date": {**good, "timestamp": "yesterday at noon"},
        "timestamp without offset": {**good, "timestamp": dt.datetime.now(UTC).replace(tzinfo=None).isoformat()},
        "timestamp as epoch": {**good, "timestamp": int(time.time())},
        "no data": _without(good, "data"),
        "data not an object": {**good, "data": [data]},
        "period missing": {**good, "data": _without(data, "period")},
        "attendanceCode missing": {**good, "data": _without(data, "attendanceCode")},
        "bad date": {**good, "data": {**data, "date": "10/01/2025"}},
        "studentId not an id": {**good, "data": {**data, "studentId": SENTINEL}},
        "corrected without reason": make_event(
            "attendance.corrected",
            data={
                "studentId": 1,
                "schoolId": 2,
                "date": "2025-10-01",
                "period": "1",
                "originalCode": "A",
                "newCode": "E",
                "correctedBy": "x",
            },
        ),
        "enrolled without grade": make_event(
            "student.enrolled", data={"studentId": 1, "schoolId": 2, "enterDate": "2025-08-14"}
        ),
        "withdrawn without leaveDate": make_event("student.withdrawn", data={"studentId": 1, "schoolId": 2}),
    }
    for name, body in cases.items():
        r = post(client, body)
        assert r.status_code == 400, name
        payload = r.json()
        assert set(payload) == {"error"} and isinstance(payload["error"], str), name
        assert SENTINEL not in r.text, name
    assert stored_ids(inbox) == set()

    # `period` present and null (all day), `minutes` and `exitReason` optional: accepted.
    ok = [
        make_event(data={**data, "period": None}),
        make_event(data=_without(data, "minutes")),
        make_event("student.withdrawn", data={"studentId": "1001", "schoolId": 994, "leaveDate": "2025-12-19"}),
        make_event(
            "student.withdrawn",
            data={"studentId": 1001, "schoolId": 994, "leaveDate": "2025-12-19", "exitReason": "T160"},
        ),
        make_event(ts=dt.datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
        make_event(ts=dt.datetime.now(dt.timezone(dt.timedelta(hours=-8))).isoformat()),
    ]
    for event in ok:
        assert post(client, event).json()["status"] == "accepted", event


def test_replayed_timestamp_is_401_and_a_stale_event_is_kept_as_a_dead_letter(client, inbox):
    now = dt.datetime.now(UTC)
    stale = make_event(ts=now - dt.timedelta(minutes=6))
    future = make_event(ts=now + dt.timedelta(minutes=2))
    for event in (stale, future):
        r = post(client, event)
        assert r.status_code == 401
        assert "error" in r.json()
    # The stale one is kept (contract §5: a retried delivery after an outage is never lost), the
    # future one is not: its sender's clock is wrong, and it is refused until it is not.
    assert stored_ids(inbox) == {stale["eventId"]}
    (dead,) = inbox.dead_letters()
    assert (dead["event_id"], dead["reason"]) == (stale["eventId"], "stale")
    assert inbox.event(stale["eventId"])["payload"] == stale
    for event in (make_event(ts=now - dt.timedelta(minutes=4)), make_event(ts=now + dt.timedelta(seconds=30))):
        assert post(client, event).json()["status"] == "accepted"


def test_replay_window_uses_the_injected_clock(inbox):
    frozen = dt.datetime(2025, 10, 1, 12, 0, tzinfo=UTC)
    app = create_app(inbox, SECRET, clock=lambda: frozen)
    with ThreadedServer(app) as running, httpx.Client(base_url=running.url) as c:
        assert post(c, make_event(ts=frozen - dt.timedelta(minutes=4, seconds=59))).status_code == 200
        assert post(c, make_event(ts=frozen - dt.timedelta(minutes=5, seconds=1))).status_code == 401
        assert post(c, make_event(ts=frozen + dt.timedelta(seconds=59))).status_code == 200
        assert post(c, make_event(ts=frozen + dt.timedelta(seconds=61))).status_code == 401


def test_unsupported_type_is_422_and_dead_lettered(client, inbox):
    event = make_event("grade.posted")
    r = post(client, event)
    assert r.status_code == 422
    assert set(r.json()) == {"error"} and SENTINEL not in r.text
    stored = inbox.event(event["eventId"])
    assert stored["status"] == "dead_letter" and stored["payload"] == event
    (dl,) = inbox.dead_letters()
    assert dl["event_id"] == event["eventId"] and dl["event_type"] == "grade.posted"
    assert dl["reason"] == "unsupported event type"
    assert inbox.dead_letter_detail(event["eventId"])["payload"] == event
    # A re-delivery is a duplicate: the duplicate check comes before the type check.
    assert (post(client, event).status_code, post(client, event).json()) == (200, {"status": "duplicate"})
    assert len(inbox.dead_letters()) == 1


def test_64_kib_boundary(client, inbox):
    limit = 65536

    def event_of_size(size: int) -> bytes:
        event = make_event(data={**make_event()["data"], "padding": ""})
        base = len(encode(event))
        event["data"]["padding"] = "x" * (size - base)
        body = encode(event)
        assert len(body) == size
        return body

    exact = event_of_size(limit)
    r = post(client, exact)
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    over = event_of_size(limit + 1)
    r = post(client, over)
    assert r.status_code == 413 and set(r.json()) == {"error"}
    assert len(stored_ids(inbox)) == 1

    # Without Content-Length (chunked), the bytes actually read are counted too.
    def chunks():
        for i in range(0, len(over), 4096):
            yield over[i : i + 4096]

    r = client.post(PATH, content=chunks(), headers={"X-Aeries-Signature": sign(over, SECRET)})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 413


def test_oversized_content_length_is_refused_without_reading(server):
    """A client that announces 100 MB gets 413 at once: the receiver does not wait for the body."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 100000000\r\nX-Aeries-Signature: sha256={'0' * 64}\r\n\r\n".encode()
            + b"{" * 1000
        )
        started = time.monotonic()
        response = s.recv(4096).decode("latin-1")
    assert response.startswith("HTTP/1.1 413")
    assert time.monotonic() - started < 3


def test_check_order(client, inbox):
    """size → signature → JSON → fields → timestamp (future) → stale/duplicate → type → store."""
    huge = b'{"eventId": "' + b"x" * 70000 + b'"}'
    assert post(client, huge, signature="sha256=" + "0" * 64).status_code == 413  # size before signature
    assert post(client, b"{nope", signature=None).status_code == 401  # signature before JSON
    stale = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    bad_fields_and_stale = make_event(ts=stale, data={"studentId": 1})
    assert post(client, bad_fields_and_stale).status_code == 400  # fields before timestamp

    event = make_event()
    assert post(client, event).json()["status"] == "accepted"
    stale_duplicate = {**event, "timestamp": stale.isoformat()}
    r = post(client, stale_duplicate)
    assert (r.status_code, r.json()) == (200, {"status": "duplicate"})  # a stored eventId, whatever its age
    future_duplicate = {**event, "timestamp": (dt.datetime.now(UTC) + dt.timedelta(hours=1)).isoformat()}
    assert post(client, future_duplicate).status_code == 401  # a future timestamp is refused before storing
    other_type_duplicate = {**event, "eventType": "grade.posted"}
    r = post(client, other_type_duplicate)
    assert (r.status_code, r.json()) == (200, {"status": "duplicate"})  # duplicate before type
    assert inbox.dead_letters() == []
