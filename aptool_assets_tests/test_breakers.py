"""Circuit breakers: shared state on SQLite and PostgreSQL, across processes, in the clients and sensors.

Real parts only: the store is a real SQLite file or the machine's PostgreSQL, other processes are real
subprocesses, Aeries is the bundled simulator (and a tiny loopback HTTP server for a maintenance
503), the SFTP case uses a loopback port nothing listens on.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from aptool_assets.resilience.breaker import BreakerOpen, BreakerSettings, CircuitBreaker, settings_from_env
from aptool_assets.resilience.policy import AERIES_POLICY, IREADY_POLICY, aeries_policy, iready_policy
from aptool_assets.resilience.retry import SFTP_RETRY, RetrySettings, retry_from_env
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.aeries.client import (
    AeriesAuthError,
    AeriesMaintenanceError,
    AeriesResource,
    AeriesResponseError,
    AeriesUnavailableError,
)
from aptool_assets.sources.iready.resources import IReadySFTPResource, SFTPUnavailableError
from aptool_assets.storage.breakers import PostgresBreakerStore, SqliteBreakerStore, open_breaker_store
from aptool_assets_tests.conftest import evaluate_sensor, schema_reset
from aptool_demo.district import build_district
from aptool_demo.simulator import build_sim_district, start_simulator

YEAR = 2025
SETTINGS = BreakerSettings("aeries", failure_threshold=10, window_s=300.0, half_open_after_s=60.0)


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


def test_opens_at_the_threshold_within_the_window_and_names_service_and_half_open_time(store):
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, store, clock=clock)
    for _ in range(9):
        breaker.record_failure("AeriesServerError on GET /api/v5/schools")
        clock.now += 10
    assert breaker.state().state == "closed" and breaker.state().failures_in_window == 9
    breaker.check()  # still admitted
    status = breaker.record_failure("AeriesServerError on GET /api/v5/schools")
    assert status.state == "open" and status.half_open_at == clock.now + 60
    with pytest.raises(BreakerOpen) as caught:
        breaker.check()
    assert caught.value.service == "aeries"
    assert "aeries circuit breaker open" in str(caught.value) and "half-opens at" in str(caught.value)
    assert not breaker.allow()


def test_failures_older_than_the_window_do_not_count(store):
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, store, clock=clock)
    for _ in range(20):
        breaker.record_failure("timeout")
        clock.now += 40  # 10 failures span 360 s > 300 s window
    assert breaker.state().state == "closed"
    assert breaker.state().failures_in_window == 7  # read 40 s after the last: 260, 220, …, 40 s old


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


def test_success_outside_a_trial_does_not_close_or_forget(store):
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, store, clock=clock)
    for _ in range(5):
        breaker.record_failure("503")
    breaker.check()
    breaker.record_success()
    assert breaker.state().failures_in_window == 5  # "10 failures within 5 minutes", not "in a row"


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
    store = SqliteBreakerStore(where) if kind == "sqlite" else PostgresBreakerStore(where)
    breaker = CircuitBreaker(BreakerSettings("aeries", 10, 300.0, 30.0), store)
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
)


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
        status = CircuitBreaker(BreakerSettings("aeries", 10, 300.0, 30.0), store).state()
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
            assert CircuitBreaker(BreakerSettings("aeries", 10, 300.0, 30.0), store).state().failures_in_window == 8
        finally:
            store.close()


def test_exactly_one_process_gets_the_half_open_trial(store_target):
    store = _open(store_target)
    try:
        CircuitBreaker(BreakerSettings("aeries", 10, 300.0, 30.0), store).open_for(0.2, "maintenance: test")
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


# -- in the Aeries client -------------------------------------------------------------------------------

FAST = {"retry_max_attempts": 5, "retry_base_delay_s": 0.001, "retry_max_delay_s": 0.002}


@pytest.fixture(scope="module")
def sim():
    district = build_sim_district(build_district(YEAR), through=date(2026, 3, 20))
    with start_simulator(district) as running:
        yield running


@pytest.fixture
def aeries(sim):
    sim.faults.__init__()
    sim.reset_stats()
    return AeriesResource(
        base_url=sim.base_url,
        cert=sim.cert,
        database_year=YEAR,
        resilience=AERIES_POLICY.but(**FAST, breaker_failure_threshold=3),
    )


def _aeries_state(resource: AeriesResource):
    guard = resource.guard()
    try:
        return guard.breaker.state()
    finally:
        guard.store.close()


def test_the_aeries_client_stops_retrying_once_the_breaker_opens(sim, aeries):
    sim.faults.drop_next = 100
    with aeries.client() as client, pytest.raises(BreakerOpen) as caught:
        client.schools()
    assert len(sim.requests) == 3  # the 4th and 5th attempts were never sent
    assert caught.value.service == "aeries"
    assert _aeries_state(aeries).state == "open"
    with aeries.client() as client, pytest.raises(BreakerOpen):
        client.calendar(101)
    assert len(sim.requests) == 3


def test_rate_limits_wait_and_do_not_count_as_failures(sim, aeries):
    sim.faults.rate_limit_next, sim.faults.retry_after_s = 4, 0.01
    with aeries.client() as client:
        assert client.schools()
    assert _aeries_state(aeries).failures_in_window == 0


def test_503_on_every_attempt_is_maintenance(sim, aeries):
    sim.faults.unavailable_next = 100
    resource = aeries.model_copy(update={"resilience": aeries.resilience.but(breaker_failure_threshold=50)})
    with resource.client() as client, pytest.raises(AeriesUnavailableError):
        client.schools()
    status = _aeries_state(resource)
    assert status.state == "open" and "maintenance" in status.reason
    assert status.half_open_at - time.time() == pytest.approx(1800, abs=30)


class _Maintenance(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits += 1
        self.send_response(503)
        self.send_header("Retry-After", "3600")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"Message": "Down for maintenance"}')

    def log_message(self, *args):
        pass


def test_503_with_a_long_retry_after_backs_off_30_minutes_after_one_request():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Maintenance)
    server.hits = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        resource = AeriesResource(base_url=f"http://127.0.0.1:{server.server_port}/aeries", cert="x" * 32, **FAST)
        with resource.client() as client, pytest.raises(AeriesMaintenanceError, match="3600"):
            client.schools()
        assert server.hits == 1
        status = _aeries_state(resource)
        assert status.state == "open" and status.reason.startswith("maintenance")
        assert status.half_open_at - time.time() == pytest.approx(1800, abs=30)
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_certificate_is_not_tried_again_but_a_new_one_is(sim, aeries):
    wrong = aeries.model_copy(update={"cert": "W" * 32})
    with wrong.client() as client, pytest.raises(AeriesAuthError):
        client.schools()
    assert len(sim.requests) == 1
    with wrong.client() as client, pytest.raises(BreakerOpen, match="authentication refused"):
        client.schools()
    assert len(sim.requests) == 1  # no retry storm
    with aeries.client() as client:  # the corrected certificate is another credential
        assert client.schools()
    assert _aeries_state(aeries).state == "closed"


def test_a_malformed_response_becomes_a_dead_letter_with_its_context(sim, aeries):
    sim.faults.invalid_json_next = 1
    with aeries.client() as client, pytest.raises(AeriesResponseError):
        client.calendar(101)
    store = open_breaker_store()
    try:
        (letter,) = store.failed_operations()
    finally:
        store.close()
    assert letter["service"] == "aeries" and letter["error_type"] == "AeriesResponseError"
    assert letter["context"]["endpoint"] == "/api/v5/schools/101/calendar"
    assert letter["context"]["params"] == {"DatabaseYear": str(YEAR)}
    assert sim.cert not in json.dumps(letter)


# -- in the SFTP resource -------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sftp_refused_connections_open_the_iready_breaker(tmp_path):
    resource = IReadySFTPResource(
        host="127.0.0.1",
        port=_closed_port(),
        username="district",
        password="pw",
        known_hosts_path=str(tmp_path / "known_hosts"),
        resilience=IREADY_POLICY.but(
            retry_max_attempts=3, retry_base_delay_s=0.001, retry_max_delay_s=0.001, breaker_failure_threshold=4
        ),
    )
    with pytest.raises(SFTPUnavailableError):
        resource.list_files()  # 3 failures: still closed
    with pytest.raises(BreakerOpen) as caught:
        resource.list_files()  # the 4th opens it; the 5th attempt is refused before connecting
    assert caught.value.service == "iready" and "half-opens at" in str(caught.value)
    assert "pw" not in str(caught.value)


# -- sensors skip while open ----------------------------------------------------------------------------


def test_sensors_skip_with_the_reason_while_a_breaker_is_open(sim, aeries, tmp_path):
    from aptool_assets.sources.aeries.sensors import aeries_student_changes_sensor
    from aptool_assets.sources.iready.sensors import iready_sftp_sensor

    guard = aeries.guard()
    guard.maintenance("HTTP 503 on all 5 attempts of GET /api/v5/systeminfo")
    guard.store.close()
    sftp = IReadySFTPResource(host="127.0.0.1", port=_closed_port(), username="u", password="p")
    sftp_guard = sftp.guard()
    sftp_guard.breaker.open_for(300, "5 failures within 600 s")
    sftp_guard.store.close()
    with dg.instance_for_test() as instance:
        result = evaluate_sensor(
            aeries_student_changes_sensor,
            instance=instance,
            resources={"aeries": aeries, "platform": PlatformResource()},
        )
        assert isinstance(result, dg.SkipReason)
        assert "aeries circuit breaker open" in result.skip_message and "half-opens at" in result.skip_message
        assert sim.requests == []  # skipped without asking Aeries
        result = evaluate_sensor(
            iready_sftp_sensor, instance=instance, resources={"iready_sftp": sftp, "platform": PlatformResource()}
        )
        assert isinstance(result, dg.SkipReason) and "iready circuit breaker open" in result.skip_message


def test_circuit_breakers_sensor_shows_states_and_observes_changes(aeries):
    from aptool_assets.alerts.breakers import CIRCUIT_BREAKERS_KEY, circuit_breakers_sensor
    from aptool_assets.alerts.slack import AlertResource

    resources = {"aeries": aeries, "iready_sftp": IReadySFTPResource(), "alerts": AlertResource()}
    with dg.instance_for_test() as instance:
        first = evaluate_sensor(circuit_breakers_sensor, instance=instance, resources=resources)
        assert "aeries circuit breaker closed" in first.skip_reason.skip_message
        assert [e.asset_key for e in first.asset_events] == [CIRCUIT_BREAKERS_KEY]  # first tick records the state
        same = evaluate_sensor(circuit_breakers_sensor, instance=instance, resources=resources, cursor=first.cursor)
        assert same.asset_events == []
        guard = aeries.guard()
        guard.maintenance("HTTP 503 with a long Retry-After on GET /api/v5/schools")
        guard.store.close()
        changed = evaluate_sensor(circuit_breakers_sensor, instance=instance, resources=resources, cursor=same.cursor)
        (observation,) = changed.asset_events
        assert observation.metadata["aeries/state"].value == "open"
        assert observation.metadata["iready/state"].value == "closed"
        assert observation.metadata["open_breakers"].value == 1
        assert "aeries circuit breaker open" in changed.skip_reason.skip_message


# -- configuration --------------------------------------------------------------------------------------


def test_settings_come_from_the_environment_with_the_designs_defaults():
    assert aeries_policy({}).model_dump() == {
        "service": "aeries",
        "retry_max_attempts": 5,
        "retry_base_delay_s": 1.0,
        "retry_max_delay_s": 30.0,
        "retry_backoff": "exponential",
        "retry_jitter": True,
        "circuit_breaker": True,
        "breaker_failure_threshold": 10,
        "breaker_window_s": 300.0,
        "breaker_half_open_after_s": 60.0,
        "maintenance_backoff_s": 1800.0,
        "auth_backoff_s": 1800.0,
    }
    sftp = iready_policy({"APTOOL_IREADY_BREAKER": "failures=7", "APTOOL_IREADY_RETRY": "max_s=90"})
    assert (sftp.breaker_failure_threshold, sftp.breaker_window_s, sftp.breaker_half_open_after_s) == (7, 600.0, 300.0)
    assert (sftp.retry_max_attempts, sftp.retry_base_delay_s, sftp.retry_max_delay_s) == (3, 5.0, 90.0)
    db = retry_from_env("database", RetrySettings(4, 0.5, 10.0), {"APTOOL_DATABASE_RETRY": "attempts=6"})
    assert (db.max_attempts, db.base_delay_s, db.backoff) == (6, 0.5, "exponential")
    assert retry_from_env("iready", SFTP_RETRY, {}).backoff == "linear"
    with pytest.raises(ValueError, match="APTOOL_AERIES_BREAKER"):
        settings_from_env(SETTINGS, {"APTOOL_AERIES_BREAKER": "threshold=3"})
    with pytest.raises(ValueError, match="must be a number"):
        retry_from_env("aeries", SFTP_RETRY, {"APTOOL_AERIES_RETRY": "attempts=many"})


@pytest.mark.sftp
def test_a_refused_sftp_key_is_not_tried_again_but_the_right_one_is(sftp_server, tmp_path, monkeypatch):
    import paramiko
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from aptool_assets.sources.iready.resources import SFTPAuthenticationError

    connects: list[int] = []
    original = paramiko.SSHClient.connect

    def counting(self, *args, **kwargs):  # a spy: the real connect still runs
        connects.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(paramiko.SSHClient, "connect", counting)
    other = tmp_path / "other_key"
    other.write_bytes(Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    other.chmod(0o600)
    fast = {"retry_base_delay_s": 0.001, "retry_max_delay_s": 0.001}
    wrong = sftp_server.resource(private_key_path=str(other), password=None, resilience=IREADY_POLICY.but(**fast))
    with pytest.raises(SFTPAuthenticationError):
        wrong.list_files()
    with pytest.raises(BreakerOpen, match="authentication refused"):
        wrong.list_files()
    assert len(connects) == 1  # the account is not hammered (or locked) by sensor ticks
    assert isinstance(sftp_server.resource(resilience=IREADY_POLICY.but(**fast)).list_files(), list)
