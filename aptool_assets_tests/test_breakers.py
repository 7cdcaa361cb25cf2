"""Circuit breakers: the failure-rate window and the half-open trial, with shared state on SQLite and
PostgreSQL, across processes (the clients, sensors and configuration: ``test_breaker_clients.py``).

Real parts only: the store is a real SQLite file or the machine's PostgreSQL, other processes are real
subprocesses; the clock is the only thing the tests move.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest

from aptool_assets.resilience.breaker import IREADY_BREAKER, BreakerOpen, BreakerSettings, CircuitBreaker
from aptool_assets.storage.breakers import PostgresBreakerStore, SqliteBreakerStore, open_breaker_store
from aptool_assets_tests.conftest import schema_reset

SETTINGS = BreakerSettings("aeries", failure_rate=0.5, window=20, min_calls=10, half_open_after_s=60.0, max_age_s=300.0)
CHILD_SETTINGS = replace(SETTINGS, half_open_after_s=30.0)  # what the child processes use


class Clock:
    """A wall clock the test moves (the breaker only ever asks for 'now')."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_target(request, tmp_path):
    """(kind, location) of a fresh store: a SQLite file or the test PostgreSQL database."""
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "breakers.sqlite")
        return
    url = request.getfixturevalue("postgres_url")
    schema_reset(url)
    yield "postgres", url
    schema_reset(url)


def _open(target):
    kind, where = target
    return SqliteBreakerStore(where) if kind == "sqlite" else PostgresBreakerStore(where)


@pytest.fixture
def store(store_target):
    opened = _open(store_target)
    yield opened
    opened.close()


# -- the state machine ----------------------------------------------------------------------------------


def test_opens_once_min_calls_are_in_the_window_and_names_service_and_half_open_time(store):
    """A dead service: 9 failed calls are below the 10 the window needs, the 10th opens the breaker."""
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, store, clock=clock)
    for _ in range(9):
        breaker.record_failure("AeriesServerError on GET /api/v5/schools")
        clock.now += 1
    status = breaker.state()
    assert status.state == "closed" and (status.failures_in_window, status.calls_in_window) == (9, 9)
    breaker.check()  # still admitted
    status = breaker.record_failure("AeriesServerError on GET /api/v5/schools")
    assert status.state == "open" and status.half_open_at == clock.now + 60
    assert status.reason.startswith("10 of the last 10 calls failed, last: AeriesServerError")
    with pytest.raises(BreakerOpen) as caught:
        breaker.check()
    assert caught.value.service == "aeries"
    assert "aeries circuit breaker open" in str(caught.value) and "half-opens at" in str(caught.value)
    assert not breaker.allow()


def test_opens_at_the_failure_rate_of_the_last_calls_not_at_a_count(store):
    """Interleaved with successes, failures open the breaker only when they are half of the last 20 calls."""
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, store, clock=clock)
    for i in range(60):  # one call in three fails: 20 failures, far more than the old threshold of 10
        if i % 3 == 0:
            assert breaker.record_failure("drop").state == "closed"
        else:
            breaker.record_success()
        clock.now += 1
    status = breaker.state()
    assert (status.state, status.failures_in_window, status.calls_in_window) == ("closed", 6, 20)
    seen = [breaker.record_failure("drop")]  # now only failures: each pushes the oldest call out
    while seen[-1].state == "closed":
        seen.append(breaker.record_failure("drop"))
    assert [(s.state, s.failures_in_window, s.calls_in_window) for s in seen] == [
        ("closed", 7, 20),
        ("closed", 8, 20),
        ("closed", 8, 20),  # the call that left was a failure too
        ("closed", 9, 20),  # 45 %
        ("open", 10, 20),  # 50 %
    ]


def test_a_request_that_succeeds_on_retry_counts_as_one_success(store):
    """A flaky API: every request's first two attempts fail and its third succeeds. Its failed attempts
    leave the window again, so the breaker never opens; failed requests (no success) stay counted."""
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, store, clock=clock)
    for i in range(30):
        call = f"call{i}"
        assert breaker.record_failure("AeriesServerError", call).state == "closed"
        assert breaker.record_failure("AeriesConnectionError", call).state == "closed"
        breaker.record_success(call)
        clock.now += 1
    status = breaker.state()
    assert (status.state, status.failures_in_window, status.calls_in_window) == ("closed", 0, 20)
    for i in range(9):  # requests that never succeed: each failed attempt counts
        breaker.record_failure("AeriesServerError", f"lost{i}")
    assert breaker.state().failures_in_window == 9
    breaker.record_success("call29")  # another call's success does not take them away
    assert breaker.state().failures_in_window == 9
    assert breaker.record_failure("AeriesServerError", "lost9").state == "open"  # 10 of the last 20


def test_one_failed_sftp_operation_never_opens_the_iready_breaker_alone(store):
    """i-Ready (at least 7 calls): whatever succeeded before, one operation's 3 failed attempts stay under
    half of the window; the next operation's failures open it (a dead server: the 7th failed attempt)."""
    breaker = CircuitBreaker(IREADY_BREAKER, store, clock=Clock())
    for successes in range(12):
        for i in range(successes):
            breaker.record_success(f"list{i}")
        for _ in range(3):
            assert breaker.record_failure("SFTPTransientError", "download").state == "closed", successes
        more = 0
        while breaker.state().state == "closed":
            breaker.record_failure("SFTPTransientError", "download again")
            more += 1
        assert 1 <= more <= 4, (successes, more)
        breaker.reset()


def test_calls_older_than_max_age_leave_the_window(store):
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, store, clock=clock)
    for _ in range(20):
        breaker.record_failure("timeout")
        clock.now += 40  # 10 failures span 360 s > max_age_s 300 s: never 10 calls in the window
    assert breaker.state().state == "closed"
    status = breaker.state()  # read 40 s after the last: 280, 240, …, 40 s old
    assert (status.failures_in_window, status.calls_in_window) == (7, 7)


def test_half_open_admits_one_trial_then_closes_or_reopens(store):
    clock = Clock()
    a = CircuitBreaker(SETTINGS, store, clock=clock)
    b = CircuitBreaker(SETTINGS, store, clock=clock)  # another caller on the same store
    for _ in range(10):
        a.record_failure("drop")
    clock.now += 61
    assert a.state().state == "half_open" and not a.state().trial_in_progress
    a.check()  # the trial
    assert b.state().trial_in_progress
    with pytest.raises(BreakerOpen, match="trial request is in progress"):
        b.check()
    a.record_failure("drop")  # the trial failed: open for another full period
    assert a.state().state == "open" and a.state().half_open_at == clock.now + 60
    clock.now += 61
    b.check()
    b.record_success()
    status = a.state()
    assert status.state == "closed" and status.failures_in_window == 0
    a.check()


@pytest.mark.parametrize("trial_succeeds", [True, False])
def test_callers_can_wait_for_the_trial_outcome(store, trial_succeeds):
    """With ``trial_wait_s`` another caller waits for the in-flight trial: it goes ahead once the
    trial closed the breaker, and gets BreakerOpen when the trial failed."""
    import threading

    clock = Clock()
    a = CircuitBreaker(SETTINGS, store, clock=clock)
    b = CircuitBreaker(SETTINGS, store, clock=clock, trial_wait_s=10.0)
    for _ in range(10):
        a.record_failure("drop")
    clock.now += 61
    a.check()  # a holds the trial
    outcome: list[object] = []

    def waiter() -> None:
        try:
            b.check()
            outcome.append("went ahead")
        except BreakerOpen as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and outcome == []  # still waiting for the trial
    if trial_succeeds:
        a.record_success()
    else:
        a.record_failure("drop")
    thread.join(5)
    if trial_succeeds:
        assert outcome == ["went ahead"]
    else:
        assert isinstance(outcome[0], BreakerOpen) and outcome[0].status.state == "open"


def test_a_success_while_open_does_not_close_it(store):
    """A request that started before the breaker opened and succeeds after proves nothing about the server now."""
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, store, clock=clock)
    for _ in range(10):
        breaker.record_failure("503")
    breaker.record_success("late")
    status = breaker.state()
    assert status.state == "open" and status.failures_in_window == 10 and status.calls_in_window == 10


def test_an_abandoned_trial_is_given_up_after_a_period(store):
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, store, clock=clock)
    breaker.open_for(30, "maintenance: test")
    clock.now += 31
    breaker.check()  # a process took the trial and died
    other = CircuitBreaker(SETTINGS, store, clock=clock)
    assert not other.allow()
    clock.now += 61
    assert other.allow()


def test_open_for_never_shortens_and_reset_closes(store):
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, store, clock=clock)
    breaker.open_for(1800, "maintenance: HTTP 503 with a long Retry-After")
    breaker.open_for(60, "shorter")
    status = breaker.state()
    assert status.half_open_at == clock.now + 1800 and "maintenance" in status.reason
    assert status.times_opened == 1
    breaker.reset()
    assert breaker.state().state == "closed" and breaker.allow()


def test_dead_letters_are_kept_once_with_a_count(store):
    first = store.add_failed_operation("aeries", "GET /api/v5/schools", "AeriesResponseError", "not JSON", {"a": 1})
    again = store.add_failed_operation("aeries", "GET /api/v5/schools", "AeriesResponseError", "not JSON", {"a": 2})
    other = store.add_failed_operation("iready", "list on h:22", "SFTPError", "permission denied")
    assert first == again != other
    pending = store.failed_operations()
    assert [(r["service"], r["occurrences"]) for r in pending] == [("aeries", 2), ("iready", 1)]
    assert pending[0]["context"] == {"a": 2}
    assert store.resolve_failed_operations([first]) == 1
    assert [r["id"] for r in store.failed_operations()] == [other]


def _old_format_table(target) -> None:
    """The count-based breaker's table (before issue #12), holding an open breaker and a closed one."""
    kind, where = target
    columns = "service {t} PRIMARY KEY, state {t} NOT NULL, failures {j} NOT NULL DEFAULT '[]', opened_at {ts}, "
    columns += "half_open_at {ts}, reason {t}, trial_started_at {ts}, times_opened integer NOT NULL DEFAULT 0, "
    columns += "updated_at {ts} NOT NULL"
    rows = [
        ("aeries", "open", "[1799999990.0, 1799999995.0]", 1799999995.0, 1800000055.0, "10 failures within 300 s", 1),
        ("iready", "closed", "[1799999999.0]", None, None, None, 0),
    ]
    if kind == "sqlite":
        import sqlite3

        con = sqlite3.connect(where)
        con.execute(f"CREATE TABLE circuit_breakers ({columns.format(t='TEXT', j='TEXT', ts='REAL')})")
        con.executemany("INSERT INTO circuit_breakers VALUES (?, ?, ?, ?, ?, ?, NULL, ?, 1799999995.0)", rows)
        con.commit()
        con.close()
        return
    import psycopg

    with psycopg.connect(where, autocommit=True) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS aptool")
        con.execute(f"CREATE TABLE aptool.circuit_breakers ({columns.format(t='text', j='jsonb', ts='timestamptz')})")
        for service, state, failures, opened, half_open, reason, times in rows:
            con.execute(
                "INSERT INTO aptool.circuit_breakers VALUES (%s, %s, %s::jsonb, to_timestamp(%s), to_timestamp(%s), "
                "%s, NULL, %s, to_timestamp(1799999995))",
                (service, state, failures, opened, half_open, reason, times),
            )


def test_a_table_of_the_count_based_breaker_is_migrated_in_place(store_target):
    """The row format changed (a window of outcomes instead of failure times): an existing table gets the new
    column with empty windows, an open breaker stays open until its half-open time, and it works on."""
    _old_format_table(store_target)
    clock = Clock(1_800_000_000.0)
    store = _open(store_target)
    try:
        aeries = CircuitBreaker(SETTINGS, store, clock=clock)
        status = aeries.state()
        assert (status.state, status.half_open_at, status.times_opened) == ("open", 1800000055.0, 1)
        assert status.calls_in_window == 0 and status.reason == "10 failures within 300 s"
        iready = CircuitBreaker(replace(SETTINGS, service="iready"), store, clock=clock)
        assert iready.state().state == "closed" and iready.state().calls_in_window == 0
        iready.record_failure("SFTPTransientError")
        assert iready.state().failures_in_window == 1
        clock.now += 60
        aeries.check()  # the half-open trial
        aeries.record_success("trial")
        assert aeries.state().state == "closed"
    finally:
        store.close()
    again = _open(store_target)  # a second opening finds the new format and leaves it alone
    try:
        assert CircuitBreaker(replace(SETTINGS, service="iready"), again, clock=clock).state().failures_in_window == 1
    finally:
        again.close()


def test_open_breaker_store_follows_the_database_url(tmp_path, monkeypatch):
    monkeypatch.setenv("APTOOL_BREAKER_PATH", str(tmp_path / "b.sqlite"))
    for url in (None, f"duckdb:///{tmp_path / 'w.duckdb'}"):
        monkeypatch.delenv("APTOOL_DATABASE_URL", raising=False)
        chosen = open_breaker_store(url)
        assert isinstance(chosen, SqliteBreakerStore) and chosen.path == tmp_path / "b.sqlite"
    assert isinstance(open_breaker_store("postgresql://u@127.0.0.1/db"), PostgresBreakerStore)
    with pytest.raises(ValueError, match="unsupported"):
        open_breaker_store("mysql://x")


def test_a_broken_store_lets_requests_through(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    breaker = CircuitBreaker(SETTINGS, SqliteBreakerStore(blocker / "breakers.sqlite"))
    assert breaker.allow() and breaker.state().state == "closed"
    breaker.record_failure("x")
    assert "letting requests through" in caplog.text


# -- shared across processes ----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, sys
    from aptool_assets.resilience.breaker import BreakerSettings, CircuitBreaker
    from aptool_assets.storage.breakers import PostgresBreakerStore, SqliteBreakerStore
    kind, where, action = sys.argv[1:4]
    SETTINGS = {settings!r}
    store = SqliteBreakerStore(where) if kind == "sqlite" else PostgresBreakerStore(where)
    breaker = CircuitBreaker(SETTINGS, store)
    if action in ("fail", "fail-together"):
        if action == "fail-together":
            sys.stdin.readline()  # start together: the store opens its file on first use
        for _ in range(int(sys.argv[4])):
            breaker.record_failure("AeriesServerError on GET /api/v5/schools")
    elif action == "trial":
        sys.stdin.readline()  # start together
        print(json.dumps(breaker.allow()))
    print(json.dumps(breaker.state().state), flush=True)
    """
).format(settings=CHILD_SETTINGS)


def _child(target, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *target, *args], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, **kw
    )


def test_state_is_shared_across_processes(store_target):
    for child in [_child(store_target, "fail", "5"), _child(store_target, "fail", "5")]:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
    store = _open(store_target)
    try:
        status = CircuitBreaker(CHILD_SETTINGS, store).state()
        assert status.state == "open" and status.failures_in_window == 10
    finally:
        store.close()


def test_processes_opening_a_fresh_sqlite_file_together_lose_no_update(tmp_path):
    """Regression (CI, 2026-11-30): SQLite refuses a concurrent switch to WAL at once, not after its busy
    timeout, so one of two runs opening a new breakers file together dropped its failures."""
    files = [str(tmp_path / f"fresh-{i}.sqlite") for i in range(12)]
    children = [_child(("sqlite", path), "fail-together", "2") for path in files for _ in range(4)]  # 8 < 10
    time.sleep(1.0)  # all started
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        child.communicate(timeout=60)
        assert child.returncode == 0
    for path in files:
        store = SqliteBreakerStore(path)
        try:
            assert CircuitBreaker(CHILD_SETTINGS, store).state().failures_in_window == 8
        finally:
            store.close()


def test_exactly_one_process_gets_the_half_open_trial(store_target):
    store = _open(store_target)
    try:
        CircuitBreaker(CHILD_SETTINGS, store).open_for(0.2, "maintenance: test")
    finally:
        store.close()
    children = [_child(store_target, "trial") for _ in range(4)]
    time.sleep(1.0)  # all started and half-open (their trial lease is 30 s)
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    answers = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        answers.append(json.loads(out.splitlines()[0]))
    assert sorted(answers) == [False, False, False, True]
