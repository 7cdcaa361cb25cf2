"""The Aeries client against the real loopback simulator (no HTTP mocking): paging, retries and errors,
no certificate in errors or logs, bounded concurrency, the change feed, and the resource. Retry delays
are tiny so the suite stays fast; only the Retry-After test waits a second.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime

import polars as pl
import pytest

from aptool_assets.resilience.policy import AERIES_POLICY
from aptool_assets.resilience.retry import RetryExhausted, RetrySettings
from aptool_assets.sources.aeries.client import (
    AeriesAuthError,
    AeriesClient,
    AeriesConnectionError,
    AeriesError,
    AeriesNotFoundError,
    AeriesResource,
    AeriesResponseError,
    AeriesServerError,
    AeriesTimeoutError,
    AeriesUnavailableError,
    parse_retry_after,
)
from aptool_assets.sources.aeries.frames import (
    DATA_CHANGES_SCHEMA,
    attendance_frame,
    data_changes_frame,
    is_real_school,
    schools_frame,
)
from aptool_assets_tests.aeries_sim_helpers import (  # noqa: F401 - the fixtures; _clean_simulator is autouse
    REAL_SCHOOLS,
    YEAR,
    _clean_simulator,
    district,
    make_client,
    sim,
)
from aptool_demo.simulator import FaultPlan

# -- paging ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", ["7", "n", "n+1", "divisor"])
def test_paging_stops_at_the_first_short_page(sim, district, make_client, page_size):
    n = sum(1 for r in district.students if r["SchoolCode"] == 101)
    divisor = next((d for d in range(2, n) if n % d == 0), 1)
    size = {"7": 7, "n": n, "n+1": n + 1, "divisor": divisor}[page_size]
    client = make_client(page_size=size)
    records = client.students(101)
    assert len(records) == n and len({r["StudentID"] for r in records}) == n
    assert [r["StudentNumber"] for r in records] == sorted(r["StudentNumber"] for r in records)
    expected = math.ceil(n / size) + (1 if n % size == 0 else 0)
    assert client.request_count == expected == len(sim.requests)
    starts = [int(m["query"]["StartingRecord"]) for m in sim.request_meta]
    ends = [int(m["query"]["EndingRecord"]) for m in sim.request_meta]
    assert starts == [1 + i * size for i in range(expected)] and ends == [s + size - 1 for s in starts]


def test_every_request_carries_the_headers_and_database_year(sim, make_client):
    client = make_client()
    client.schools()
    client.attendance(101, date(2025, 9, 2), date(2025, 9, 30))
    assert all(m["query"]["DatabaseYear"] == str(YEAR) for m in sim.request_meta)
    assert all(m["accept"] == "application/json" for m in sim.request_meta)
    assert sim.request_meta[-1]["query"].items() >= {"StartDate": "20250902", "EndDate": "20250930"}.items()
    unset = make_client(database_year=None)
    unset.schools()
    assert "DatabaseYear" not in sim.request_meta[-1]["query"]


# -- retries and errors ---------------------------------------------------------------------------


def test_retry_after_is_honoured(sim, make_client):
    sim.faults.rate_limit_next, sim.faults.retry_after_s = 1, 1.0
    client = make_client()  # backoff alone would wait about a millisecond
    started = time.monotonic()
    schools = client.schools()
    assert time.monotonic() - started >= 1.0
    assert schools and client.request_count == 2
    assert [status for _, _, status in sim.requests] == [429, 200]


def test_503_is_retried_then_succeeds(sim, make_client, caplog):
    caplog.set_level(logging.WARNING)
    sim.faults.unavailable_next = 2
    client = make_client()
    assert client.calendar(101)
    assert client.request_count == 3 and [s for _, _, s in sim.requests] == [503, 503, 200]
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2 and all(r.levelno == logging.WARNING for r in retries)
    assert "/api/v5/schools/101/calendar" in retries[0].getMessage()


@pytest.mark.parametrize("fault", ["drop_next", "truncate_next"])
def test_a_dropped_or_cut_connection_is_retried(sim, make_client, fault):
    setattr(sim.faults, fault, 1)
    client = make_client()
    assert len(client.students(201)) == sum(1 for r in sim.district.students if r["SchoolCode"] == 201)
    assert client.request_count == 2


def test_a_wrong_certificate_fails_after_exactly_one_request(sim, make_client):
    client = make_client(cert="X" * 32)
    with pytest.raises(AeriesAuthError) as caught:
        client.students(101)
    assert client.request_count == 1 and len(sim.requests) == 1 and sim.requests[0][2] == 401
    assert "/api/v5/schools/101/students" in str(caught.value)
    assert not isinstance(caught.value, RetryExhausted)


def test_exhausted_retries_raise_unavailable(sim, make_client):
    sim.faults.unavailable_next = 10
    client = make_client()
    with pytest.raises(AeriesUnavailableError) as caught:
        client.schools()
    assert isinstance(caught.value, RetryExhausted) and isinstance(caught.value, AeriesError)
    assert caught.value.attempts == 3 == client.request_count
    assert isinstance(caught.value.last, AeriesServerError)


def test_timeouts_are_retried_then_reported(sim, make_client):
    sim.faults.latency_s = 0.3
    client = make_client(timeout_s=0.05, retry=RetrySettings(max_attempts=2, base_delay_s=0.001, max_delay_s=0.001))
    with pytest.raises(AeriesUnavailableError) as caught:
        client.calendar(201)
    assert isinstance(caught.value.last, AeriesTimeoutError) and client.request_count == 2


def test_connection_refused_is_retried(make_client):
    client = make_client(base_url="http://127.0.0.1:9/aeries")  # discard port: nothing listens
    with pytest.raises(AeriesUnavailableError) as caught:
        client.schools()
    assert isinstance(caught.value.last, AeriesConnectionError) and client.request_count == 3


def test_invalid_json_names_the_endpoint_and_is_not_retried(sim, make_client):
    sim.faults.invalid_json_next = 1
    client = make_client()
    with pytest.raises(AeriesResponseError, match=r"/api/v5/schools/201/calendar") as caught:
        client.calendar(201)
    assert "not valid JSON" in str(caught.value) and client.request_count == 1


def test_single_object_calls(sim, make_client):
    client = make_client()
    assert client.school(201)["SchoolCode"] == 201
    with pytest.raises(AeriesNotFoundError, match="/api/v5/schools/4321"):
        client.school(4321)
    record = next(r for r in sim.district.students if r["SchoolCode"] == 201)
    assert [r["StudentID"] for r in client.student(201, record["StudentID"])] == [record["StudentID"]]
    assert client.student(101, record["StudentID"]) == []


def test_parse_retry_after():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after("0.25", now) == 0.25
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert parse_retry_after("86400", now) == 300.0  # a sane cap
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None


# -- secrets stay out of errors and logs ----------------------------------------------------------


def test_no_certificate_in_any_exception_or_log_record(sim, make_client, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    wrong = "Wr0ngCertWr0ngCertWr0ngCert12345"
    texts: list[str] = []

    def capture(fn) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - collecting every message
            chain = exc
            while chain is not None:
                texts.extend([str(chain), repr(chain)])
                chain = chain.__cause__ or chain.__context__
                if chain is exc:
                    break

    good = make_client()
    bad = make_client(cert=wrong)
    sim.faults.unavailable_next = 1
    capture(good.schools)
    capture(lambda: bad.students(101))
    sim.faults.drop_next = 5
    capture(good.schools)
    sim.faults.drop_next, sim.faults.invalid_json_next = 0, 1
    capture(good.schools)
    capture(lambda: good.school(4321))
    texts += [repr(good), repr(bad), repr(AeriesResource(base_url=sim.base_url, cert=sim.cert))]
    texts += [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    texts += [repr(r.args) for r in caplog.records]
    assert any("HTTP 401" in t for t in texts) and any("gave up" in t for t in texts)
    joined = "\n".join(texts)
    assert sim.cert not in joined and wrong not in joined
    debug = [r.getMessage() for r in caplog.records if r.name.endswith("aptool_assets.sources.aeries")]
    assert any("GET /api/v5/schools -> 200" in m for m in debug)


def test_certificate_that_cannot_be_a_header_is_refused_without_echoing_it(sim):
    with pytest.raises(AeriesError) as caught:
        AeriesClient(sim.base_url, "sécret cert")
    assert "sécret" not in str(caught.value)


# -- concurrency ----------------------------------------------------------------------------------


def test_map_schools_bounds_requests_in_flight(sim, make_client):
    sim.faults.latency_s = 0.2  # long enough that two requests overlap even on a loaded machine
    client = make_client(max_concurrency=2)
    codes = [0, *REAL_SCHOOLS, 103, 999]

    def two_calls(code: int) -> int:
        return len(client.calendar(code)) + len(client.absence_codes(code))

    results = client.map_schools(two_calls, codes)
    assert list(results) == codes
    assert sim.max_in_flight == 2  # concurrent, and never more than configured
    assert client.request_count == 2 * len(codes)
    # Nested use shares the same bound: a per-school function that fans out itself stays within it.
    sim.reset_stats()
    client.map_schools(lambda code: client.map_schools(client.calendar, [code, code + 1]), REAL_SCHOOLS[:2])
    assert sim.max_in_flight <= 2


def test_map_schools_reraises_the_first_failure(make_client):
    client = make_client(max_concurrency=2)
    seen: list[int] = []
    lock = threading.Lock()

    def fail_on_102(code: int) -> int:
        with lock:
            seen.append(code)
        if code == 102:
            raise AeriesNotFoundError(f"school {code}")
        return code

    with pytest.raises(AeriesNotFoundError, match="school 102"):
        client.map_schools(fail_on_102, REAL_SCHOOLS)
    assert client.map_schools(fail_on_102, []) == {}


def test_full_year_attendance_pull_per_school_per_month(district, make_client):
    """The demo district's full year, per real school per calendar month (July-June): 3 x 12 requests."""
    client = make_client(max_concurrency=3)
    schools = schools_frame(client.schools()).filter(is_real_school())
    codes = schools.get_column("school_code").to_list()
    assert codes == REAL_SCHOOLS
    months = []
    for i in range(12):
        first = date(YEAR + (i >= 6), (6 + i) % 12 + 1, 1)
        months.append((first, (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)))
    before = client.request_count

    def pull(code: int) -> pl.DataFrame:
        return pl.concat([attendance_frame(client.attendance(code, a, b), code) for a, b in months])

    monthly = pl.concat(client.map_schools(pull, codes).values())
    assert client.request_count - before == len(codes) * 12 == 36
    whole = pl.concat([attendance_frame(client.attendance(c, months[0][0], months[-1][1]), c) for c in codes])
    assert monthly.sort("school_code", "student_id", "calendar_date").equals(
        whole.sort("school_code", "student_id", "calendar_date")
    )
    assert monthly.height == sum(len(days) for per in district.attendance.values() for days in per.values())


# -- change feed ----------------------------------------------------------------------------------


def test_student_data_changes_paths_and_time_zones(sim, district, make_client):
    client = make_client()
    with pytest.raises(ValueError, match="attendance"):
        client.student_data_changes("attendance", datetime(2026, 1, 1))
    changes = data_changes_frame(client.student_data_changes("enrollment", datetime(2025, 7, 1, 0, 0)))
    assert changes.schema == pl.Schema(DATA_CHANGES_SCHEMA) and changes.height >= 3
    client.student_data_changes("student", datetime(2026, 3, 5, 7, 9))
    assert sim.requests[-1][1] == "/aeries/api/v5/StudentDataChanges/student/2026/3/5/7/9"
    # An aware time is converted with the server's own offset from /systeminfo.
    district.set_clock(datetime(2026, 1, 15, 9, 0))  # winter: UTC-8
    try:
        client.student_data_changes("student", datetime(2026, 1, 15, 20, 30, tzinfo=UTC))
    finally:
        district.set_clock(None)
    assert sim.requests[-1][1].endswith("/StudentDataChanges/student/2026/1/15/12/30")


# -- resource -------------------------------------------------------------------------------------


def test_resource_opens_a_client_and_refuses_when_unconfigured(sim):
    unconfigured = AeriesResource()
    assert not unconfigured.is_configured()
    with pytest.raises(AeriesError, match="AERIES_BASE_URL and AERIES_CERT"), unconfigured.client():
        pass
    resource = AeriesResource(
        base_url=sim.base_url + "/",
        cert=sim.cert,
        database_year=YEAR,
        resilience=AERIES_POLICY.but(retry_base_delay_s=0.001),
    )
    assert resource.is_configured() and sim.cert not in repr(resource)
    with resource.client() as client:
        assert client.system_info()["DatabaseYear"] == f"{YEAR}-{YEAR + 1}"
        assert client.request_count == 1
    with AeriesResource(base_url=sim.base_url + "/api/v5", cert=sim.cert).client() as client:
        assert client.schools()  # a base URL that already ends in /api/v5 still works


def test_fault_plan_default_is_inert():
    assert FaultPlan().take("/anything") == (None, 0.0)
