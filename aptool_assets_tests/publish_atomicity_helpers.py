"""Machinery of the publishing-atomicity tests (contract §3; test_publish_atomicity_*.py): real
subprocesses, real ``kill -9``.

Every published table goes through ``Warehouse.write`` (one transaction per call). The tests load
a new version of a table in a separate Python process and kill it with SIGKILL while the load is
really in flight — for PostgreSQL, while ``pg_stat_progress_copy`` shows its COPY streaming rows into
the table (or its shadow), or, for a table carrying a DBA addition (replaced in place), while it inserts
into the table itself; for DuckDB, while its INSERT runs or just before its COMMIT — and then check from a fresh
connection that the table still holds exactly the previous version (row count and a content
checksum), that nothing of the dead process lingers, and that re-running the publish converges.

The subprocess runs :func:`run_plan` of this module (``python -c``); for DuckDB it can wrap
``duckdb.connect`` to announce its INSERT and hold its COMMIT (``stall_duckdb_commit``) so the kill
lands inside the open transaction deterministically; the warehouse code itself is not changed.
Fixtures: ``publishers`` (any still running at teardown are killed), ``pg_url`` (a database of the
test module's own), ``duckdb_url`` and ``any_url`` (both backends); a test module imports them all.
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

from aptool_assets_tests.publish_atomicity_helpers import run_plan
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
