"""Boundary tests of the i-Ready parser after the contract's v2 change, and of the vendor-ID mapping.

Hand-built files (the demo's vendor-format writer) probe each edge of contract §3
``aptool.iready_diagnostic_results``: repeats of a key collapsed (later row wins) unless the overall
relative placement differs, same-day retests kept, secondary cells published as null with a cell problem,
key and overall cells still rejecting the row, the Student ID kept as delivered text; then
``rules.student_ids.map_vendor_ids`` and ``match_shares`` on hand-built rosters.
"""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from aptool_assets.rules.student_ids import ID_FIELDS, map_vendor_ids, match_shares
from aptool_assets.sources.iready.parser import ParsedDiagnostics
from aptool_assets_tests.iready_parser_helpers import assert_no_pii, mapped, parse, record, write

CONFLICT = "duplicate_key_conflict: overall_relative_placement differs"


def balanced(parsed: ParsedDiagnostics) -> bool:
    """Every non-blank record is published, rejected or collapsed, exactly once."""
    return parsed.total_rows == parsed.results.height + parsed.rejected.height + parsed.duplicate_rows_collapsed


# --- repeats of a diagnostic ---------------------------------------------------------------------


def test_repeat_with_other_teacher_and_dashed_date_is_one_diagnostic_later_row_wins(tmp_path):
    rows = [
        record(percentile=48, duration_min=45),
        record(class_teachers="Other, Teacher", completion_date="09-04-2024", percentile=61, duration_min=50),
    ]
    parsed = parse(write(tmp_path, rows))
    assert parsed.results.height == 1
    assert parsed.duplicate_rows_collapsed == 1
    assert parsed.rejected.is_empty() and parsed.cell_problems.is_empty()
    row = parsed.results.row(0, named=True)
    assert row["completion_date"] == date(2024, 9, 4)
    assert (row["percentile"], row["duration_min"]) == (61, 50)  # the later row's cells
    assert balanced(parsed)


def test_three_copies_collapse_to_the_last(tmp_path):
    rows = [record(percentile=10), record(percentile=20, completion_date="9-4-2024"), record(percentile=30)]
    parsed = parse(write(tmp_path, rows))
    assert parsed.duplicate_rows_collapsed == 2
    assert parsed.results.get_column("percentile").to_list() == [30]
    assert parsed.rejected.is_empty() and balanced(parsed)


def test_same_key_other_placement_is_a_conflict(tmp_path):
    rows = [record(), record(overall_relative_placement="1 Grade Level Below")]
    parsed = parse(write(tmp_path, rows))
    assert parsed.results.get_column("overall_relative_placement").to_list() == ["Early On Grade Level"]
    assert parsed.rejected.select("line_number", "student_id_raw", "reason").rows() == [(3, "1001", CONFLICT)]
    assert parsed.duplicate_rows_collapsed == 0 and balanced(parsed)


def test_conflicts_are_measured_against_the_first_row_of_the_key(tmp_path):
    """The first row's group survives (its last row wins); every row with another placement is rejected."""
    other = "1 Grade Level Below"
    rows = [
        record(percentile=10),
        record(percentile=20, overall_relative_placement=other),
        record(percentile=30),
        record(percentile=40, overall_relative_placement=other),
        record(student_id=1002),  # another student, untouched
    ]
    parsed = parse(write(tmp_path, rows))
    first = parsed.results.filter(pl.col("vendor_student_id") == "1001")
    assert first.select("overall_relative_placement", "percentile").rows() == [("Early On Grade Level", 30)]
    assert parsed.rejected.select("line_number", "reason").rows() == [(3, CONFLICT), (5, CONFLICT)]
    assert parsed.duplicate_rows_collapsed == 1
    assert parsed.results.height == 2 and balanced(parsed)


def test_same_day_retest_with_another_score_is_kept(tmp_path):
    rows = [record(overall_scale_score=500), record(overall_scale_score=540, class_teachers="Other, Teacher")]
    parsed = parse(write(tmp_path, rows))
    assert sorted(parsed.results.get_column("overall_scale_score").to_list()) == [500, 540]
    assert parsed.duplicate_rows_collapsed == 0 and parsed.rejected.is_empty() and balanced(parsed)


def test_cell_problems_only_name_published_lines(tmp_path):
    """A collapsed or conflict-rejected row's unreadable cell is not reported: only published rows' cells are."""
    rows = [record(percentile="0"), record(percentile=50), record(student_id=1002)]
    rows.append(record(student_id=1002, percentile="0", overall_relative_placement="1 Grade Level Below"))
    parsed = parse(write(tmp_path, rows))
    assert parsed.results.height == 2 and parsed.rejected.height == 1
    assert parsed.cell_problems.is_empty()


# --- secondary cells: published as null, recorded --------------------------------------------------


@pytest.mark.parametrize(
    "field, text, expected, reason",
    [
        ("percentile", "0", None, "percentile_out_of_range"),
        ("percentile", "1", 1, None),
        ("percentile", "99", 99, None),
        ("percentile", "100", None, "percentile_out_of_range"),
        ("duration_min", "-1", None, "invalid_duration"),
        ("duration_min", "0", 0, None),
        ("student_grade", "TK", -1, None),
        ("student_grade", "K", 0, None),
        ("student_grade", "KG", 0, None),
        ("student_grade", "0", 0, None),
        ("student_grade", "12", 12, None),
        ("student_grade", "13", None, "invalid_grade"),
        ("student_grade", "ninth", None, "invalid_grade"),
        ("vocabulary_scale_score", "950", None, "scale_score_out_of_range"),
        ("vocabulary_scale_score", "800", 800, None),
        ("vocabulary_relative_placement", "Weird", None, "invalid_relative_placement"),
        ("vocabulary_relative_placement", "Not Assessed", "Not Assessed", None),
    ],
)
def test_secondary_cell_boundaries(tmp_path, field, text, expected, reason):
    rows = [record(student_id=1001), record(student_id=1002, **{field: text})]
    parsed = parse(write(tmp_path, rows))
    assert parsed.rejected.is_empty()
    results = parsed.results.sort("vendor_student_id")
    assert results.get_column("vendor_student_id").to_list() == ["1001", "1002"]
    assert results.item(1, field) == expected
    assert results.item(0, field) == record()[field]  # the neighbour keeps its good cell
    problems = parsed.cell_problems.select("line_number", "column_name", "reason").rows()
    assert problems == ([] if reason is None else [(3, field, reason)])
    for row in parsed.cell_problems.select("source_file", "column_name", "reason").rows():
        assert all(text not in cell for cell in row)


def test_every_bad_secondary_cell_of_one_row_is_nulled_and_recorded(tmp_path):
    bad = {
        "percentile": "0",
        "duration_min": "-1",
        "student_grade": "ninth",
        "vocabulary_scale_score": "950",
        "vocabulary_relative_placement": "Weird",
    }
    parsed = parse(write(tmp_path, [record(**bad, lexile_measure="BR400L")]))
    assert parsed.rejected.is_empty() and parsed.results.height == 1
    row = parsed.results.row(0, named=True)
    assert all(row[field] is None for field in bad)
    kept = ("overall_scale_score", "overall_relative_placement", "vocabulary_placement", "lexile_measure")
    assert [row[f] for f in kept] == [520, "Early On Grade Level", "Mid 5", "BR400L"]
    assert parsed.cell_problems.select("line_number", "column_name", "reason").rows() == [
        (2, "duration_min", "invalid_duration"),
        (2, "percentile", "percentile_out_of_range"),
        (2, "student_grade", "invalid_grade"),
        (2, "vocabulary_relative_placement", "invalid_relative_placement"),
        (2, "vocabulary_scale_score", "scale_score_out_of_range"),
    ]
    dumped = parsed.cell_problems.write_csv()
    for text in ("ninth", "950", "Weird", "-1"):
        assert text not in dumped
    assert_no_pii(dumped, parsed.results.write_csv())
    assert balanced(parsed)


# --- key and overall cells: still reject the row ---------------------------------------------------


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"student_id": ""}, "missing_value: vendor_student_id"),
        ({"student_id": "TEMP-1"}, "non_numeric_student_id"),
        ({"completion_date": ""}, "missing_value: completion_date"),
        ({"overall_scale_score": "99"}, "scale_score_out_of_range: overall_scale_score=99"),
        ({"overall_scale_score": "801"}, "scale_score_out_of_range: overall_scale_score=801"),
        ({"overall_relative_placement": "Unknown"}, "invalid_relative_placement: overall_relative_placement"),
    ],
)
def test_unusable_key_or_overall_cell_rejects_the_row(tmp_path, overrides, reason):
    rows = [record(student_id=1001), record(**{"student_id": 1002, "percentile": "0", **overrides})]
    parsed = parse(write(tmp_path, rows))
    assert parsed.rejected.select("line_number", "reason").rows() == [(3, reason)]
    assert parsed.results.get_column("vendor_student_id").to_list() == ["1001"]
    assert parsed.cell_problems.is_empty()  # a rejected row's other cells are not examined
    assert balanced(parsed)


@pytest.mark.parametrize("score", [100, 800])
def test_overall_scale_score_bounds_are_kept(tmp_path, score):
    parsed = parse(write(tmp_path, [record(overall_scale_score=score)]))
    assert parsed.rejected.is_empty()
    assert parsed.results.item(0, "overall_scale_score") == score


# --- the Student ID as delivered ------------------------------------------------------------------


def test_vendor_student_id_is_kept_as_delivered_text(tmp_path):
    rows = [record(student_id="000123"), record(student_id="1234567890123"), record(student_id="456.0")]
    parsed = parse(write(tmp_path, rows))
    assert parsed.rejected.is_empty()
    assert parsed.results.get_column("vendor_student_id").to_list() == ["000123", "1234567890123", "456"]
    assert parsed.results.get_column("student_id").null_count() == 3  # mapped later, not by the parser
    assert mapped(parsed.results).get_column("student_id").to_list() == [123, 1234567890123, 456]


def results_of(vendor_ids: list[str], schools: list[str | None] | None = None) -> pl.DataFrame:
    """A results-like frame: the delivered IDs, a row's school name and a not yet mapped student_id."""
    frame = {
        "student_id": pl.Series([None] * len(vendor_ids), dtype=pl.Int64),
        "vendor_student_id": vendor_ids,
        "overall_scale_score": list(range(500, 500 + len(vendor_ids))),
    }
    if schools is not None:
        frame["school_name"] = pl.Series(schools, dtype=pl.Utf8)
    return pl.DataFrame(frame)


# Student 3 is enrolled at two schools; StudentNumber 77 is carried by students 2 and 4 at different schools.
STUDENTS = pl.DataFrame(
    {
        "student_id": [1, 2, 3, 3, 4],
        "student_number": [123, 77, 300, 300, 77],
        "state_student_id": ["1234567890123", "0000000002", "3333333333", "3333333333", None],
        "school_name": [
            "Cedar Grove Elementary School",
            "Cedar Grove Elementary School",
            "Cedar Grove Elementary School",
            "Redwood High",
            "Redwood High",
        ],
    }
)


def test_map_vendor_ids_by_student_number_ignores_leading_zeros():
    out = map_vendor_ids(results_of(["000123", "123", "0300"]), STUDENTS, "student_number")
    assert out.get_column("student_id").to_list() == [1, 1, 3]


def test_map_vendor_ids_shared_student_number_needs_the_school():
    schools = ["Cedar Grove Elementary School", "  redwood   HIGH ", "Oak Middle", None]
    out = map_vendor_ids(results_of(["77", "077", "77", "77"], schools), STUDENTS, "student_number")
    assert out.get_column("student_id").to_list() == [2, 4, None, None]
    # Without a school name on the results a shared number is never guessed.
    assert map_vendor_ids(results_of(["77"]), STUDENTS, "student_number").item(0, "student_id") is None
    # One student at two schools still maps, whatever school the row names.
    out = map_vendor_ids(results_of(["300"], ["Oak Middle"]), STUDENTS, "student_number")
    assert out.item(0, "student_id") == 3


def test_map_vendor_ids_by_state_student_id_and_student_id():
    by_state = map_vendor_ids(results_of(["1234567890123", "2", "999"]), STUDENTS, "state_student_id")
    assert by_state.get_column("student_id").to_list() == [1, 2, None]
    by_id = map_vendor_ids(results_of(["4", "0003", "5", "123"]), STUDENTS)
    assert by_id.get_column("student_id").to_list() == [4, 3, None, None]


def test_map_vendor_ids_keeps_rows_order_and_columns():
    results = results_of(["999", "000123", "77", "123"], ["X", "Y", "Redwood High", None])
    out = map_vendor_ids(results, STUDENTS, "student_number")
    assert out.columns == results.columns
    assert out.drop("student_id").equals(results.drop("student_id"))
    assert out.get_column("student_id").to_list() == [None, 1, 4, 1]
    assert out.schema["student_id"] == pl.Int64


def test_map_vendor_ids_refuses_an_unknown_field():
    with pytest.raises(ValueError, match="unknown i-Ready ID field"):
        map_vendor_ids(results_of(["1"]), STUDENTS, "user_name")


# --- match_shares ---------------------------------------------------------------------------------


def test_match_shares_per_field():
    # "1": StudentID 1; "123": StudentNumber of 1; "1234567890123": SSID of 1; "3": StudentID 3.
    shares = match_shares(results_of(["1", "123", "1234567890123", "3"]), STUDENTS)
    assert shares == {"student_id": 0.5, "student_number": 0.25, "state_student_id": 0.25}


def test_match_shares_counts_ambiguous_numbers_as_unmatched():
    shares = match_shares(results_of(["77", "77"], ["Redwood High", "Oak Middle"]), STUDENTS)
    assert shares["student_number"] == 0.5
    assert shares["student_id"] == 0.0


def test_match_shares_is_one_for_no_rows():
    assert match_shares(results_of([]), STUDENTS) == dict.fromkeys(ID_FIELDS, 1.0)
    assert match_shares(results_of([]), STUDENTS.head(0)) == dict.fromkeys(ID_FIELDS, 1.0)
