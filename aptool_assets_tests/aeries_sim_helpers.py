"""Helpers for the tests against the loopback Aeries simulator (the simulator's own tests and the
client's): one simulated district and one running simulator per test module, a raw authenticated HTTP
client on its /api/v5 root (``api``), and a factory of ``AeriesClient``s with tiny retry delays
(``make_client``). ``_clean_simulator`` is autouse in the modules that import it: no faults or request
history carried over between their tests."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from aptool_assets.resilience.retry import RetrySettings
from aptool_assets.sources.aeries.client import AeriesClient
from aptool_demo.district import SCHOOLS, build_district
from aptool_demo.simulator import SimDistrict, build_sim_district, start_simulator

YEAR = 2025
THROUGH = date(2026, 3, 20)
REAL_SCHOOLS = [code for code, *_ in SCHOOLS]
FAST = RetrySettings(max_attempts=3, base_delay_s=0.001, max_delay_s=0.005, backoff="exponential", jitter=True)


def fresh_district() -> SimDistrict:
    return build_sim_district(build_district(YEAR), through=THROUGH)


@pytest.fixture(scope="module")
def district() -> SimDistrict:
    return fresh_district()


@pytest.fixture(scope="module")
def sim(district):
    with start_simulator(district) as running:
        yield running


@pytest.fixture
def api(sim):
    """A raw HTTP client on the simulator's /api/v5 root, authenticated."""
    sim.faults.__init__()  # each test starts without faults
    with httpx.Client(base_url=f"{sim.base_url}/api/v5", headers={"AERIES-CERT": sim.cert}, timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def _clean_simulator(request):
    """No faults or request history carried over between tests."""
    if "sim" in request.fixturenames:
        running = request.getfixturevalue("sim")
        running.faults.__init__()
        running.wait_idle()  # e.g. requests a timed-out client abandoned would count as in flight
        running.reset_stats()
    yield


@pytest.fixture
def make_client(sim):
    opened: list[AeriesClient] = []

    def factory(**overrides) -> AeriesClient:
        options = {"database_year": YEAR, "retry": FAST, "timeout_s": 5.0} | overrides
        base_url, cert = options.pop("base_url", sim.base_url), options.pop("cert", sim.cert)
        client = AeriesClient(base_url, cert, **options)
        opened.append(client)
        return client

    yield factory
    for client in opened:
        client.close()
