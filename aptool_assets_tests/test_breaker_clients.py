"""Circuit breakers where they are used: in the Aeries client and the SFTP resource, in the sensors, and
their configuration (``ResiliencePolicy`` and the ``APTOOL_<SERVICE>_BREAKER`` overrides).

Real parts only: the store is a real SQLite file (conftest gives each test its own), Aeries is the bundled
simulator with its FaultPlan (and a tiny loopback HTTP server for a maintenance 503), the SFTP cases use
a loopback port nothing listens on or the real sshd.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import replace
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import httpx
import pytest

from aptool_assets.resilience.breaker import AERIES_BREAKER, BreakerOpen, settings_from_env
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
from aptool_assets.storage.breakers import open_breaker_store
from aptool_assets_tests.conftest import evaluate_sensor
from aptool_demo.district import build_district
from aptool_demo.simulator import FaultPlan, build_sim_district, start_simulator

YEAR = 2025
SETTINGS = AERIES_BREAKER


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
        resilience=AERIES_POLICY.but(**FAST, breaker_min_calls=3),
    )


def _aeries_state(resource: AeriesResource):
    guard = resource.guard()
    try:
        return guard.breaker.state()
    finally:
        guard.store.close()


def test_the_simulators_steady_mix_faults_every_nth_matching_request(sim, aeries):
    """The flaky API of issue #12 §4: a 429 every 7th request, a 503 every 11th, a drop every 17th (a drop
    wins over a 429, a 429 over a 503), counting only the requests the pattern matches; "next N" first."""
    plan = FaultPlan(rate_limit_every=7, unavailable_every=11, drop_every=17, paths_matching="attendance")
    taken = [plan.take("/aeries/api/v5/schools/1/attendance")[0] for _ in range(154)]
    assert plan.take("/aeries/api/v5/schools") == (None, 0.0) and plan.seen == 154
    assert (taken[6], taken[10], taken[16], taken[76], taken[118], taken[153]) == (
        "rate_limit",  # 7
        "unavailable",  # 11
        "drop",  # 17
        "rate_limit",  # 77 = 7 × 11
        "drop",  # 119 = 7 × 17
        "rate_limit",  # 154 = 2 × 7 × 11
    )
    counts = {name: taken.count(name) for name in ("rate_limit", "unavailable", "drop")}
    assert counts == {"rate_limit": 21, "unavailable": 12, "drop": 9}  # 42 of 154: about one in four
    plan.unavailable_next = 1
    assert plan.take("/aeries/api/v5/schools/1/attendance")[0] == "unavailable"  # 155: a counter goes first

    sim.faults.rate_limit_every, sim.faults.unavailable_every, sim.faults.drop_every = 7, 11, 17
    statuses = []
    with httpx.Client(headers={"AERIES-CERT": sim.cert}, timeout=10) as raw:
        for _ in range(17):
            try:
                statuses.append(raw.get(f"{sim.base_url}/api/v5/schools").status_code)
            except httpx.RemoteProtocolError:
                statuses.append(0)  # dropped without a response
    assert statuses == [200] * 6 + [429] + [200] * 3 + [503] + [200] * 2 + [429] + [200] * 2 + [0]


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
    status = _aeries_state(aeries)
    assert (status.failures_in_window, status.calls_in_window) == (0, 1)  # the 4 429s are not calls at all


def test_a_flaky_api_whose_requests_succeed_on_retry_never_opens_the_breaker(sim, aeries):
    """Every other request is dropped (half of all attempts fail, far above the 50 % rate), yet every
    request succeeds on its retry, so each counts as one success and the breaker stays closed."""
    sim.faults.drop_every = 2
    with aeries.client() as client:
        for _ in range(15):
            assert client.calendar(101)
    assert [status for _, _, status in sim.requests] == [200] + [0, 200] * 14
    status = _aeries_state(aeries)
    assert (status.state, status.failures_in_window, status.calls_in_window) == ("closed", 0, 15)


def test_a_hard_outage_opens_the_breaker_after_min_calls_despite_earlier_successes(sim, aeries):
    """The design's Aeries settings: 20 good calls, then every request fails. The 10th failed attempt makes
    half of the last 20 calls: open, and no request is sent any more."""
    resource = aeries.model_copy(update={"resilience": AERIES_POLICY.but(**FAST)})
    with resource.client() as client:
        for _ in range(20):
            client.calendar(101)
        sim.reset_stats()
        sim.faults.drop_every = 1
        with pytest.raises(AeriesUnavailableError):
            client.schools()  # 5 failed attempts: 5 of the last 20 calls
        assert _aeries_state(resource).state == "closed"
        with pytest.raises(AeriesUnavailableError):
            client.schools()  # 5 more: half of the last 20 calls failed
        status = _aeries_state(resource)
        assert status.state == "open" and status.reason.startswith("10 of the last 20 calls failed")
        with pytest.raises(BreakerOpen, match="10 of the last 20 calls failed"):
            client.calendar(102)
    assert len(sim.requests) == 10  # nothing after it opened


def test_503_on_every_attempt_is_maintenance(sim, aeries):
    sim.faults.unavailable_next = 100
    resource = aeries.model_copy(update={"resilience": aeries.resilience.but(breaker_min_calls=20)})
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
            retry_max_attempts=3, retry_base_delay_s=0.001, retry_max_delay_s=0.001, breaker_min_calls=4
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
    sftp_guard.breaker.open_for(300, "5 of the last 5 calls failed")
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
        "retry_base_delay_s": 0.5,
        "retry_max_delay_s": 30.0,
        "retry_backoff": "exponential",
        "retry_jitter": True,
        "circuit_breaker": True,
        "breaker_failure_rate": 0.5,
        "breaker_window": 20,
        "breaker_min_calls": 10,
        "breaker_max_age_s": 300.0,
        "breaker_half_open_after_s": 60.0,
        "maintenance_backoff_s": 1800.0,
        "auth_backoff_s": 1800.0,
    }
    assert aeries_policy({}).breaker() == SETTINGS
    default = iready_policy({}).breaker()
    assert (default.failure_rate, default.window, default.min_calls, default.max_age_s) == (0.5, 10, 7, 600.0)
    sftp = iready_policy({"APTOOL_IREADY_BREAKER": "min_calls=8,failure_rate=0.8", "APTOOL_IREADY_RETRY": "max_s=90"})
    breaker = sftp.breaker()
    assert (breaker.failure_rate, breaker.window, breaker.min_calls, breaker.max_age_s) == (0.8, 10, 8, 600.0)
    assert breaker.half_open_after_s == 300.0
    assert (sftp.retry_max_attempts, sftp.retry_base_delay_s, sftp.retry_max_delay_s) == (3, 5.0, 90.0)
    full = settings_from_env(
        SETTINGS, {"APTOOL_AERIES_BREAKER": "failure_rate=0.6, window=30, min_calls=12, max_age_s=120, half_open_s=5"}
    )
    assert full == replace(SETTINGS, failure_rate=0.6, window=30, min_calls=12, max_age_s=120.0, half_open_after_s=5.0)
    db = retry_from_env("database", RetrySettings(4, 0.5, 10.0), {"APTOOL_DATABASE_RETRY": "attempts=6"})
    assert (db.max_attempts, db.base_delay_s, db.backoff) == (6, 0.5, "exponential")
    assert retry_from_env("iready", SFTP_RETRY, {}).backoff == "linear"
    with pytest.raises(ValueError, match="APTOOL_AERIES_BREAKER"):
        settings_from_env(SETTINGS, {"APTOOL_AERIES_BREAKER": "threshold=3"})
    with pytest.raises(ValueError, match="must be a number"):
        retry_from_env("aeries", SFTP_RETRY, {"APTOOL_AERIES_RETRY": "attempts=many"})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("failures=10", r"failures= no longer exist.*failure_rate=0.5,window=20,min_calls=10"),
        ("failures=10,window_s=300,half_open_s=60", r"failures=, window_s= no longer exist: the breaker opens on a"),
        ("window_s=300", r"window_s= no longer exist"),
        ("window=20.5", r"window must be a whole number"),
        ("failure_rate=1.5", r"APTOOL_AERIES_BREAKER: failure_rate must be above 0 and at most 1"),
        ("failure_rate=0", r"failure_rate must be above 0"),
        ("min_calls=21", r"min_calls <= window"),
        ("max_age_s=0", r"max_age_s must be positive"),
    ],
)
def test_bad_or_retired_breaker_settings_are_refused_naming_what_to_set(value, message):
    """The count-based breaker's keys are refused with what replaced them, not silently ignored."""
    with pytest.raises(ValueError, match=message):
        settings_from_env(SETTINGS, {"APTOOL_AERIES_BREAKER": value})
    with pytest.raises(ValueError, match=message):
        aeries_policy({"APTOOL_AERIES_BREAKER": value})


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
