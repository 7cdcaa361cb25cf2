"""Fault injection (issue #6): whatever breaks, nothing published is lost or half-written, and the next
run converges.

Each test publishes a known-good version, injects one fault with real parts, runs, checks that every
published table is exactly the old version or exactly the new one (row count + content sha256 from
:func:`fault_tools.table_state`), removes the fault, reruns and checks convergence to the state a
fault-free run produces. Only Aeries is simulated (its FaultPlan); SFTP is the real sshd behind a
cutting TCP proxy, PostgreSQL a private cluster that is really restarted, the landing area a real
tmpfs that really fills up, and killed runs are real processes killed with SIGKILL.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from aptool_assets import definitions
from aptool_assets.partitions import year_subject_key
from aptool_assets.resilience.breaker import BreakerOpen
from aptool_assets.resilience.policy import AERIES_POLICY, IREADY_POLICY
from aptool_assets.sources.aeries.assets import ABSENCE_CODES_KEY, ATTENDANCE_DAYS_KEY, SCHOOLS_KEY, STUDENTS_KEY
from aptool_assets.sources.aeries.client import AeriesResource
from aptool_assets.sources.aeries.schedules import RANGE_END, RANGE_START
from aptool_assets.storage.breakers import open_breaker_store
from aptool_assets.storage.warehouse import TableWrite, open_warehouse
from aptool_assets.tables.aeries import ATTENDANCE_DAYS, STUDENTS
from aptool_assets.tables.iready import DIAGNOSTIC_RESULTS, LANDED_FILES, REJECTED_ROWS
from aptool_assets_tests.fault_tools import (
    ChildRun,
    CuttingProxy,
    assert_landing_clean,
    disable_step_retries,
    fill,
    known_hosts_for_port,
    landing_files,
    step_errors,
    tables_state,
    tmpfs,
)
from aptool_assets_tests.iready_helpers import write_file
from aptool_assets_tests.private_postgres import PrivatePostgres
from aptool_assets_tests.publish_atomicity_helpers import (  # noqa: F401 - publishers is a fixture
    BIG_ROWS,
    IN_FLIGHT_ROWS,
    TABLE_A,
    V1_ROWS,
    assert_backend_gone,
    assert_version,
    pg_monitor,
    publishers,
    start,
    version_frame,
    wait_for_copy,
    write_step,
)
from aptool_assets_tests.test_aeries_pipeline import THROUGH, YEAR, AeriesEnv
from aptool_assets_tests.test_iready_pipeline import ELA, IReadyEnv
from aptool_assets_tests.test_iready_pipeline import YEAR as IREADY_YEAR
from aptool_demo.district import build_district
from aptool_demo.simulator import build_sim_district, start_simulator

pytestmark = pytest.mark.faults


@pytest.fixture(autouse=True)
def own_dagster_home(tmp_path, monkeypatch):
    """Each test its own DAGSTER_HOME (conftest already gives it its own breaker store): whatever state a
    fault leaves behind, e.g. an open circuit breaker, stays with the test that caused it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def no_step_retries(monkeypatch):
    """Step retries (test_step_retries.py) are off here: a failing step fails its run, the clients' retries stay."""
    disable_step_retries(monkeypatch)


# ---------------------------------------------------------------------------------------------
# Aeries: 429/503 storms, dropped and truncated connections
# ---------------------------------------------------------------------------------------------

WINDOW = {RANGE_START: "2026-03-02", RANGE_END: THROUGH.isoformat()}  # two school weeks: 1 request per school
HALF_OPEN_S = 2.0  # the breaker's pause after a storm, shortened from 60 s (and 30 min for maintenance)


def aeries_tables(env: AeriesEnv) -> dict:
    return tables_state(env.warehouse, {"students": (STUDENTS, None), "attendance_days": (ATTENDANCE_DAYS, None)})


def sync(env: AeriesEnv) -> tuple[dg.ExecuteInJobResult, dg.ExecuteInJobResult]:
    """Roster and two weeks of attendance; each run publishes its own table."""
    return env.run(STUDENTS_KEY, partition_key=str(YEAR)), env.run(ATTENDANCE_DAYS_KEY, tags=WINDOW)


def new_district(changed: bool):
    """The simulated district (deterministic); ``changed``: a student withdrawn, a back-dated absence entered."""
    sim = build_sim_district(build_district(YEAR), through=THROUGH)
    if changed:
        withdrawn, other = sim.students[0], sim.students[5]
        sim.withdraw(withdrawn["StudentID"], withdrawn["SchoolCode"], dt.date(2026, 3, 5))
        code = next(c for c, r in sim.code_table(other["SchoolCode"]).items() if r["TypeCode"] == 3)
        sim.set_attendance(other["SchoolCode"], other["StudentID"], dt.date(2026, 3, 10), all_day=code)
    return sim


def aeries_resource(running, **breaker) -> AeriesResource:
    policy = AERIES_POLICY.but(retry_base_delay_s=0.01, **breaker)
    return AeriesResource(base_url=running.base_url, cert=running.cert, resilience=policy)


@pytest.fixture(scope="module")
def aeries_versions(tmp_path_factory):
    """Version 1 (published from the district as it was) as a DuckDB file, and the state of version 2 (a
    fault-free run after the change), built once for the module."""
    base = tmp_path_factory.mktemp("aeries_versions")
    states = []
    for changed in (False, True):
        with start_simulator(new_district(changed)) as running, dg.DagsterInstance.ephemeral() as instance:
            env = AeriesEnv(running, f"duckdb:///{base / f'v{int(changed) + 1}.duckdb'}", instance)
            env.resources["aeries"] = aeries_resource(running, circuit_breaker=False)
            assert env.run(SCHOOLS_KEY).success and env.run(ABSENCE_CODES_KEY, partition_key=str(YEAR)).success
            assert all(r.success for r in sync(env))
            states.append(aeries_tables(env))
    v1, v2 = states
    assert all(v1[t] != v2[t] for t in v1), "the change must show in every table, or the tests prove nothing"
    return base / "v1.duckdb", v1, v2


@pytest.fixture
def aeries(aeries_versions, tmp_path):
    """A warehouse holding version 1, the changed district behind a fresh simulator, the shared breaker on."""
    v1_file, v1, v2 = aeries_versions
    for f in v1_file.parent.glob("v1.duckdb*"):
        shutil.copy(f, tmp_path / f.name.replace("v1", "warehouse"))
    with start_simulator(new_district(changed=True)) as running, dg.DagsterInstance.ephemeral() as instance:
        env = AeriesEnv(running, f"duckdb:///{tmp_path / 'warehouse.duckdb'}", instance)
        env.resources["aeries"] = aeries_resource(
            running, breaker_half_open_after_s=HALF_OPEN_S, maintenance_backoff_s=HALF_OPEN_S
        )
        assert aeries_tables(env) == v1
        yield env, v1, v2


def test_aeries_storm_within_the_retry_budget_is_absorbed_and_publishes_the_new_version(aeries):
    """One of each fault (429 with Retry-After, 503, dropped, truncated): under the 5 attempts a request gets,
    and each request succeeds on a retry (one success for the breaker), so the runs succeed through the
    client's retries and publish version 2."""
    env, _v1, v2 = aeries
    faults = env.sim.faults
    faults.retry_after_s = 0.2
    faults.rate_limit_next = faults.unavailable_next = faults.drop_next = faults.truncate_next = 1

    started = time.monotonic()
    students, attendance = sync(env)
    assert students.success and attendance.success, step_errors(students) + step_errors(attendance)
    assert time.monotonic() - started >= 0.2  # the Retry-After was waited out
    assert (faults.rate_limit_next, faults.unavailable_next, faults.drop_next, faults.truncate_next) == (0, 0, 0, 0)
    statuses = [status for _, _, status in env.sim.requests]
    assert {429, 503, 0} <= set(statuses), statuses  # 0 = dropped without a response
    assert aeries_tables(env) == v2
    assert env.resources["aeries"].guard().blocked() is None


@pytest.mark.parametrize("fault", ["rate_limit", "unavailable", "drop", "truncate"])
def test_aeries_storm_beyond_the_retry_budget_keeps_the_old_version_and_converges(aeries, fault):
    """Every attendance request fails; the roster step of the same sync is unaffected and publishes version 2,
    the attendance step publishes nothing. Designed: a 429 storm is waited out request by request (5 attempts
    each, the breaker stays closed, the next run converges at once); 503s and dropped or truncated responses
    are failed attempts in the Aeries breaker's window, which opens once they are half of its calls (at least
    10) and stops the hammering: until it half-opens no request is sent at all, then the next run's trial
    request closes it and the runs converge."""
    env, v1, v2 = aeries
    faults = env.sim.faults
    faults.paths_matching = r"/attendance"
    faults.retry_after_s = 0.02
    setattr(faults, f"{fault}_next", 10_000)

    students, attendance = sync(env)
    assert students.success
    assert not attendance.success
    assert aeries_tables(env) == {"students": v2["students"], "attendance_days": v1["attendance_days"]}
    attempts = [p for _, p, _ in env.sim.requests if "/attendance" in p.lower()]
    schools = env.warehouse.query("SELECT count(*) FROM aptool.schools WHERE is_real_school").item()
    resource = env.resources["aeries"]
    blocked = resource.guard().blocked()
    if fault == "rate_limit":
        assert "gave up after 5 attempts" in step_errors(attendance)
        assert len(attempts) == 5 * schools
        assert blocked is None, blocked.describe()
    else:
        assert blocked is not None and blocked.is_open, "a storm of server errors must open the breaker"
        assert len(attempts) <= resource.resilience.breaker_min_calls + resource.max_concurrency
        setattr(faults, f"{fault}_next", 0)  # the storm passes, but the breaker is still open:
        env.sim.reset_stats()
        with resource.client() as client, pytest.raises(BreakerOpen):
            client.schools()
        assert env.sim.requests == []  # ... and nothing reaches Aeries until it half-opens
        time.sleep(max(0.0, blocked.half_open_at - time.time()) + 0.1)

    setattr(faults, f"{fault}_next", 0)
    students, attendance = sync(env)
    # Half-open lets exactly one trial request through; the roster pull's sibling requests (schools are
    # pulled concurrently) wait for its outcome, and its success closes the breaker: both runs go through.
    assert students.success, step_errors(students)
    assert attendance.success, step_errors(attendance)
    assert aeries_tables(env) == v2
    assert resource.guard().blocked() is None


# ---------------------------------------------------------------------------------------------
# i-Ready: SFTP connection cut mid-download; landing area out of space
# ---------------------------------------------------------------------------------------------

ELA_SLICE = {"academic_year": IREADY_YEAR, "subject": "ela"}
IREADY_TABLES = {"results": (DIAGNOSTIC_RESULTS, ELA_SLICE), "rejected": (REJECTED_ROWS, ELA_SLICE)}


def load_iready(env: IReadyEnv) -> dg.ExecuteInJobResult:
    """Land, parse and publish the ELA partition (step retries off: the SFTP client's own retries remain)."""
    return dg.materialize(
        assets=[*definitions.ASSETS, *definitions.ASSET_CHECKS],
        selection=dg.AssetSelection.groups("iready"),
        partition_key=year_subject_key(IREADY_YEAR, "ela"),
        resources=env.resources,
        instance=env.instance,
        raise_on_error=False,
    )


def iready_state(env: IReadyEnv) -> dict:
    return tables_state(env.warehouse, IREADY_TABLES)


def iready_reference(sftp_server, root: Path, tmp_path: Path) -> dict:
    """The state a fault-free load of what the server holds now publishes (own warehouse and landing)."""
    with dg.instance_for_test() as instance:
        ref = IReadyEnv(
            sftp_server, root, f"duckdb:///{tmp_path / 'reference.duckdb'}", tmp_path / "ref_landing", instance
        )
        assert load_iready(ref).success
        return iready_state(ref)


@pytest.fixture
def cutting_proxy(sftp_server):
    proxy = CuttingProxy((sftp_server.host, sftp_server.port))
    yield proxy
    proxy.close()


# paramiko's prefetch thread dies with the link (its exception is reported, not raised); the reader then
# waits for the channel timeout, which connect_timeout_s bounds.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_sftp_connection_cut_mid_download_leaves_no_partial_file_and_the_next_run_lands_it(
    sftp_server, sftp_test_dir, cutting_proxy, tmp_path
):
    """Every connection is cut 300 kB into a 1.5 MB download: the resource retries (3 attempts), gives up,
    leaves nothing partial in the landing area and publishes nothing. Once the link holds again (the first
    attempt still cut) the retry lands the whole file and version 2 is published."""
    root, proxy = sftp_test_dir, cutting_proxy
    write_file(root, "Current_Year", ELA, IREADY_YEAR, "ela", layout="2026-27", n_students=30)
    with dg.instance_for_test() as instance:
        env = IReadyEnv(sftp_server, root, f"duckdb:///{tmp_path / 'warehouse.duckdb'}", tmp_path / "landing", instance)
        known_hosts = known_hosts_for_port(sftp_server.known_hosts_path, proxy.port, tmp_path / "known_hosts")
        env.resources["iready_sftp"] = sftp_server.resource(
            remote_dir=sftp_server.remote_path(root),
            port=proxy.port,
            known_hosts_path=str(known_hosts),
            resilience=IREADY_POLICY.but(retry_base_delay_s=0.01),
            connect_timeout_s=3,
        )
        assert load_iready(env).success
        v1 = iready_state(env)
        v1_files = landing_files(env.landing)

        big = write_file(root, "Current_Year", ELA, IREADY_YEAR, "ela", layout="2026-27", n_students=1500, seed=2)
        assert big.stat().st_size > 1_000_000
        v2 = iready_reference(sftp_server, root, tmp_path)
        assert v2 != v1

        proxy.cut(after_bytes=300_000, connections=1_000)
        result = load_iready(env)
        assert not result.success
        errors = step_errors(result)
        assert "gave up after 3 attempts" in errors and "download" in errors, errors
        assert proxy.cuts == 3
        assert iready_state(env) == v1
        assert_landing_clean(env.landing)
        assert landing_files(env.landing) == v1_files  # not a byte of the cut downloads remains

        proxy.cut(after_bytes=300_000, connections=1)  # the link recovers after one more cut
        cuts_before = proxy.cuts
        result = load_iready(env)
        assert result.success, step_errors(result)
        assert proxy.cuts == cuts_before + 1  # the retry really happened inside this run
        assert iready_state(env) == v2
        assert_landing_clean(env.landing)
        # Designed: the 4 cut transfers, among the runs' successful calls, stay under half of the i-Ready
        # breaker's window (and the recovered transfer counts as one success), so it never opened.
        assert env.resources["iready_sftp"].guard().blocked() is None


def test_landing_area_out_of_space_fails_clearly_keeps_published_results_and_converges_after_freeing_space(
    sftp_server, sftp_test_dir, tmp_path
):
    """The landing area is a real 2 MB tmpfs, filled by something else until 200 kB remain; a 1 MB file
    hits ENOSPC: the run fails naming the cause, no partial file remains, the published results stay.
    After the filler is deleted the next run lands the file and publishes version 2."""
    root = sftp_test_dir
    write_file(root, "Current_Year", ELA, IREADY_YEAR, "ela", layout="2026-27", n_students=30)
    with tmpfs(tmp_path / "landing", "2m") as landing, dg.instance_for_test() as instance:
        env = IReadyEnv(sftp_server, root, f"duckdb:///{tmp_path / 'warehouse.duckdb'}", landing, instance)
        assert load_iready(env).success
        v1 = iready_state(env)
        v1_files = landing_files(landing)
        v1_trail = env.warehouse.read_table(LANDED_FILES).height

        write_file(root, "Current_Year", ELA, IREADY_YEAR, "ela", layout="2026-27", n_students=1000, seed=2)
        v2 = iready_reference(sftp_server, root, tmp_path)
        assert v2 != v1

        filler = fill(landing, leave_free=200_000)
        result = load_iready(env)
        assert not result.success
        errors = step_errors(result)
        assert "No space left on device" in errors, errors
        assert iready_state(env) == v1
        assert env.warehouse.read_table(LANDED_FILES).height == v1_trail  # the failed landing recorded nothing
        assert [p for p in landing_files(landing) if p != filler] == v1_files
        assert_landing_clean(landing / "iready")
        # Designed (resilience/guard.py): not transient, so no retry and no breaker count, but a dead letter.
        store = open_breaker_store()
        try:
            letters = [op for op in store.failed_operations() if op["service"] == "iready"]
        finally:
            store.close()
        assert len(letters) == 1 and "No space left on device" in letters[0]["message"], letters
        assert env.resources["iready_sftp"].guard().blocked() is None

        filler.unlink()
        result = load_iready(env)
        assert result.success, step_errors(result)
        assert iready_state(env) == v2
        assert_landing_clean(landing / "iready")


# ---------------------------------------------------------------------------------------------
# PostgreSQL restarted (or down) mid-load: a private cluster
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_pg():
    pg = PrivatePostgres()
    yield pg
    pg.destroy()


@pytest.fixture
def private_pg_url(private_pg):
    def drop() -> None:
        with psycopg.connect(private_pg.url, autocommit=True) as con:
            con.execute("DROP SCHEMA IF EXISTS aptool CASCADE")

    drop()
    yield private_pg.url
    drop()


def publish_v1_then_stream_v2(publishers, url: str):
    """Version 1 of TABLE_A published; a publisher of version 2 in another process, its COPY in flight."""
    open_warehouse(url).write(TableWrite(TABLE_A, version_frame(1, V1_ROWS), {}))
    pub = start(publishers, url, [write_step((TABLE_A, 2, BIG_ROWS))])
    with pg_monitor(url) as mon:
        wait_for_copy(mon, pub, TABLE_A, IN_FLIGHT_ROWS)
    return pub


def shadow_tables(url: str) -> list[str]:
    with psycopg.connect(url) as con:
        return [r[0] for r in con.execute("SELECT relname FROM pg_class WHERE right(relname, 6) = '__next'").fetchall()]


@pytest.mark.postgres  # a private cluster, not the machine's server: still PostgreSQL, so not in test-fast
def test_postgres_restarted_mid_copy_the_load_retries_or_fails_cleanly_then_converges(
    private_pg, private_pg_url, publishers
):
    """``pg_ctl restart -m immediate`` (a crash and recovery) while the COPY of version 2 streams: the loader's
    transaction retry either publishes version 2 after the restart or gives up with version 1 intact."""
    url = private_pg_url
    pub = publish_v1_then_stream_v2(publishers, url)
    private_pg.restart("immediate")

    rc = pub.proc.wait(timeout=180)
    stderr = pub.err(tail=None)  # the first retry's warning comes long before a give-up's traceback
    print(f"publisher exit code after the restart: {rc}")  # which of the two allowed outcomes (-rP shows it)
    assert "attempt 1 of 4" in stderr and "retrying" in stderr, stderr  # the COPY really was cut
    if rc == 0:
        assert_version(open_warehouse(url), TABLE_A, 2, BIG_ROWS)
    else:
        assert "gave up after 4 attempts" in stderr, stderr
        assert_version(open_warehouse(url), TABLE_A, 1, V1_ROWS)
        start(publishers, url, [write_step((TABLE_A, 2, BIG_ROWS))]).finish()
        assert_version(open_warehouse(url), TABLE_A, 2, BIG_ROWS)
    assert shadow_tables(url) == []  # a shadow the crash left behind was dropped by the (re)load


@pytest.mark.postgres  # a private cluster, not the machine's server: still PostgreSQL, so not in test-fast
def test_postgres_down_longer_than_the_retry_budget_fails_cleanly_then_converges(
    private_pg, private_pg_url, publishers
):
    """``pg_ctl stop -m fast`` mid-COPY and the server stays down: every retry fails, the process exits with
    the database error, and once PostgreSQL is back it holds exactly version 1; a rerun publishes version 2."""
    url = private_pg_url
    pub = publish_v1_then_stream_v2(publishers, url)
    private_pg.stop("fast")
    try:
        rc = pub.proc.wait(timeout=60)
    finally:
        private_pg.start()
    assert rc != 0
    assert "gave up after 4 attempts" in pub.err(), pub.err()
    # By design the half-loaded shadow (aptool.<table>__next, never read) may remain; the table is untouched.
    assert_version(open_warehouse(url), TABLE_A, 1, V1_ROWS)

    start(publishers, url, [write_step((TABLE_A, 2, BIG_ROWS))]).finish()
    assert_version(open_warehouse(url), TABLE_A, 2, BIG_ROWS)
    assert shadow_tables(url) == []  # ... and the next load drops it first


# ---------------------------------------------------------------------------------------------
# A real run killed mid-publish
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def children():
    started: list[ChildRun] = []
    yield started
    for child in started:
        child.cleanup()


def test_run_killed_mid_publish_leaves_the_old_version_and_the_next_run_converges(warehouse_url, tmp_path, children):
    """A real ``aptool/students`` materialization in a subprocess is SIGKILLed inside its publishing
    transaction (every statement run, COMMIT not yet: on PostgreSQL the old table already dropped and the
    shadow renamed in its place). A fresh connection sees exactly version 1; a rerun publishes exactly what a
    fault-free run does."""
    sim = build_sim_district(build_district(YEAR), through=THROUGH)
    with start_simulator(sim) as running, dg.DagsterInstance.ephemeral() as instance:
        env = AeriesEnv(running, warehouse_url, instance)
        assert env.run(SCHOOLS_KEY, STUDENTS_KEY, partition_key=str(YEAR)).success
        v1 = tables_state(env.warehouse, {"students": (STUDENTS, None)})

        for record in sim.students[:3]:
            sim.withdraw(record["StudentID"], record["SchoolCode"], dt.date(2026, 3, 5))
        ref = AeriesEnv(running, f"duckdb:///{tmp_path / 'reference.duckdb'}", instance)
        assert ref.run(SCHOOLS_KEY, STUDENTS_KEY, partition_key=str(YEAR)).success
        v2 = tables_state(ref.warehouse, {"students": (STUDENTS, None)})
        assert v2 != v1

        plan = {
            "aeries_url": running.base_url,
            "aeries_cert": running.cert,
            "warehouse_url": warehouse_url,
            "school_year": YEAR,
            "as_of": THROUGH.isoformat(),
            "keys": ["aptool/students"],
            "partition_key": str(YEAR),  # the current year's roster: aptool.students
        }
        child = ChildRun({**plan, "hold_publish_of": "students"})
        children.append(child)
        line = child.wait_for("HOLDING")
        if warehouse_url.startswith("postgresql"):
            backend = int(line.rsplit("backend_pid=", 1)[1])
            with pg_monitor(warehouse_url) as mon:
                child.kill9()
                assert_backend_gone(mon, backend)
        else:
            child.kill9()
        assert tables_state(open_warehouse(warehouse_url), {"students": (STUDENTS, None)}) == v1

        assert env.run(STUDENTS_KEY, partition_key=str(YEAR)).success  # the next run
        assert tables_state(open_warehouse(warehouse_url), {"students": (STUDENTS, None)}) == v2
        if warehouse_url.startswith("postgresql"):
            assert shadow_tables(warehouse_url) == []
