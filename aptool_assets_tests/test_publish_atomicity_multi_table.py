"""Publishing several tables (contract §3): a run that dies between two tables leaves each complete (old
or new) and a re-run converges; one ``write()`` of two tables that fails in the database, or is killed
with ``kill -9`` during its second table, leaves both old. The machinery is in
publish_atomicity_helpers.py.
"""

from __future__ import annotations

import pytest

from aptool_assets.storage.warehouse import TableWrite, open_warehouse
from aptool_assets_tests.publish_atomicity_helpers import (  # noqa: F401 - the fixtures and the ones they request
    BIG_ROWS,
    IN_FLIGHT_ROWS,
    SMALL_ROWS,
    STRICT_B,
    TABLE_A,
    TABLE_B,
    V1_ROWS,
    any_url,
    assert_backend_gone,
    assert_version,
    atomic_pg_url,
    duckdb_url,
    pg_monitor,
    pg_url,
    publishers,
    start,
    version_frame,
    wait_for_copy,
    write_step,
)

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
