"""Publishing one table is atomic under real failures (contract §3): a publisher killed with ``kill -9``
while its load is really in flight (PostgreSQL: mid-COPY into the shadow table, or mid-update of a
table carrying a DBA addition; DuckDB: mid-INSERT or before COMMIT) leaves exactly the previous version
and a re-run converges; readers counting rows during a load see the old or the new version, never a
partial table. The machinery is in publish_atomicity_helpers.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aptool_assets.storage.warehouse import TableWrite, open_warehouse
from aptool_assets_tests.publish_atomicity_helpers import (  # noqa: F401 - the fixtures and the ones they request
    BIG_ROWS,
    DUCKDB_BIG_ROWS,
    IN_FLIGHT_ROWS,
    RUN_TIMEOUT_S,
    TABLE_A,
    V1_ROWS,
    assert_backend_gone,
    assert_version,
    atomic_pg_url,
    attach,
    duckdb_url,
    in_place_writer,
    pg_monitor,
    pg_url,
    publishers,
    start,
    version_frame,
    wait_for,
    wait_for_copy,
    write_step,
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
