"""The warehouse contract, run against DuckDB and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from aptool_assets.storage.warehouse import TableSpec, TableWrite, redact_url

UTC = dt.timezone.utc

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
    with pytest.raises(Exception):
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
