"""Step retries of the source assets fit the failure (issue #12 §4): seconds after a transient failure,
the half-open time of an open breaker, none for a refused credential or a long breaker opening.

The decision is a plain function (``step_retry_delay``), tested directly; the runs are real Dagster
materializations (step retries enabled) against the Aeries simulator, whose FaultPlan injects the faults.
"""

from __future__ import annotations

import random
import time

import dagster as dg
import pytest

from aptool_assets.resilience.breaker import AERIES_BREAKER, BreakerOpen, BreakerSettings, CircuitBreaker
from aptool_assets.resilience.failures import (
    MAX_BREAKER_WAIT_S,
    NO_RETRY,
    STEP_MAX_RETRIES,
    STEP_RETRY_POLICY,
    step_retry_delay,
)
from aptool_assets.resilience.policy import AERIES_POLICY
from aptool_assets.resilience.retry import RetryExhausted
from aptool_assets.sources.aeries.assets import RETRY, SCHOOLS_KEY
from aptool_assets.sources.aeries.client import (
    AeriesAuthError,
    AeriesResource,
    AeriesResponseError,
    AeriesServerError,
    AeriesUnavailableError,
)
from aptool_assets.storage.breakers import SqliteBreakerStore
from aptool_assets_tests.test_aeries_pipeline import AeriesEnv, simulator  # noqa: F401 - simulator is a fixture
from aptool_assets_tests.test_breakers import Clock

NOW = 1_800_000_000.0


def _open_breaker(tmp_path, half_opens_in: float) -> BreakerOpen:
    store = SqliteBreakerStore(tmp_path / "b.sqlite")
    try:
        breaker = CircuitBreaker(AERIES_BREAKER, store, clock=Clock(NOW))
        breaker.open_for(half_opens_in, "test")
        with pytest.raises(BreakerOpen) as caught:
            breaker.check()
        return caught.value
    finally:
        store.close()


# -- the decision ---------------------------------------------------------------------------------------


def test_transient_failures_are_retried_within_seconds_not_minutes():
    exhausted = AeriesUnavailableError("Aeries GET /api/v5/schools", 5, AeriesServerError("HTTP 503"))
    rng = random.Random(7)
    for number, (low, high) in enumerate([(1.5, 2.5), (3.0, 5.0), (6.0, 10.0)]):
        for exc in (exhausted, RetryExhausted("x", 3, OSError()), AeriesServerError("HTTP 500")):
            assert low <= step_retry_delay(exc, number, NOW, rng) <= high
    assert STEP_MAX_RETRIES == 3


def test_an_open_breaker_is_waited_out_when_it_half_opens_soon(tmp_path):
    soon = _open_breaker(tmp_path, 45.0)
    assert 46.0 <= step_retry_delay(soon, 0, NOW) <= 48.0  # the next attempt is the trial request
    assert 1.0 <= step_retry_delay(soon, 0, NOW + 100) <= 3.0  # already half-open
    maintenance = _open_breaker(tmp_path, 1800.0)
    assert step_retry_delay(maintenance, 0, NOW) == NO_RETRY  # waiting 30 min inside a run helps nobody
    assert step_retry_delay(_open_breaker(tmp_path, MAX_BREAKER_WAIT_S + 1), 0, NOW) == NO_RETRY


def test_permanent_failures_are_not_retried_and_unknown_ones_go_to_the_retry_policy():
    refused = AeriesAuthError.with_status(401, "GET /api/v5/schools: HTTP 401")
    assert step_retry_delay(refused, 0, NOW) == NO_RETRY
    assert step_retry_delay(AeriesResponseError("not JSON"), 0, NOW) == NO_RETRY
    assert step_retry_delay(ValueError("a bug"), 0, NOW) is None
    assert step_retry_delay(dg.Failure("no schools published yet"), 0, NOW) is None
    assert RETRY is STEP_RETRY_POLICY  # the Aeries assets' policy for those: seconds, not 60 s + 120 s
    assert (STEP_RETRY_POLICY.max_retries, STEP_RETRY_POLICY.delay) == (2, 5)


# -- in real runs (step retries on) ---------------------------------------------------------------------


def _retries(result: dg.ExecuteInJobResult) -> list[float]:
    """The seconds Dagster was asked to wait before each step retry of the run."""
    return [
        e.event_specific_data.seconds_to_wait
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]


@pytest.fixture
def env(simulator, tmp_path):
    with dg.instance_for_test() as instance:
        yield AeriesEnv(simulator, f"duckdb:///{tmp_path / 'warehouse.duckdb'}", instance)


def _aeries(env: AeriesEnv, cert: str | None = None, **policy) -> AeriesResource:
    """A new resource (Dagster builds a run's resources from their config: ``model_copy`` would not reach it)."""
    fast = {"retry_base_delay_s": 0.01, "retry_max_delay_s": 0.02, **policy}
    resource = AeriesResource(
        base_url=env.sim.base_url, cert=cert or env.sim.cert, resilience=AERIES_POLICY.but(**fast)
    )
    env.resources["aeries"] = resource
    return resource


def test_a_request_whose_retries_ran_out_is_retried_by_the_step_seconds_later(env):
    """Five dropped connections exhaust the first attempt's retries (the breaker stays closed: 5 < 10
    calls); the step is retried about 2 s later and succeeds."""
    _aeries(env)
    env.sim.faults.drop_next = 5
    started = time.monotonic()
    result = env.run(SCHOOLS_KEY)
    assert result.success
    (wait,) = _retries(result)
    assert 1.5 <= wait <= 2.5
    assert time.monotonic() - started < 30
    assert [status for _, _, status in env.sim.requests] == [0] * 5 + [200]


def test_a_step_that_meets_an_open_breaker_waits_for_its_half_open_trial(env):
    """Three failed attempts open the breaker (3 calls minimum); the next attempt is refused, and the step
    retry waits until the breaker half-opens (3 s): its single trial request succeeds, closing it."""
    resource = _aeries(env, breaker_min_calls=3, breaker_half_open_after_s=3.0)
    env.sim.faults.drop_next = 3
    result = env.run(SCHOOLS_KEY)
    assert result.success
    (wait,) = _retries(result)
    assert 3.0 <= wait <= 6.5
    assert [status for _, _, status in env.sim.requests] == [0, 0, 0, 200]  # nothing while open
    guard = resource.guard()
    try:
        assert guard.breaker.state().state == "closed"
    finally:
        guard.store.close()


@pytest.mark.parametrize("cause", ["refused certificate", "maintenance"])
def test_no_step_retry_for_a_refused_certificate_or_a_long_opening(env, cause):
    resource = _aeries(env, cert="W" * 32 if cause == "refused certificate" else None)
    if cause == "maintenance":
        guard = resource.guard()
        guard.maintenance("HTTP 503 with a long Retry-After")
        guard.store.close()
    started = time.monotonic()
    result = env.run(SCHOOLS_KEY)
    assert not result.success
    assert _retries(result) == []
    assert time.monotonic() - started < 30
    assert len(env.sim.requests) == (1 if cause == "refused certificate" else 0)


def test_a_credential_block_opens_only_when_the_credential_is_refused(tmp_path):
    """Failures and successes recorded on a block are not counted (no write per request); a refusal opens it."""
    store = SqliteBreakerStore(tmp_path / "b.sqlite")
    try:
        block = CircuitBreaker(BreakerSettings.block("aeries:auth:0000abcd", 1800.0), store, clock=Clock(NOW))
        for i in range(20):
            block.record_failure("AeriesServerError", f"call{i}")
            block.record_success(f"call{i}")
        assert block.state().state == "closed" and block.state().calls_in_window == 0
        assert block.open_for(1800.0, "authentication refused: HTTP 401").half_open_at == NOW + 1800.0
    finally:
        store.close()
