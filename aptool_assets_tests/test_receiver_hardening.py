"""The receiver hardened (issue #12 §2-§3): late signed events kept as dead letters, secret rotation
and length, plain HTTP beyond loopback, slow clients, and the receiver running as a least-privilege
PostgreSQL role -- real uvicorn, real stores, real processes."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import statistics
import threading
import time
import uuid

import httpx
import psycopg
import pytest

from aptool_assets.events.app import PREVIOUS_SECRET_ENV, SECRET_ENV, create_app, webhook_secrets
from aptool_assets.events.server import ServerLimits, is_loopback
from aptool_assets.settings import ConfigurationError
from aptool_assets.storage.inbox import SqliteInbox
from aptool_assets_tests.conftest import create_database, drop_database, postgres_admin_url
from aptool_assets_tests.test_cli import clean_env, run
from aptool_assets_tests.webhook_helpers import (
    PATH,
    SECRET,
    UTC,
    ReceiverProcess,
    ThreadedServer,
    make_event,
    post,
    stored_ids,
)

OLD_SECRET = "old-secret-being-rotated-out-0123456789"
OTHER_SECRET = "some-other-secret-nobody-configured-0123"


# -- §2: signed events that arrive late are kept ------------------------------------------------
def test_late_deliveries_after_an_outage_are_kept_and_replayable_once(inbox):
    """The sender retries every delivery of an outage longer than 5 minutes: each is stored as a
    dead letter ``stale`` (401), a further retry is ``duplicate``, and a replay requeues it once."""
    clock = {"now": dt.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)}
    app = create_app(inbox, SECRET, clock=lambda: clock["now"])
    delivered = make_event(ts=clock["now"], event_id="stored-answer-lost")
    during_outage = [make_event(ts=clock["now"], event_id=f"outage-{i}") for i in range(3)]
    with ThreadedServer(app) as running, httpx.Client(base_url=running.url, timeout=20) as c:
        assert post(c, delivered).json()["status"] == "accepted"  # stored; suppose the answer was lost
        clock["now"] += dt.timedelta(minutes=40)  # the outage ends; the sender retries everything
        for event in during_outage:
            r = post(c, event)
            assert r.status_code == 401 and "kept as a dead letter" in r.json()["error"]
        r = post(c, delivered)
        assert (r.status_code, r.json()) == (200, {"status": "duplicate"})  # whatever its age
        for event in during_outage:  # the retry of a stale delivery: nothing is stored twice
            assert post(c, event).json() == {"status": "duplicate"}

    dead = {d["event_id"]: d for d in inbox.dead_letters()}
    assert set(dead) == {e["eventId"] for e in during_outage}
    assert {d["reason"] for d in dead.values()} == {"stale"}
    for event in during_outage:
        row = inbox.event(event["eventId"])
        assert row["status"] == "dead_letter" and row["payload"] == event and row["last_error"] == "stale"
    assert inbox.event(delivered["eventId"])["status"] == "pending"

    assert inbox.replay([during_outage[0]["eventId"]], dry_run=True) == [during_outage[0]["eventId"]]
    assert inbox.event(during_outage[0]["eventId"])["status"] == "dead_letter"  # a dry run changes nothing
    assert inbox.replay([during_outage[0]["eventId"]]) == [during_outage[0]["eventId"]]
    assert inbox.replay([during_outage[0]["eventId"]]) == []  # once
    pending = [e.event_id for e in inbox.pending()]
    assert pending.count(during_outage[0]["eventId"]) == 1 and delivered["eventId"] in pending


# -- §3: secrets ---------------------------------------------------------------------------------
def test_secrets_are_stripped_at_least_32_characters_and_never_shown():
    good = "  " + "s" * 32 + "\n"
    assert webhook_secrets({SECRET_ENV: good}) == ("s" * 32,)
    assert webhook_secrets({SECRET_ENV: good, PREVIOUS_SECRET_ENV: f" {OLD_SECRET} "}) == ("s" * 32, OLD_SECRET)
    assert webhook_secrets({SECRET_ENV: good, PREVIOUS_SECRET_ENV: "  "}) == ("s" * 32,)
    short = "t" * 31
    cases = {
        SECRET_ENV: {},
        f"{SECRET_ENV} ": {SECRET_ENV: " \n"},
        f"{SECRET_ENV}  ": {SECRET_ENV: f"  {short}  "},  # 35 characters, 31 once stripped
        PREVIOUS_SECRET_ENV: {SECRET_ENV: good, PREVIOUS_SECRET_ENV: short},
    }
    for variable, env in cases.items():
        with pytest.raises(ConfigurationError) as refused:
            webhook_secrets(env)
        assert variable.strip() in str(refused.value) and short not in str(refused.value)
    with pytest.raises(ConfigurationError):
        create_app(SqliteInbox("unused.sqlite"), short)


def test_the_cli_refuses_a_short_secret_naming_the_variable_not_the_value(tmp_path):
    short = "short-secret-value-x"
    proc = run(["webhooks", "serve", "--port", "1"], tmp_path, clean_env(APTOOL_WEBHOOK_SECRET=short))
    assert proc.returncode == 1 and SECRET_ENV in proc.stderr and "32" in proc.stderr
    assert short not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    env = clean_env(APTOOL_WEBHOOK_SECRET=SECRET, APTOOL_WEBHOOK_SECRET_PREVIOUS=short)
    proc = run(["webhooks", "serve", "--port", "1"], tmp_path, env)
    assert proc.returncode == 1 and PREVIOUS_SECRET_ENV in proc.stderr and short not in proc.stderr


def test_the_receiver_does_not_start_without_its_inbox_and_says_so_in_one_line(postgres_url, tmp_path):
    missing_db = postgres_url.rsplit("/", 1)[0].replace("://postgres@", "://postgres:pw-x7q@") + "/no_such_db_x7q"
    proc = run(
        ["webhooks", "serve", "--port", "1"],
        tmp_path,
        clean_env(APTOOL_WEBHOOK_SECRET=SECRET, APTOOL_DATABASE_URL=missing_db),
    )
    assert proc.returncode == 1 and "not reachable" in proc.stderr and "postgres:***@" in proc.stderr
    assert "pw-x7q" not in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_rotation_accepts_both_secrets_and_warns_about_plain_http_beyond_loopback(tmp_path):
    env = clean_env(
        APTOOL_WEBHOOK_SECRET=f"  {SECRET}\n",  # as a careless `echo` leaves it: stripped
        APTOOL_WEBHOOK_SECRET_PREVIOUS=OLD_SECRET,
        APTOOL_INBOX_PATH=str(tmp_path / "inbox.sqlite"),
        DAGSTER_HOME=str(tmp_path),
    )
    with ReceiverProcess(env, tmp_path / "receiver.log", "--host", "0.0.0.0") as receiver:
        receiver.wait_healthy()
        with httpx.Client(base_url=receiver.url, timeout=20) as c:
            new, old, other = make_event(), make_event(), make_event()
            assert post(c, new).json()["status"] == "accepted"
            assert post(c, old, secret=OLD_SECRET).json()["status"] == "accepted"
            assert post(c, other, secret=OTHER_SECRET).status_code == 401
            assert post(c, make_event(), secret=f"  {SECRET}\n").status_code == 401  # the stripped one counts
        log = receiver.log()
    assert "serving plain HTTP on 0.0.0.0" in log and "TLS" in log
    assert SECRET not in log and OLD_SECRET not in log
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("receiver.example.org")


# -- §3: slow clients ----------------------------------------------------------------------------
class Tricklers:
    """``n`` connections that each send one byte a second: half never finish their headers, half
    send complete headers and then trickle the body."""

    def __init__(self, port: int, n: int, stop_after: float) -> None:
        self.stop_at = time.monotonic() + stop_after  # no byte near the deadline: a send to a closed
        # socket would make the kernel answer with a reset, and a reset can discard the 408 unread
        head = f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        self.streams: list[tuple[socket.socket, bytes]] = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 2:
                body_first = f"{head}Content-Length: 5000\r\nX-Aeries-Signature: sha256={'0' * 64}\r\n\r\n"
                s.sendall(body_first.encode())
                self.streams.append((s, b"{" * 5000))
            else:
                self.streams.append((s, (head + "X-Padding: " + "p" * 500).encode()))
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stop.wait(1.0) and time.monotonic() < self.stop_at:
            for s, data in self.streams:
                with contextlib.suppress(OSError):  # closed by the server: what the deadline is for
                    s.send(data[self.sent : self.sent + 1])
            self.sent += 1

    def answers(self) -> list[bytes | None]:
        """What each connection received until the server closed it (None: still open after 2 s)."""
        self.stop.set()
        self.thread.join(5)
        out: list[bytes | None] = []
        deadline = time.monotonic() + 2.0  # for all of them together
        for s, _ in self.streams:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            data = b""
            try:
                while chunk := s.recv(4096):
                    data += chunk
            except (ConnectionResetError, BrokenPipeError):
                pass
            except TimeoutError:
                data = None
            out.append(data)
            s.close()
        return out


def _timed_posts(url: str, n: int) -> list[float]:
    """``n`` valid events, each on a new connection (as a sender's first delivery); their answer times."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        with httpx.Client(base_url=url, timeout=30) as c:
            r = post(c, make_event())
        times.append(time.perf_counter() - started)
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    return times


def test_200_trickling_connections_do_not_stop_a_valid_event(tmp_path):
    """200 connections sending a byte a second: a valid event on a new connection is answered within a
    second of its quiet-machine time, and the read deadline closes every trickler (408 when its headers
    never completed)."""
    limits = ServerLimits(read_timeout=6.0)
    with SqliteInbox(tmp_path / "inbox.sqlite") as box:
        box.setup()
        with ThreadedServer(create_app(box, SECRET), limits=limits) as running:
            quiet = _timed_posts(running.url, 5)
            opened = time.monotonic()
            tricklers = Tricklers(running.port, 200, stop_after=limits.read_timeout - 1.0)
            time.sleep(1.5)  # every trickler has sent a byte or more
            assert len(running.server.server_state.connections) >= 200  # all held open by the server
            loaded = _timed_posts(running.url, 5)
            assert time.monotonic() - opened < limits.read_timeout, "too slow to measure under load"
            time.sleep(max(0.0, opened + limits.read_timeout + 1.5 - time.monotonic()))
            answers = tricklers.answers()
            ms = [f"median {statistics.median(t) * 1000:.1f} ms, max {max(t) * 1000:.1f} ms" for t in (quiet, loaded)]
            print(f"\nanswer times: quiet {ms[0]}; with 200 tricklers {ms[1]}")
            assert max(loaded) < max(quiet) + 1.0, (quiet, loaded)
            assert _timed_posts(running.url, 1)  # still serving after the deadline struck
    assert all(a is not None for a in answers), f"{answers.count(None)} tricklers still open after the deadline"
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers[0::2]), answers[0]  # headers never completed
    assert all(a == b"" for a in answers[1::2]), answers[1]  # body late: closed, no answer


def test_connection_limit_answers_503_until_the_read_deadline_frees_the_slots(tmp_path):
    limits = ServerLimits(max_connections=20, read_timeout=2.0)
    with SqliteInbox(tmp_path / "inbox.sqlite") as box:
        box.setup()
        with ThreadedServer(create_app(box, SECRET), limits=limits) as running:
            idle = [socket.create_connection(("127.0.0.1", running.port), timeout=5) for _ in range(25)]
            deadline = time.monotonic() + 10
            while len(running.server.server_state.connections) < 25:  # accepted by uvicorn, not just the kernel
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with httpx.Client(base_url=running.url, timeout=10) as c:
                assert post(c, make_event()).status_code == 503  # over the limit: refused, not queued forever
            time.sleep(limits.read_timeout + 1.0)
            for s in idle:
                s.settimeout(2)
                assert s.recv(100).startswith(b"HTTP/1.1 408")
                s.close()
            with httpx.Client(base_url=running.url, timeout=10) as c:
                assert post(c, make_event()).json()["status"] == "accepted"
        assert len(stored_ids(box)) == 1


# -- §3: least privilege on PostgreSQL -----------------------------------------------------------
@pytest.fixture
def receiver_role(postgres_url):
    """A throwaway database holding a published table, and a new login role with no privileges."""
    db_url = create_database("aptool_recv")
    role = f"aptool_receiver_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as con:
        con.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'receiver-pw'")
        con.execute("CREATE SCHEMA aptool")
        con.execute("CREATE TABLE aptool.students (student_id int PRIMARY KEY, school_code int)")
        con.execute("INSERT INTO aptool.students VALUES (1001, 994)")
    host_db = db_url.split("@", 1)[1]
    try:
        yield db_url, role, f"postgresql://{role}:receiver-pw@{host_db}"
    finally:
        drop_database(db_url)
        with psycopg.connect(postgres_admin_url(), autocommit=True) as con:
            con.execute(f"DROP ROLE IF EXISTS {role}")


def _tables(db_url: str) -> set[str]:
    with psycopg.connect(db_url) as con:
        rows = con.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'aptool'").fetchall()
    return {r[0] for r in rows}


def test_the_receiver_runs_as_a_role_that_can_only_insert_into_the_inbox(receiver_role, tmp_path):
    db_url, role, role_url = receiver_role
    base_env = clean_env(APTOOL_WEBHOOK_SECRET=SECRET)

    # Before the grant: the receiver refuses to start, names the fix, and runs no DDL.
    refused = run(["webhooks", "serve", "--port", "1"], tmp_path, {**base_env, "APTOOL_DATABASE_URL": role_url})
    assert refused.returncode == 1 and f"aptool db grant-receiver {role}" in refused.stderr, refused.stderr
    assert "receiver-pw" not in refused.stderr and _tables(db_url) == {"students"}

    granted = run(["db", "grant-receiver", role], tmp_path, {**base_env, "APTOOL_DATABASE_URL": db_url})
    assert granted.returncode == 0, granted.stderr
    assert f"granted {role}" in granted.stdout and "warning" not in granted.stderr
    again = run(["db", "grant-receiver", role], tmp_path, {**base_env, "APTOOL_DATABASE_URL": db_url})
    assert again.returncode == 0  # idempotent
    missing = run(["db", "grant-receiver", "no_such_role"], tmp_path, {**base_env, "APTOOL_DATABASE_URL": db_url})
    assert missing.returncode == 1 and "does not exist" in missing.stderr

    env = {**base_env, "APTOOL_DATABASE_URL": role_url}
    with ReceiverProcess(env, tmp_path / "receiver.log") as receiver:
        receiver.wait_healthy()
        with httpx.Client(base_url=receiver.url, timeout=20) as c:
            event = make_event()
            assert post(c, event).json() == {"status": "accepted", "eventId": event["eventId"]}
            assert post(c, event).json() == {"status": "duplicate"}
            stale = make_event(ts=dt.datetime.now(UTC) - dt.timedelta(hours=1))
            assert post(c, stale).status_code == 401
            assert post(c, make_event("grade.posted")).status_code == 422
        assert "permission denied" not in receiver.log()

    with psycopg.connect(db_url) as con:  # as the publisher: what the receiver stored
        rows = dict(con.execute("SELECT event_id, status FROM aptool.webhook_events").fetchall())
    assert rows[event["eventId"]] == "pending" and rows[stale["eventId"]] == "dead_letter" and len(rows) == 3

    forbidden = [
        "SELECT * FROM aptool.students",
        "INSERT INTO aptool.students VALUES (2, 2)",
        "UPDATE aptool.students SET school_code = 1",
        "SELECT payload FROM aptool.webhook_events",
        "SELECT payload FROM aptool.dead_letter_events",
        "UPDATE aptool.webhook_events SET status = 'applied'",
        "DELETE FROM aptool.webhook_events",
        "TRUNCATE aptool.dead_letter_events",
        "CREATE TABLE aptool.mine (x int)",
        "DROP TABLE aptool.webhook_events",
        "ALTER TABLE aptool.webhook_events ADD COLUMN x int",
    ]
    with psycopg.connect(role_url, autocommit=True) as con:
        for statement in forbidden:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                con.execute(statement)
        assert con.execute("SELECT count(seq) FROM aptool.webhook_events").fetchone()[0] == 3  # what it needs
    assert _tables(db_url) == {"students", "webhook_events", "dead_letter_events"}


def test_grant_receiver_warns_about_a_role_with_more_than_it_needs(receiver_role, tmp_path):
    db_url, role, _ = receiver_role
    with psycopg.connect(db_url, autocommit=True) as con:
        con.execute(f"ALTER ROLE {role} CREATEDB")
        con.execute(f"GRANT SELECT ON aptool.students TO {role}")
    env = clean_env(APTOOL_DATABASE_URL=db_url)
    proc = run(["db", "grant-receiver", role], tmp_path, env)
    assert proc.returncode == 0
    assert "CREATEDB" in proc.stderr and "aptool.students" in proc.stderr
    duck = run(["db", "grant-receiver", role], tmp_path, clean_env(APTOOL_DATABASE_URL="duckdb:///x.duckdb"))
    assert duck.returncode == 1 and "PostgreSQL" in duck.stderr


def test_a_body_answered_early_is_not_answered_twice(tmp_path):
    """413 on the declared length, then the client keeps sending: the deadline closes the connection
    without a second (408) answer."""
    limits = ServerLimits(read_timeout=2.0)
    with SqliteInbox(tmp_path / "inbox.sqlite") as box:
        box.setup()
        with ThreadedServer(create_app(box, SECRET), limits=limits) as running:
            s = socket.create_connection(("127.0.0.1", running.port), timeout=10)
            s.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{{".encode())
            received = s.recv(4096)
            assert received.startswith(b"HTTP/1.1 413")
            for _ in range(6):  # more body, slowly, past the deadline
                time.sleep(0.5)
                with contextlib.suppress(OSError):
                    s.send(b"x")
            s.settimeout(5)
            rest = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := s.recv(4096):
                    rest += chunk
            s.close()
    assert b"408" not in received + rest
