"""Publishing is atomic under real failures (contract §3): real subprocesses, real ``kill -9``.

Every published table goes through ``Warehouse.write`` (one transaction per call). These tests load
a new version of a table in a separate Python process and kill it with SIGKILL while the load is
really in flight — for PostgreSQL, while ``pg_stat_progress_copy`` shows its COPY streaming rows into
the table (or its shadow), or, for a table carrying a DBA addition (replaced in place), while it inserts
into the table itself; for DuckDB, while its INSERT runs or just before its COMMIT — and then check from a fresh
connection that the table still holds exactly the previous version (row count and a content
checksum), that nothing of the dead process lingers, and that re-running the publish converges.
They also cover a run that dies between two tables (each table is complete, old or new, and a
re-run converges), one ``write()`` of two tables that fails mid-way, and readers counting rows
while a load is in flight.

The subprocess runs :func:`run_plan` of this module (``python -c``); for DuckDB it can wrap
``duckdb.connect`` to announce its INSERT and hold its COMMIT (``stall_duckdb_commit``) so the kill
lands inside the open transaction deterministically; the warehouse code itself is not changed.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

from aptool_assets.storage.warehouse import TableSpec, TableWrite, Warehouse, open_warehouse
from aptool_assets_tests.child_process import ChildProcess
from aptool_assets_tests.conftest import schema_reset, throwaway_database

REPO = Path(__file__).resolve().parents[1]

V1_ROWS = 200_000  # the published version every test starts from
BIG_ROWS = 1_500_000  # a version 2 whose PostgreSQL load takes a few seconds (~5x the in-flight mark)
DUCKDB_BIG_ROWS = 1_000_000  # DuckDB needs no long load: the child announces its INSERT and holds COMMIT
SMALL_ROWS = 20_000
IN_FLIGHT_ROWS = 300_000  # "really in flight": the COPY has streamed more rows than version 1 holds
IN_FLIGHT_TIMEOUT_S = 90.0  # generous: a loaded CI machine may be slow to start the subprocess
BACKEND_GONE_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 180.0


def _spec(name: str, **sql_types: str) -> TableSpec:
    return TableSpec(
        name=name,
        columns={"id": pl.Int64, "version": pl.Int32, "payload": pl.Utf8},
        key=("id",),
        description="publish-atomicity test table",
        sql_types=sql_types,
    )


TABLE_A = _spec("atomicity_a")
TABLE_B = _spec("atomicity_b")
# Same columns, but stored as BIGINT: a non-numeric payload passes conform() and fails inside the
# database, mid-transaction, on both backends.
STRICT_B = _spec("atomicity_strict_b", payload="BIGINT")
SPECS = {t.name: t for t in (TABLE_A, TABLE_B, STRICT_B)}


def version_frame(version: int, n: int, bad_last_row: bool = False) -> pl.DataFrame:
    """Version ``version`` of a table: ids 0..n-1, every row stamped with its version."""
    df = pl.select(id=pl.int_range(n, dtype=pl.Int64)).with_columns(
        version=pl.lit(version, dtype=pl.Int32),
        payload=(pl.col("id") * 7919 + version * 104_729).cast(pl.Utf8),
    )
    if bad_last_row:
        df = df.with_columns(
            payload=pl.when(pl.col("id") == n - 1).then(pl.lit("not a number")).otherwise(pl.col("payload"))
        )
    return df


# ---------------------------------------------------------------------------------------------
# What a version looks like from SQL
# ---------------------------------------------------------------------------------------------

FULL_CHECKSUM_MAX_ROWS = 500_000  # md5 of the ordered rows; larger tables get the cheap sums only


def checksum(wh: Warehouse, table: TableSpec) -> tuple:
    """(rows, sum(id), sum(version), min(version), max(version), md5 of the ordered rows | None)."""
    sums = wh.query(
        f"SELECT count(*) AS n, coalesce(sum(id), 0) AS s_id, coalesce(sum(version), 0) AS s_v, "
        f"min(version) AS v_min, max(version) AS v_max FROM {table.qualified}"
    ).row(0)
    n, s_id, s_v, v_min, v_max = sums
    digest = None
    if n <= FULL_CHECKSUM_MAX_ROWS:
        digest = wh.query(
            "SELECT md5(coalesce(string_agg(concat_ws(':', id, version, payload), ',' ORDER BY id), '')) AS h "
            f"FROM {table.qualified}"
        ).item()
    return int(n), int(s_id), int(s_v), v_min, v_max, digest


@functools.cache
def expected_checksum(version: int, n: int) -> tuple:
    digest = None
    if n <= FULL_CHECKSUM_MAX_ROWS:
        text = (
            version_frame(version, n)
            .select(pl.concat_str(["id", "version", "payload"], separator=":").str.join(","))
            .item()
        )
        digest = hashlib.md5((text or "").encode()).hexdigest()
    return n, n * (n - 1) // 2, n * version, version, version, digest


def assert_version(wh: Warehouse, table: TableSpec, version: int, n: int) -> None:
    got, want = checksum(wh, table), expected_checksum(version, n)
    assert got == want, f"{table.qualified}: expected version {version} ({n} rows) {want}, found {got}"


# ---------------------------------------------------------------------------------------------
# The publishing process
# ---------------------------------------------------------------------------------------------


def run_plan(plan: dict[str, Any]) -> None:
    """Runs in the subprocess: each step is a ``write`` (one transaction), a ``say`` or a ``sleep``."""
    wh = open_warehouse(plan["url"])
    for step in plan["steps"]:
        kind = step[0]
        if kind == "write":
            wh.write(*(TableWrite(SPECS[name], version_frame(v, n, bad), {}) for name, v, n, bad in step[1]))
        elif kind == "say":
            print(step[1], flush=True)
        elif kind == "sleep":
            time.sleep(step[1])
        else:
            raise ValueError(kind)
    print("DONE", flush=True)


_CHILD = r"""
import json, sys, time
plan = json.loads(sys.argv[1])
if plan.get("stall_duckdb_commit"):
    import duckdb
    _real_connect = duckdb.connect

    class _AnnouncingConnection:
        def __init__(self, con):
            self._con = con

        def __getattr__(self, name):
            return getattr(self._con, name)

        def execute(self, sql, *args, **kwargs):
            head = sql.strip().upper()
            if head.startswith("INSERT INTO"):
                print("INSERTING " + sql.split()[2], flush=True)
            if head == "COMMIT":
                print("BEFORE_COMMIT", flush=True)
                time.sleep(3600)
            return self._con.execute(sql, *args, **kwargs)

    duckdb.connect = lambda *a, **k: _AnnouncingConnection(_real_connect(*a, **k))

from aptool_assets_tests.test_publish_atomicity import run_plan
run_plan(plan)
"""


def write_step(*tables: tuple[TableSpec, int, int] | tuple[TableSpec, int, int, bool]) -> list:
    return ["write", [[t[0].name, t[1], t[2], bool(t[3]) if len(t) > 3 else False] for t in tables]]


class Publisher(ChildProcess):
    """A publishing subprocess whose stdout lines can be awaited."""

    name = "publisher"

    def __init__(self, url: str, steps: list, stall_duckdb_commit: bool = False):
        super().__init__(_CHILD, {"url": url, "steps": steps, "stall_duckdb_commit": stall_duckdb_commit})

    def wait_for_line(self, prefix: str, timeout: float = IN_FLIGHT_TIMEOUT_S) -> str:
        return super().wait_for_line(prefix, timeout)

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> None:
        super().finish(timeout)


@pytest.fixture
def publishers() -> Iterator[list[Publisher]]:
    """Start publishers through ``start(...)``; any still running at teardown are killed."""
    started: list[Publisher] = []
    yield started
    for p in started:
        p.cleanup()


def start(started: list[Publisher], url: str, steps: list, **kw) -> Publisher:
    p = Publisher(url, steps, **kw)
    started.append(p)
    return p


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def atomic_pg_url(postgres_url) -> Iterator[str]:
    """A database of its own (this module kills sessions in it), dropped at the end."""
    with throwaway_database("aptool_atomic") as url:
        yield url


@pytest.fixture
def pg_url(atomic_pg_url) -> Iterator[str]:
    schema_reset(atomic_pg_url)
    yield atomic_pg_url
    schema_reset(atomic_pg_url)


@pytest.fixture
def duckdb_url(tmp_path) -> Iterator[str]:
    path = tmp_path / "atomicity.duckdb"
    yield f"duckdb:///{path}"
    for f in tmp_path.glob("atomicity.duckdb*"):
        f.unlink()


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_url(request) -> str:
    return request.getfixturevalue("duckdb_url" if request.param == "duckdb" else "pg_url")


def pg_monitor(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, application_name="atomicity-monitor")


def wait_for(pub: Publisher, probe: Callable[[], Any], what: str) -> Any:
    """Poll ``probe`` until it returns something (which is returned); fail if the publisher exits first."""
    deadline = time.monotonic() + IN_FLIGHT_TIMEOUT_S
    while time.monotonic() < deadline:
        if not pub.alive():
            pytest.fail(f"publisher exited ({pub.proc.returncode}) before {what} was seen: {pub.err()}")
        if found := probe():
            return found
        time.sleep(0.005)
    pytest.fail(f"no {what} within {IN_FLIGHT_TIMEOUT_S}s")


def wait_for_copy(mon: psycopg.Connection, pub: Publisher, table: TableSpec, min_rows: int) -> tuple[int, int]:
    """Block until the publisher's COPY into ``table`` has streamed ``min_rows``; (backend pid, rows)."""

    def probe() -> tuple[int, int] | None:
        row = mon.execute(
            "SELECT p.pid, p.tuples_processed FROM pg_stat_progress_copy p "
            "JOIN pg_stat_activity a USING (pid) "
            "WHERE p.datname = current_database() AND a.application_name = 'aptool' "
            # A whole-table replace of a bare table COPYs into its shadow table (``<table>__next``, loaded
            # in parallel before the publishing transaction swaps it in); a slice replace into the table.
            "AND p.relid IN (to_regclass(%s), to_regclass(%s))",
            [table.qualified, f"{table.qualified}__next"],
        ).fetchone()
        return row if row and row[1] >= min_rows else None

    return wait_for(pub, probe, f"COPY into {table.qualified} reaching {min_rows} rows")


def attach(url: str, table: TableSpec) -> None:
    """What a DBA adds (here a comment): from now on a whole-table replace changes rows in place."""
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"COMMENT ON TABLE {table.qualified} IS 'kept by every publish'")


def in_place_writer(mon: psycopg.Connection, table: TableSpec, verb: str = "(INSERT INTO|UPDATE|DELETE FROM)") -> Any:
    """The backend pid of a publisher writing rows into ``table`` itself (an in-place replace), if any."""
    row = mon.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'aptool' "
        "AND state = 'active' AND query ~ %s",
        [rf"^{verb} {re.escape(table.qualified)} "],
    ).fetchone()
    return row and row[0]


def assert_backend_gone(mon: psycopg.Connection, backend_pid: int) -> None:
    """The killed client's server session ends (its transaction rolled back) and holds no locks."""
    deadline = time.monotonic() + BACKEND_GONE_TIMEOUT_S
    while mon.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend_pid]).fetchone():
        assert time.monotonic() < deadline, f"backend {backend_pid} still alive {BACKEND_GONE_TIMEOUT_S}s after kill -9"
        time.sleep(0.05)
    assert mon.execute("SELECT count(*) FROM pg_locks WHERE pid = %s", [backend_pid]).fetchone()[0] == 0
    # Every other session of the publisher (parallel COPY streams into the shadow) ends too.
    while True:
        lingering = mon.execute(
            "SELECT pid, state, left(query, 60) FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchall()
        if not lingering:
            break
        assert time.monotonic() < deadline, f"sessions left behind: {lingering}"
        time.sleep(0.05)
    # Nobody waits on anything in this database.
    assert (
        mon.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE d.datname = current_database() AND NOT l.granted"
        ).fetchone()[0]
        == 0
    )


# ---------------------------------------------------------------------------------------------
# kill -9 mid-load
# ---------------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("way", ["swap", "in_place"])
def test_postgres_kill9_mid_copy_keeps_version1_and_rerun_converges(pg_url, publishers, way):
    """``swap``: killed while the new version streams into the shadow table. ``in_place`` (the table carries
    a DBA addition): killed inside the publishing transaction after it updated version 1's rows in the
    table itself, while it inserts the new ones."""
    wh = open_warehouse(pg_url)
    wh.write(TableWrite(TABLE_A, version_frame(1, V1_ROWS), {}))
    assert_version(wh, TABLE_A, 1, V1_ROWS)
    if way == "in_place":
        attach(pg_url, TABLE_A)

    with pg_monitor(pg_url) as mon:
        # Whole-table replaces COPY into a shadow or stage table, so measure the database, not the table.
        size_v1 = mon.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        pub = start(publishers, pg_url, [write_step((TABLE_A, 2, BIG_ROWS))])
        if way == "swap":
            backend, streamed = wait_for_copy(mon, pub, TABLE_A, IN_FLIGHT_ROWS)
            assert streamed >= IN_FLIGHT_ROWS
        else:
            # Its deletes and updates of version 1's rows are done, in the same transaction.
            backend = wait_for(pub, lambda: in_place_writer(mon, TABLE_A, "INSERT INTO"), "INSERT into the table")
        # The uncommitted rows are physically on disk already...
        size_in_flight = mon.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        pub.kill9()
        assert size_in_flight > size_v1
        assert_backend_gone(mon, backend)

    # ...yet a fresh connection sees exactly version 1.
    assert_version(open_warehouse(pg_url), TABLE_A, 1, V1_ROWS)

    rerun = start(publishers, pg_url, [write_step((TABLE_A, 2, BIG_ROWS))])
    rerun.finish()
    assert_version(open_warehouse(pg_url), TABLE_A, 2, BIG_ROWS)
    if way == "in_place":
        assert open_warehouse(pg_url).query(f"SELECT obj_description('{TABLE_A.qualified}'::regclass) AS c").item()


@pytest.mark.parametrize("kill_at", ["during_insert", "before_commit"])
def test_duckdb_kill9_mid_write_keeps_version1_and_rerun_converges(duckdb_url, publishers, kill_at):
    path = Path(duckdb_url[len("duckdb://") :])
    wh = open_warehouse(duckdb_url)
    wh.write(TableWrite(TABLE_A, version_frame(1, V1_ROWS), {}))
    assert_version(wh, TABLE_A, 1, V1_ROWS)

    pub = start(publishers, duckdb_url, [write_step((TABLE_A, 2, DUCKDB_BIG_ROWS))], stall_duckdb_commit=True)
    pub.wait_for_line(f"INSERTING {TABLE_A.qualified}")
    if kill_at == "during_insert":
        time.sleep(0.05)  # the INSERT of 1M rows is running (or done and held at COMMIT): uncommitted either way
    else:
        pub.wait_for_line("BEFORE_COMMIT")  # every statement of the transaction has run
    pub.kill9()

    # Reopening the file (and replaying its WAL) gives exactly version 1.
    assert path.exists()
    assert_version(open_warehouse(duckdb_url), TABLE_A, 1, V1_ROWS)

    rerun = start(publishers, duckdb_url, [write_step((TABLE_A, 2, DUCKDB_BIG_ROWS))])
    rerun.finish()
    assert_version(open_warehouse(duckdb_url), TABLE_A, 2, DUCKDB_BIG_ROWS)


# ---------------------------------------------------------------------------------------------
# Several tables
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("death", ["raise", "kill9"])
def test_run_dying_between_tables_leaves_each_complete_and_rerun_converges(any_url, publishers, death):
    """A run publishes A, then B, in separate transactions, and dies in between."""
    wh = open_warehouse(any_url)
    wh.write(TableWrite(TABLE_A, version_frame(1, SMALL_ROWS), {}))
    wh.write(TableWrite(TABLE_B, version_frame(1, SMALL_ROWS), {}))
    n2 = SMALL_ROWS + 5_000

    if death == "raise":

        def run(fail_after_a: bool) -> None:
            wh.write(TableWrite(TABLE_A, version_frame(2, n2), {}))
            if fail_after_a:
                raise RuntimeError("step failed after publishing A")
            wh.write(TableWrite(TABLE_B, version_frame(2, n2), {}))

        with pytest.raises(RuntimeError, match="after publishing A"):
            run(fail_after_a=True)
    else:
        steps = [write_step((TABLE_A, 2, n2)), ["say", "A_PUBLISHED"], ["sleep", 3600], write_step((TABLE_B, 2, n2))]
        pub = start(publishers, any_url, steps)
        pub.wait_for_line("A_PUBLISHED")
        pub.kill9()

    assert_version(open_warehouse(any_url), TABLE_A, 2, n2)  # fully new
    assert_version(open_warehouse(any_url), TABLE_B, 1, SMALL_ROWS)  # fully old

    # The re-run publishes both again (idempotent for A) and converges.
    if death == "raise":
        run(fail_after_a=False)
    else:
        start(publishers, any_url, [write_step((TABLE_A, 2, n2)), write_step((TABLE_B, 2, n2))]).finish()
    assert_version(open_warehouse(any_url), TABLE_A, 2, n2)
    assert_version(open_warehouse(any_url), TABLE_B, 2, n2)


def test_one_write_of_two_tables_failing_in_the_database_leaves_both_old(any_url):
    """B's last row is rejected by the database after A's rows and most of B's were written."""
    wh = open_warehouse(any_url)
    wh.write(
        TableWrite(TABLE_A, version_frame(1, SMALL_ROWS), {}), TableWrite(STRICT_B, version_frame(1, SMALL_ROWS), {})
    )
    n2 = SMALL_ROWS * 2
    bad = version_frame(2, n2, bad_last_row=True)
    assert STRICT_B.conform(bad).height == n2  # the failure is the database's, not conform()'s

    with pytest.raises(Exception, match=r"(?i)not a number"):
        wh.write(TableWrite(TABLE_A, version_frame(2, n2), {}), TableWrite(STRICT_B, bad, {}))
    assert_version(open_warehouse(any_url), TABLE_A, 1, SMALL_ROWS)
    assert_version(open_warehouse(any_url), STRICT_B, 1, SMALL_ROWS)

    wh.write(TableWrite(TABLE_A, version_frame(2, n2), {}), TableWrite(STRICT_B, version_frame(2, n2), {}))
    assert_version(open_warehouse(any_url), TABLE_A, 2, n2)
    assert_version(open_warehouse(any_url), STRICT_B, 2, n2)


@pytest.mark.postgres
def test_postgres_kill9_during_second_table_of_one_write_leaves_both_old(pg_url, publishers):
    wh = open_warehouse(pg_url)
    wh.write(TableWrite(TABLE_A, version_frame(1, V1_ROWS), {}), TableWrite(TABLE_B, version_frame(1, V1_ROWS), {}))
    n_a = V1_ROWS + 50_000

    with pg_monitor(pg_url) as mon:
        pub = start(publishers, pg_url, [write_step((TABLE_A, 2, n_a), (TABLE_B, 2, BIG_ROWS))])
        # A's COPY is complete (same transaction) once B's is streaming.
        backend, _ = wait_for_copy(mon, pub, TABLE_B, IN_FLIGHT_ROWS)
        pub.kill9()
        assert_backend_gone(mon, backend)

    assert_version(open_warehouse(pg_url), TABLE_A, 1, V1_ROWS)
    assert_version(open_warehouse(pg_url), TABLE_B, 1, V1_ROWS)

    start(publishers, pg_url, [write_step((TABLE_A, 2, n_a), (TABLE_B, 2, BIG_ROWS))]).finish()
    assert_version(open_warehouse(pg_url), TABLE_A, 2, n_a)
    assert_version(open_warehouse(pg_url), TABLE_B, 2, BIG_ROWS)


def test_duckdb_kill9_before_commit_of_two_table_write_leaves_both_old(duckdb_url, publishers):
    wh = open_warehouse(duckdb_url)
    wh.write(TableWrite(TABLE_A, version_frame(1, V1_ROWS), {}), TableWrite(TABLE_B, version_frame(1, V1_ROWS), {}))
    n2 = V1_ROWS + 50_000

    steps = [write_step((TABLE_A, 2, n2), (TABLE_B, 2, n2))]
    pub = start(publishers, duckdb_url, steps, stall_duckdb_commit=True)
    pub.wait_for_line(f"INSERTING {TABLE_B.qualified}")  # A deleted and re-inserted, B under way
    pub.wait_for_line("BEFORE_COMMIT")
    pub.kill9()

    assert_version(open_warehouse(duckdb_url), TABLE_A, 1, V1_ROWS)
    assert_version(open_warehouse(duckdb_url), TABLE_B, 1, V1_ROWS)

    start(publishers, duckdb_url, steps).finish()
    assert_version(open_warehouse(duckdb_url), TABLE_A, 2, n2)
    assert_version(open_warehouse(duckdb_url), TABLE_B, 2, n2)


# ---------------------------------------------------------------------------------------------
# Readers during a load
# ---------------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("way", ["swap", "in_place"])
def test_postgres_readers_see_version1_or_version2_never_a_partial_table(pg_url, publishers, way):
    wh = open_warehouse(pg_url)
    wh.write(TableWrite(TABLE_A, version_frame(1, V1_ROWS), {}))
    if way == "in_place":
        attach(pg_url, TABLE_A)
    v1 = (V1_ROWS, V1_ROWS * 1)
    v2 = (BIG_ROWS, BIG_ROWS * 2)

    seen: list[tuple[tuple[int, int], bool]] = []  # ((count, sum(version)), COPY in flight at the time)
    with pg_monitor(pg_url) as reader:
        pub = start(publishers, pg_url, [write_step((TABLE_A, 2, BIG_ROWS))])
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while pub.alive():
            assert time.monotonic() < deadline, "the load did not finish"
            if way == "swap":
                in_flight = reader.execute(
                    "SELECT count(*) > 0 FROM pg_stat_progress_copy p WHERE tuples_processed > 0 "
                    "AND p.relid IN (to_regclass(%s), to_regclass(%s))",
                    [TABLE_A.qualified, f"{TABLE_A.qualified}__next"],
                ).fetchone()[0]
            else:  # rows of the table itself are being deleted, updated or inserted
                in_flight = in_place_writer(reader, TABLE_A) is not None
            n, s_v = reader.execute(f"SELECT count(*), coalesce(sum(version), 0) FROM {TABLE_A.qualified}").fetchone()
            seen.append(((n, int(s_v)), in_flight))
        pub.finish()
        final = reader.execute(f"SELECT count(*), coalesce(sum(version), 0) FROM {TABLE_A.qualified}").fetchone()

    states = {s for s, _ in seen}
    assert states <= {v1, v2}, f"a reader saw a partial table: {sorted(states - {v1, v2})}"
    assert any(s == v1 and flying for s, flying in seen), "no read overlapped the load; the test proved nothing"
    # Once a reader has seen version 2 it never goes back to version 1.
    first_v2 = next((i for i, (s, _) in enumerate(seen) if s == v2), len(seen))
    assert all(s == v2 for s, _ in seen[first_v2:])
    assert (final[0], int(final[1])) == v2
    assert_version(open_warehouse(pg_url), TABLE_A, 2, BIG_ROWS)
