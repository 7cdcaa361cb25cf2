"""i-Ready Diagnostic Results parser on bad input: rows rejected with their reasons, secondary cells published
as null with a cell problem, files that fail as a whole, stale and mixed academic years, and duplicate rows
(collapsed or rejected as conflicts)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from aptool_assets.sources.iready.parser import (
    DiagnosticFileError,
    StaleFileError,
    parse_diagnostic_file,
    peek_academic_years,
)
from aptool_assets.sources.iready.schemas import CELL_COLUMNS, validate_results
from aptool_assets.tables.iready import PUBLISHED_COLUMNS
from aptool_assets_tests.iready_parser_helpers import PII, assert_no_pii, parse, record, records, write
from aptool_demo.diagnostics import synthetic_diagnostics

# --- bad rows ----------------------------------------------------------------------------------


def test_bad_rows_are_rejected_exactly_with_reasons(tmp_path):
    rows = records(10)
    rows[1] = record(student_id="A1234")
    rows[3] = record(student_id=1104, overall_scale_score=950)
    rows[5] = record(student_id=1106, overall_relative_placement="One Grade Level Below")
    rows[7] = record(student_id=1108, completion_date="13/45/2024")
    path = write(tmp_path, rows)
    parsed = parse(path)

    got = parsed.rejected.select("line_number", "student_id_raw", "reason").rows()
    assert got == [
        (3, "A1234", "non_numeric_student_id"),
        (5, "1104", "scale_score_out_of_range: overall_scale_score=950"),
        (7, "1106", "invalid_relative_placement: overall_relative_placement"),
        (9, "1108", "invalid_date: completion_date"),
    ]
    assert parsed.rejected_by_reason == {
        "non_numeric_student_id": 1,
        "scale_score_out_of_range": 1,
        "invalid_relative_placement": 1,
        "invalid_date": 1,
    }
    good_ids = [str(r["student_id"]) for i, r in enumerate(rows) if i not in (1, 3, 5, 7)]
    assert sorted(parsed.results.get_column("vendor_student_id").to_list()) == good_ids
    assert parsed.cell_problems.is_empty()
    assert parsed.total_rows == 10
    assert parsed.total_rows == parsed.results.height + parsed.rejected.height + parsed.duplicate_rows_collapsed
    assert parsed.rejected.schema == pl.Schema(
        {
            "source_file": pl.Utf8,
            "line_number": pl.Int64,
            "student_id_raw": pl.Utf8,
            "reason": pl.Utf8,
            "raw_record": pl.Utf8,
        }
    )
    assert set(parsed.rejected.get_column("source_file")) == {path.name}
    raw = json.loads(parsed.rejected.item(1, "raw_record"))
    assert raw["overall_scale_score"] == "950" and raw["vendor_student_id"] == "1104"
    assert set(raw) == set(CELL_COLUMNS)
    assert_no_pii(parsed.rejected.write_csv())


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"student_id": ""}, "missing_value: vendor_student_id"),
        ({"student_id": "-5"}, "non_numeric_student_id"),
        ({"academic_year": "2024"}, "invalid_academic_year"),
        ({"academic_year": "2024-2026"}, "invalid_academic_year"),
        ({"completion_date": ""}, "missing_value: completion_date"),
        ({"completion_date": "8/5/24"}, "invalid_date: completion_date"),
        ({"completion_date": "2/30/2025"}, "invalid_date: completion_date"),
        ({"overall_scale_score": ""}, "missing_value: overall_scale_score"),
        ({"overall_scale_score": "abc"}, "invalid_integer: overall_scale_score"),
        ({"overall_scale_score": "99"}, "scale_score_out_of_range: overall_scale_score=99"),
        ({"overall_relative_placement": ""}, "missing_value: overall_relative_placement"),
        ({"overall_relative_placement": "Not Assessed"}, "invalid_relative_placement: overall_relative_placement"),
    ],
)
def test_each_row_rule_rejects_with_its_reason(tmp_path, overrides, reason):
    """The key, the overall scale score and the overall relative placement: unusable → the row is set aside."""
    rows = [record(student_id=2001), record(**{"student_id": 2002, **overrides})]
    parsed = parse(write(tmp_path, rows), expected_academic_year=2024 if "academic_year" not in overrides else None)
    assert parsed.rejected.select("line_number", "reason").rows() == [(3, reason)]
    assert parsed.results.get_column("vendor_student_id").to_list() == ["2001"]
    assert parsed.cell_problems.is_empty()
    assert_no_pii(parsed.rejected.write_csv())


@pytest.mark.parametrize(
    "overrides, column, reason",
    [
        ({"start_date": "soon"}, "start_date", "invalid_date"),
        ({"student_grade": "13"}, "student_grade", "invalid_grade"),
        ({"is_baseline": "maybe"}, "is_baseline", "invalid_flag"),
        ({"percentile": "0"}, "percentile", "percentile_out_of_range"),
        ({"percentile": "100"}, "percentile", "percentile_out_of_range"),
        ({"percentile": "12.5"}, "percentile", "invalid_integer"),
        ({"duration_min": "-3"}, "duration_min", "invalid_duration"),
        ({"diagnostic_gain": "lots"}, "diagnostic_gain", "invalid_integer"),
        ({"vocabulary_scale_score": "850"}, "vocabulary_scale_score", "scale_score_out_of_range"),
        ({"vocabulary_relative_placement": "Below"}, "vocabulary_relative_placement", "invalid_relative_placement"),
    ],
)
def test_each_cell_rule_nulls_the_cell_and_records_a_problem(tmp_path, overrides, column, reason):
    """Contract change: a bad secondary cell no longer costs the row; it is published as null and recorded
    (line, column, reason code; never the value). TK, rejected before, is grade -1 (see test_grades)."""
    rows = [record(student_id=2001), record(**{"student_id": 2002, **overrides})]
    parsed = parse(write(tmp_path, rows), expected_academic_year=2024)
    assert parsed.rejected.is_empty()
    results = parsed.results.sort("vendor_student_id")
    assert results.get_column("vendor_student_id").to_list() == ["2001", "2002"]
    assert results.item(1, column) is None
    assert results.item(0, column) is not None  # the good row keeps its cell
    assert parsed.cell_problems.rows() == [(parsed.results.item(0, "source_file"), 3, column, reason)]
    assert parsed.cell_problems.columns == ["source_file", "line_number", "column_name", "reason"]  # no value
    assert_no_pii(parsed.cell_problems.write_csv())


@pytest.mark.parametrize("as_bytes", [False, True])
def test_reasons_on_a_larger_multi_chunk_file(tmp_path, as_bytes):
    """Regression: polars reads larger inputs in chunks, and pl.format panicked on those."""
    good = synthetic_diagnostics(150, 2026, "ela", seed=4)
    path = write(tmp_path, good, layout="2026-27")
    template = path.read_text().splitlines()[1].split(",")
    header = path.read_text().splitlines()[0].split(",")
    bad_rows = []
    for column, value in (
        ("Student ID", "TEMP-0042"),
        ("Overall Scale Score", "950"),
        ("Academic Year", "2025-2026"),
        ("Percentile", "0"),  # a cell problem now: the row is published with a null percentile
    ):
        row = list(template)
        row[header.index(column)] = value
        row[header.index("Overall Scale Score")] = (
            value if column == "Overall Scale Score" else str(300 + len(bad_rows))
        )
        bad_rows.append(",".join(row))
    path.write_text(path.read_text() + "\n".join(bad_rows) + "\n")
    source = path.read_bytes() if as_bytes else path
    parsed = parse_diagnostic_file(source, subject="ela", source_file=path.name, expected_academic_year=2026)
    first_bad = good.height + 2
    assert parsed.rejected.select("line_number", "reason").rows() == [
        (first_bad, "non_numeric_student_id"),
        (first_bad + 1, "scale_score_out_of_range: overall_scale_score=950"),
        (first_bad + 2, "academic_year_mismatch: 2025"),
    ]
    assert parsed.cell_problems.select("line_number", "column_name", "reason").rows() == [
        (first_bad + 3, "percentile", "percentile_out_of_range"),
    ]
    assert parsed.results.height == good.height + 1
    assert parsed.results.filter(pl.col("overall_scale_score") == 303).item(0, "percentile") is None


def test_a_row_reports_its_first_failure_only(tmp_path):
    rows = [record(student_id="X9", overall_scale_score=950, completion_date="bad")]
    parsed = parse(write(tmp_path, rows))
    assert parsed.rejected.get_column("reason").to_list() == ["non_numeric_student_id"]


@pytest.mark.parametrize(
    "missing", ["Student ID", "Academic Year", "Completion Date", "Overall Scale Score", "Overall Relative Placement"]
)
def test_missing_required_column_fails_the_file(tmp_path, missing):
    source = pl.read_csv(write(tmp_path, records(3)), infer_schema=False).drop(missing)
    path = tmp_path / "cut.csv"
    source.write_csv(path)
    with pytest.raises(DiagnosticFileError) as err:
        parse(path)
    assert "cut.csv" in str(err.value) and missing in str(err.value)
    assert_no_pii(str(err.value))


def test_all_missing_required_columns_are_named(tmp_path):
    path = tmp_path / "names_only.csv"
    path.write_text(f"Last Name,First Name\n{PII[0]},{PII[1]}\n")
    with pytest.raises(DiagnosticFileError) as err:
        parse(path)
    message = str(err.value)
    for header in (
        "Student ID",
        "Academic Year",
        "Completion Date",
        "Overall Scale Score",
        "Overall Relative Placement",
    ):
        assert header in message
    assert_no_pii(message)


def test_unreadable_csv_message_has_no_row_content(tmp_path):
    path = write(tmp_path, records(2))
    path.write_text(path.read_text() + f"{PII[0]},{PII[1]},1,2,3," + ",".join(["x"] * 80) + "\n")
    with pytest.raises(DiagnosticFileError) as err:
        parse(path)
    assert path.name in str(err.value)
    assert_no_pii(str(err.value))


def test_empty_file_is_a_file_error_and_header_only_is_empty_result(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DiagnosticFileError, match="empty.csv"):
        parse(empty)
    header_only = write(tmp_path, [], name="header_only.csv")
    parsed = parse(header_only, expected_academic_year=2030)
    assert parsed.results.is_empty() and parsed.rejected.is_empty()
    assert parsed.total_rows == 0 and parsed.academic_years == []
    assert parsed.results.schema == pl.Schema(PUBLISHED_COLUMNS)
    assert validate_results(parsed.results) == []
    assert parsed.rejected_by_reason == {}


# --- years ---------------------------------------------------------------------------------------


def test_stale_file_is_refused(tmp_path):
    path = write(tmp_path, records(3, academic_year=2025), name="diagnostic_results_ela.csv")
    with pytest.raises(StaleFileError) as err:
        parse(path, expected_academic_year=2026)
    assert isinstance(err.value, DiagnosticFileError)
    assert str(err.value) == (
        "diagnostic_results_ela.csv holds Academic Year 2025-2026 but is being loaded as 2026-2027: "
        "refusing a stale or rollover file; the previously published data is kept"
    )
    assert_no_pii(str(err.value))


def test_mixed_years_reject_the_other_year(tmp_path):
    rows = records(3, academic_year=2024) + records(2, start_id=3001, academic_year=2023)
    parsed = parse(write(tmp_path, rows), expected_academic_year=2024)
    assert parsed.academic_years == [2023, 2024]
    assert parsed.rejected.select("line_number", "reason").rows() == [
        (5, "academic_year_mismatch: 2023"),
        (6, "academic_year_mismatch: 2023"),
    ]
    assert parsed.results.get_column("academic_year").unique().to_list() == [2024]
    # Without an expected year both years load, each under its own year.
    both = parse(write(tmp_path, rows, name="b.csv"))
    assert both.rejected.is_empty()
    assert sorted(both.results.get_column("academic_year").unique().to_list()) == [2023, 2024]


def test_peek_reads_only_the_head(tmp_path):
    rows = records(3, academic_year=2025) + records(3, start_id=5001, academic_year=2024)
    path = write(tmp_path, rows, bom=True, crlf=True)
    assert peek_academic_years(path, max_rows=3) == {2025}
    assert peek_academic_years(path) == {2024, 2025}
    assert peek_academic_years(write(tmp_path, [], name="empty_rows.csv")) == set()
    no_year = tmp_path / "no_year.csv"
    no_year.write_text("Student ID,Last Name\n1,X\n")
    with pytest.raises(DiagnosticFileError, match="Academic Year"):
        peek_academic_years(no_year)


# --- duplicates ----------------------------------------------------------------------------------


def test_same_key_repeats_collapse_and_only_placement_conflicts_are_rejected(tmp_path):
    """Contract change: a repeat of a key with other cells (here another percentile) is the same diagnostic,
    collapsed with the later row's cells winning (it was a duplicate_key_conflict, first row winning);
    only a differing overall relative placement is a conflict. The key is the Student ID as delivered, so
    "002" is not "2"."""
    rows = [
        record(student_id=1),
        record(student_id=1),  # byte-identical
        record(student_id=1),  # byte-identical
        record(student_id=2),
        record(student_id=2, percentile=77),  # same key, other content → collapsed, later wins
        record(student_id=2, overall_relative_placement="Mid or Above Grade Level"),  # placement differs → conflict
        record(student_id="002"),  # another vendor ID as delivered: its own diagnostic
        record(student_id=3, overall_scale_score=530),  # same-day retest with another score: kept
        record(student_id=3, overall_scale_score=545),
    ]
    parsed = parse(write(tmp_path, rows))
    assert parsed.total_rows == 9
    assert parsed.duplicate_rows_collapsed == 3
    assert parsed.rejected.select("line_number", "reason").rows() == [
        (7, "duplicate_key_conflict: overall_relative_placement differs"),
    ]
    assert parsed.rejected_by_reason == {"duplicate_key_conflict": 1}
    assert parsed.results.height == 5
    assert parsed.results.filter(pl.col("vendor_student_id") == "2").item(0, "percentile") == 77  # later wins
    assert parsed.results.filter(pl.col("vendor_student_id") == "002").item(0, "percentile") == 48
    assert parsed.results.filter(pl.col("vendor_student_id") == "3").height == 2
    assert parsed.total_rows == parsed.results.height + parsed.rejected.height + parsed.duplicate_rows_collapsed


def test_same_key_with_other_personal_cells_is_collapsed_not_a_conflict(tmp_path):
    """Contract change: other roster cells (names, teachers) do not make a repeat a conflict any more."""
    rows = [record(student_id=4), record(student_id=4, first_name="Octavia", class_teachers="Other, Teacher")]
    parsed = parse(write(tmp_path, rows))
    assert parsed.duplicate_rows_collapsed == 1
    assert parsed.rejected.is_empty()
    assert parsed.results.get_column("vendor_student_id").to_list() == ["4"]
    for frame in (parsed.results, parsed.rejected, parsed.cell_problems):
        assert "Octavia" not in frame.write_csv()
        assert_no_pii(frame.write_csv())


def test_repeated_bad_rows_are_each_rejected(tmp_path):
    """Changed: a row without a usable key repeats no diagnostic, so identical bad rows are not collapsed
    (they were rejected once, the repeats counted as collapsed); each is rejected on its own line."""
    rows = [record(student_id="bad")] * 3 + [record(student_id=9)]
    parsed = parse(write(tmp_path, rows))
    assert parsed.duplicate_rows_collapsed == 0
    assert parsed.rejected.select("line_number", "reason").rows() == [
        (2, "non_numeric_student_id"),
        (3, "non_numeric_student_id"),
        (4, "non_numeric_student_id"),
    ]
    assert parsed.results.get_column("vendor_student_id").to_list() == ["9"]
    assert parsed.total_rows == parsed.results.height + parsed.rejected.height + parsed.duplicate_rows_collapsed
