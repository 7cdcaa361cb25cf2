"""The warehouse contract, run against DuckDB and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from aptool_assets.storage.backends import redact_url
from aptool_assets.storage.warehouse import AnyOf, TableSpec, TableWrite

UTC = dt.UTC

SCORES = TableSpec(
    name="test_scores",
    columns={
        "year": pl.Int32,
        "subject": pl.Utf8,
        "student_id": pl.Int64,
        "score": pl.Int32,
        "note": pl.Utf8,
        "flag": pl.Boolean,
        "taken_on": pl.Date,
        "loaded_at": pl.Datetime("us", "UTC"),
    },
    key=("year", "subject", "student_id"),
)


def frame(year: int, subject: str, ids: list[int], score: int = 500) -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame(
        {
            "year": [year] * n,
            "subject": [subject] * n,
            "student_id": ids,
            "score": [score] * n,
            "note": ["", None, 'a "quoted", note'][:n] + ["x"] * max(0, n - 3),
            "flag": [True] * n,
            "taken_on": [dt.date(2024, 9, 1)] * n,
            "loaded_at": [dt.datetime(2024, 9, 2, 8, 30, tzinfo=UTC)] * n,
        },
        schema=SCORES.polars_schema,
    )


def test_round_trip_keeps_types_nulls_and_empty_strings(warehouse):
    warehouse.write(TableWrite(SCORES, frame(2024, "ela", [1, 2, 3])))
    got = warehouse.read_table(SCORES).sort("student_id")
    assert got.schema == SCORES.polars_schema
    assert got["note"].to_list() == ["", None, 'a "quoted", note']
    assert got["loaded_at"][0] == dt.datetime(2024, 9, 2, 8, 30, tzinfo=UTC)
    assert got["taken_on"][0] == dt.date(2024, 9, 1)


def test_replace_where_touches_only_its_slice_and_is_idempotent(warehouse):
    warehouse.write(TableWrite(SCORES, frame(2024, "ela", [1, 2]), {"year": 2024, "subject": "ela"}))
    warehouse.write(TableWrite(SCORES, frame(2024, "math", [1, 2, 3]), {"year": 2024, "subject": "math"}))
    for _ in range(2):  # re-running the same write changes nothing
        warehouse.write(TableWrite(SCORES, frame(2024, "ela", [7], 650), {"year": 2024, "subject": "ela"}))
    got = warehouse.read_table(SCORES, where={"year": 2024, "subject": "ela"})
    assert got["student_id"].to_list() == [7]
    assert warehouse.read_table(SCORES, where={"subject": "math"}).height == 3


def test_failed_transaction_leaves_previous_version(warehouse):
    warehouse.write(TableWrite(SCORES, frame(2024, "ela", [1, 2])))
    other = TableSpec(name="test_other", columns={"id": pl.Int64}, key=("id",))
    bad = pl.DataFrame({"id": ["not a number"]})  # fails while the first write is in flight
    with pytest.raises(pl.exceptions.PolarsError):
        warehouse.write(
            TableWrite(SCORES, frame(2024, "ela", [9]), {}),
            TableWrite(other, bad, {}),
        )
    assert sorted(warehouse.read_table(SCORES)["student_id"].to_list()) == [1, 2]


def test_unwritten_table_reads_empty_with_its_schema(warehouse):
    got = warehouse.read_table(SCORES)
    assert got.height == 0 and got.schema == SCORES.polars_schema
    assert not warehouse.table_exists(SCORES)


def test_conform_refuses_missing_columns():
    with pytest.raises(ValueError, match="missing columns"):
        SCORES.conform(pl.DataFrame({"year": [2024]}))


def test_redact_url_hides_password():
    assert redact_url("postgresql://app:s3cret@db.example:5432/ap") == "postgresql://app:***@db.example:5432/ap"
    assert "s3cret" not in redact_url("postgresql://app:s3cret@db/ap")


def test_replace_between_replaces_a_date_window_only(warehouse):
    from aptool_assets.storage.warehouse import Between

    base = frame(2024, "ela", [1, 2, 3])
    days = base.with_columns(pl.Series("taken_on", [dt.date(2024, 9, d) for d in (1, 2, 3)]))
    warehouse.write(TableWrite(SCORES, days))
    window = days.filter(pl.col("student_id") == 2).with_columns(pl.lit(777).cast(pl.Int32).alias("score"))
    warehouse.write(TableWrite(SCORES, window, {"taken_on": Between(dt.date(2024, 9, 2), dt.date(2024, 9, 3))}))
    got = warehouse.read_table(SCORES).sort("student_id")
    assert got["student_id"].to_list() == [1, 2]  # day 3 was in the window and is gone
    assert got["score"].to_list() == [500, 777]


def test_upsert_never_overwrites_newer_rows_with_older_ones(warehouse):
    older = dt.datetime(2024, 9, 1, tzinfo=UTC)
    newer = dt.datetime(2024, 9, 5, tzinfo=UTC)
    warehouse.write(TableWrite(SCORES, frame(2024, "ela", [1, 2]).with_columns(pl.lit(newer).alias("loaded_at"))))
    incoming = frame(2024, "ela", [1, 3], score=650).with_columns(
        pl.Series("loaded_at", [older, newer], dtype=pl.Datetime("us", "UTC"))
    )
    for _ in range(2):  # idempotent
        warehouse.write(TableWrite(SCORES, incoming, upsert=True, newer_column="loaded_at"))
    got = {r["student_id"]: r["score"] for r in warehouse.read_table(SCORES).iter_rows(named=True)}
    assert got == {1: 500, 2: 500, 3: 650}  # student 1 kept its newer row; 3 was inserted

    newest = frame(2024, "ela", [1], score=700).with_columns(
        pl.lit(dt.datetime(2024, 9, 9, tzinfo=UTC)).alias("loaded_at")
    )
    warehouse.write(TableWrite(SCORES, newest, upsert=True, newer_column="loaded_at"))
    assert warehouse.read_table(SCORES, where={"student_id": 1})["score"].to_list() == [700]


@pytest.mark.postgres
def test_whole_table_replace_on_postgres_keeps_grants_key_and_dependent_views(postgres_url):
    import psycopg

    from aptool_assets.storage.warehouse import open_warehouse
    from aptool_assets_tests.conftest import schema_reset

    schema_reset(postgres_url)
    wh = open_warehouse(postgres_url)
    wh.write(TableWrite(SCORES, frame(2024, "ela", [1, 2])))
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute("DROP ROLE IF EXISTS aptool_reader_test")
        con.execute("CREATE ROLE aptool_reader_test")
        con.execute("GRANT USAGE ON SCHEMA aptool TO aptool_reader_test")
        con.execute("GRANT SELECT ON aptool.test_scores TO aptool_reader_test")
    try:
        wh.write(TableWrite(SCORES, frame(2024, "ela", [3, 4, 5])))  # swapped in
        with psycopg.connect(postgres_url) as con:
            grants = con.execute(
                "SELECT privilege_type FROM information_schema.role_table_grants "
                "WHERE table_name = 'test_scores' AND grantee = 'aptool_reader_test'"
            ).fetchall()
            assert grants == [("SELECT",)]
            with pytest.raises(psycopg.errors.UniqueViolation):  # the key index came along
                con.execute("INSERT INTO aptool.test_scores (year, subject, student_id) VALUES (2024, 'ela', 3)")
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute("CREATE VIEW aptool.test_scores_view AS SELECT student_id FROM aptool.test_scores")
        wh.write(TableWrite(SCORES, frame(2024, "ela", [6])))  # a dependent view: replaced in place
        assert wh.query("SELECT student_id FROM aptool.test_scores_view")["student_id"].to_list() == [6]
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute("DROP SCHEMA IF EXISTS aptool CASCADE")
            con.execute("DROP OWNED BY aptool_reader_test")
            con.execute("DROP ROLE IF EXISTS aptool_reader_test")


def test_any_of_filters_reads_and_replaces_several_slices(warehouse):
    for subject in ("ela", "math", "sci"):
        warehouse.write(TableWrite(SCORES, frame(2024, subject, [1, 2]), {"year": 2024, "subject": subject}))
    got = warehouse.read_table(SCORES, where={"subject": AnyOf(["ela", "sci"])})
    assert sorted(set(got["subject"].to_list())) == ["ela", "sci"] and got.height == 4
    assert warehouse.read_table(SCORES, where={"subject": AnyOf([])}).height == 0  # empty IN matches nothing
    warehouse.write(TableWrite(SCORES, frame(2024, "ela", [9]), {"year": 2024, "subject": AnyOf(["ela", "sci"])}))
    left = warehouse.read_table(SCORES).sort("subject", "student_id")
    assert list(zip(left["subject"], left["student_id"], strict=True)) == [("ela", 9), ("math", 1), ("math", 2)]


def test_delete_by_key_removes_exactly_those_rows_in_the_same_transaction(warehouse):
    warehouse.write(TableWrite(SCORES, frame(2024, "ela", [1, 2, 3, 4])))
    keys = pl.DataFrame({"year": [2024, 2024, 2030], "subject": ["ela", "ela", "ela"], "student_id": [2, 4, 2]})
    warehouse.write(
        TableWrite(SCORES, keys, replace_where=None, delete=True),
        TableWrite(SCORES, frame(2024, "math", [5]), replace_where=None),
    )
    got = warehouse.read_table(SCORES).sort("subject", "student_id")
    assert list(zip(got["subject"], got["student_id"], strict=True)) == [("ela", 1), ("ela", 3), ("math", 5)]
    with pytest.raises(ValueError, match="either upserts or deletes"):
        TableWrite(SCORES, keys, replace_where=None, delete=True, upsert=True)


def test_exclusive_admits_one_holder_at_a_time_across_connections(warehouse_url):
    import threading
    import time

    from aptool_assets.storage.warehouse import open_warehouse

    first, second = open_warehouse(warehouse_url), open_warehouse(warehouse_url)
    order: list[str] = []

    def contender(name: str) -> None:
        with second.exclusive(name):
            order.append(f"second:{name}")

    with first.exclusive("attendance_days"):
        other = threading.Thread(target=contender, args=("another_lock",))
        other.start()
        other.join(10)  # a different name never waits
        waiting = threading.Thread(target=contender, args=("attendance_days",))
        waiting.start()
        time.sleep(0.5)
        order.append("first:released")
    waiting.join(10)
    assert order == ["second:another_lock", "first:released", "second:attendance_days"]


def test_a_key_that_gains_a_column_between_releases_accepts_rows_the_new_key_allows(warehouse):
    """Contract v2 keeps absence codes per school year: the table's key gained ``school_year``. A warehouse
    written by the previous release still holds the old unique index; the next write must replace it, or the
    second year's codes would be refused as duplicates of the first's."""
    old = TableSpec("key_migration", {"school_code": pl.Int32, "code": pl.Utf8}, key=("school_code", "code"))
    new = TableSpec(
        "key_migration",
        {"school_year": pl.Int32, "school_code": pl.Int32, "code": pl.Utf8},
        key=("school_year", "school_code", "code"),
    )
    warehouse.write(TableWrite(old, pl.DataFrame({"school_code": [1], "code": ["A"]})))
    rows = pl.DataFrame({"school_year": [2024, 2025], "school_code": [1, 1], "code": ["A", "A"]})
    warehouse.write(TableWrite(new, rows.filter(pl.col("school_year") == 2024), {"school_year": 2024}))
    warehouse.write(TableWrite(new, rows.filter(pl.col("school_year") == 2025), {"school_year": 2025}))
    stored = warehouse.read_table(new).drop_nulls("school_year").sort("school_year")
    assert stored.equals(rows)
    # The new key is enforced: the same (year, school, code) twice is still refused by a merge.
    warehouse.write(TableWrite(new, rows.head(1), upsert=True))
    assert warehouse.read_table(new).drop_nulls("school_year").height == 2
