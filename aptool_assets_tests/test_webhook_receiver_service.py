"""The webhook receiver (contract §5) as a running service, on real uvicorn with real SQLite and
PostgreSQL inboxes: health, concurrent deliveries, arrival order, what it logs, refusing to start
without a secret, and a kill -9 in mid-burst losing no acknowledged event."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from aptool_assets.events.app import create_app, serve
from aptool_assets.events.signatures import sign
from aptool_assets.settings import ConfigurationError
from aptool_assets.storage.inbox import open_inbox
from aptool_assets_tests.conftest import create_database, drop_database
from aptool_assets_tests.webhook_helpers import (  # noqa: F401 - server and client are fixtures
    PATH,
    SECRET,
    SENTINEL,
    UTC,
    ThreadedServer,
    client,
    encode,
    free_port,
    make_event,
    post,
    server,
    stored_ids,
)

REPO = Path(__file__).resolve().parents[1]


def test_healthz_up(client):
    r = client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_healthz_down_when_the_store_is_gone(store_url, tmp_path):
    if store_url.startswith("postgresql"):
        db_url = create_database("aptool_hz")
        box = open_inbox(db_url)
        box.setup()
        box.health_timeout = 1.0
    else:
        box = open_inbox(store_url)
        box.setup()
    try:
        with ThreadedServer(create_app(box, SECRET)) as running, httpx.Client(base_url=running.url, timeout=10) as c:
            assert c.get("/healthz").status_code == 200
            if store_url.startswith("postgresql"):
                drop_database(db_url)
            else:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{box.path}{suffix}").unlink(missing_ok=True)
            r = c.get("/healthz")
            assert r.status_code == 503 and r.json()["status"] == "unavailable"
            # Events are not acknowledged while the store is gone.
            if store_url.startswith("postgresql"):
                assert post(c, make_event()).status_code == 503
    finally:
        box.close()
        if store_url.startswith("postgresql"):
            drop_database(db_url)


def test_same_event_from_20_concurrent_clients_is_accepted_once(server, inbox):
    event = make_event()
    body = encode(event)
    barrier = threading.Barrier(20)
    results: list[str] = []
    lock = threading.Lock()

    def deliver():
        with httpx.Client(base_url=server.url, timeout=20) as c:
            c.get("/healthz")  # connect first, so the posts really race
            barrier.wait()
            r = c.post(PATH, content=body, headers={"X-Aeries-Signature": sign(body, SECRET)})
            with lock:
                results.append(r.json()["status"])

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["accepted"] + ["duplicate"] * 19
    assert stored_ids(inbox) == {event["eventId"]}


def test_concurrent_distinct_events_round_trip_exactly(server, inbox):
    """Concurrent deliveries are group-committed; each payload is stored exactly as sent."""
    events = [
        make_event(
            "attendance.corrected",
            event_id=f"uni-{i}",
            data={
                "studentId": 1000 + i,
                "schoolId": 994,
                "date": "2025-10-01",
                "period": "2",
                "originalCode": "A",
                "newCode": "E",
                "reason": f'élève {i} — 生徒 "quoted" \\ back',
                "correctedBy": "clerk",
                "note": "an unknown field is kept as sent: \u0000 \n",
            },
        )
        for i in range(48)
    ]
    results: dict[str, dict] = {}
    lock = threading.Lock()

    def deliver(chunk):
        with httpx.Client(base_url=server.url, timeout=20) as c:
            for event in chunk:
                r = post(c, event)
                with lock:
                    results[event["eventId"]] = r.json()

    threads = [threading.Thread(target=deliver, args=(events[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(results[e["eventId"]] == {"status": "accepted", "eventId": e["eventId"]} for e in events)
    for event in events:
        assert inbox.event(event["eventId"])["payload"] == event


def test_pending_follows_arrival_order(client, inbox):
    ids = [f"ord-{i}" for i in range(10)]
    for i, event_id in enumerate(ids):
        # Timestamps in reverse: arrival order (seq) is what pending() follows.
        ts = dt.datetime.now(UTC) - dt.timedelta(seconds=i)
        assert post(client, make_event(event_id=event_id, ts=ts)).json()["status"] == "accepted"
    pending = inbox.pending()
    assert [e.event_id for e in pending] == ids
    assert [e.seq for e in pending] == sorted(e.seq for e in pending)


def test_logs_carry_ids_and_outcomes_never_contents_or_secret(inbox, caplog):
    caplog.set_level(logging.DEBUG, logger="aptool_assets.events")
    accepted = make_event("attendance.corrected")  # its reason is the sentinel
    unsupported = make_event("grade.posted")
    bad_data = make_event(data={"studentId": SENTINEL})
    with (
        ThreadedServer(create_app(inbox, SECRET, summary_interval=0.2)) as running,
        httpx.Client(base_url=running.url) as c,
    ):
        post(c, accepted)
        post(c, accepted)
        post(c, unsupported)
        post(c, bad_data)
        post(c, encode(make_event()), secret="wrong")
        time.sleep(0.5)
    text = caplog.text
    assert f"{accepted['eventId']!r} ('attendance.corrected'): accepted" in text
    assert f"{accepted['eventId']!r} ('attendance.corrected'): duplicate" in text
    assert unsupported["eventId"] in text and "unsupported event type" in text
    assert bad_data["eventId"] in text and "missing required keys" in text
    assert "bad or missing signature" in text
    # The periodic summary counts outcomes.
    assert "accepted 1" in text and "duplicate 1" in text and "401 signature 1" in text
    assert SENTINEL not in text
    assert SECRET not in text
    rejections = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(rejections) == 3  # one line per rejected delivery; accepted ones are DEBUG


def test_serve_refuses_to_start_without_a_secret(monkeypatch):
    monkeypatch.delenv("APTOOL_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match="APTOOL_WEBHOOK_SECRET"):
        serve(port=free_port())
    monkeypatch.setenv("APTOOL_WEBHOOK_SECRET", "   ")
    with pytest.raises(ConfigurationError):
        serve(port=free_port())
    with pytest.raises(ValueError):
        create_app(open_inbox("duckdb:///unused.duckdb"), "")


# -- durability: kill -9 the receiver in mid-burst ----------------------------------------------
def test_every_accepted_event_survives_kill_9(store_url, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "APTOOL_WEBHOOK_SECRET": SECRET, "DAGSTER_HOME": str(tmp_path)}
    code = (
        f"from aptool_assets.events.app import serve; serve(host='127.0.0.1', port={port}, database_url={store_url!r})"
    )
    log = open(tmp_path / "receiver.log", "wb")  # noqa: SIM115 - the receiver process writes to it until stopped
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "receiver.log").read_text()
            assert time.monotonic() < deadline, "receiver did not come up"
            time.sleep(0.05)

        accepted: set[str] = set()
        transport_errors = 0
        lock = threading.Lock()
        killed = threading.Event()

        def fire(worker: int) -> None:
            nonlocal transport_errors
            with httpx.Client(base_url=base, timeout=5) as c:
                for i in range(100_000):
                    event = make_event(event_id=f"burst-{worker}-{i}")
                    try:
                        r = post(c, event)
                    except httpx.TransportError:
                        with lock:
                            transport_errors += 1
                        if killed.is_set():
                            return
                        continue
                    if r.status_code == 200 and r.json() == {"status": "accepted", "eventId": event["eventId"]}:
                        with lock:
                            accepted.add(event["eventId"])

        threads = [threading.Thread(target=fire, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(accepted) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-burst: requests are in flight
        killed.set()
        proc.wait(10)
        for t in threads:
            t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()

    assert len(accepted) >= 200
    assert transport_errors >= 1  # the kill really cut the burst
    box = open_inbox(store_url)
    try:
        stored = stored_ids(box)
    finally:
        box.close()
    lost = accepted - stored
    assert not lost, f"{len(lost)} acknowledged events missing after kill -9, e.g. {sorted(lost)[:5]}"
    assert len(stored) >= len(accepted)
