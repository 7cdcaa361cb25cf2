"""i-Ready Diagnostic Results parser, cell by cell: byte-level and value quirks (BOM, line endings,
dates, ids, measures, grades, quoting), the output contract (schema, lineage, no personal data), the
pandera gate, and the demo writer that produces vendor-like files."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta, timezone

import polars as pl
import pytest

from aptool_assets.rules.academic import RELATIVE_PLACEMENTS, AssessmentWindows
from aptool_assets.sources.iready import parser as parser_module
from aptool_assets.sources.iready.parser import StaleFileError, parse_diagnostic_file
from aptool_assets.sources.iready.schemas import DIAGNOSTIC_RESULTS_SCHEMA, PII_FIELDS, validate_results
from aptool_assets.tables.iready import COLUMN_NAMES, PUBLISHED_COLUMNS
from aptool_assets_tests.iready_parser_helpers import (
    LOADED_AT,
    PII,
    assert_no_pii,
    mapped,
    parse,
    record,
    records,
    write,
)
from aptool_demo.diagnostics import synthetic_diagnostics
from aptool_demo.iready_files import write_diagnostic_csv

# --- generated files: byte-level and value quirks ---------------------------------------------


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("final_newline", [False, True])
def test_bom_line_endings_and_final_newline(tmp_path, bom, crlf, final_newline):
    source = synthetic_diagnostics(12, 2024, "ela", seed=5)
    path = write(tmp_path, source, bom=bom, crlf=crlf, final_newline=final_newline)
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") == bom
    assert (b"\r\n" in data) == crlf
    assert data.endswith(b"\n") == final_newline
    parsed = parse(path)
    assert parsed.rejected.is_empty() and parsed.unknown_columns == []
    assert parsed.results.height == source.height
    ids = mapped(parsed.results).get_column("student_id")
    assert ids.sort().to_list() == source.get_column("student_id").sort().to_list()
    # bytes in, same result out
    from_bytes = parse_diagnostic_file(data, subject="ela", source_file=path.name, loaded_at=LOADED_AT)
    assert from_bytes.results.equals(parsed.results)


def test_date_formats_unpadded_padded_and_dashes(tmp_path):
    rows = [
        record(student_id=1, completion_date="8/5/2024", start_date="8/5/2024"),
        record(student_id=2, completion_date="08/05/2024", start_date="08/05/2024"),
        record(student_id=3, completion_date="09-11-2023".replace("2023", "2024"), start_date="9-1-2024"),
        record(student_id=4, completion_date="11/15/2024", start_date=""),
        record(student_id=5, completion_date="11/16/2024"),
        record(student_id=6, completion_date="3/1/2025"),
        record(student_id=7, completion_date="3/2/2025"),
    ]
    parsed = parse(write(tmp_path, rows))
    assert parsed.rejected.is_empty()
    got = parsed.results.sort("vendor_student_id").select("completion_date", "start_date", "assessment_window").rows()
    assert got == [
        (date(2024, 8, 5), date(2024, 8, 5), "BOY"),
        (date(2024, 8, 5), date(2024, 8, 5), "BOY"),
        (date(2024, 9, 11), date(2024, 9, 1), "BOY"),
        (date(2024, 11, 15), None, "BOY"),
        (date(2024, 11, 16), date(2024, 9, 3), "MOY"),
        (date(2025, 3, 1), date(2024, 9, 3), "MOY"),
        (date(2025, 3, 2), date(2024, 9, 3), "EOY"),
    ]


def test_configured_windows_are_used(tmp_path):
    path = write(tmp_path, [record(completion_date=date(2024, 11, 20))])
    late_boy = AssessmentWindows(boy_last_day=(11, 30), moy_last_day=(3, 15))
    assert parse(path).results.item(0, "assessment_window") == "MOY"
    assert parse(path, windows=late_boy).results.item(0, "assessment_window") == "BOY"


def test_leading_zero_ids_are_kept_as_delivered_and_map_to_integers(tmp_path):
    """Contract change: the file's Student ID is published as text as delivered (leading zeros kept, padding
    trimmed) and the integer Aeries StudentID comes from the mapping, where leading zeros do not matter."""
    rows = [record(student_id="00123"), record(student_id="0000456"), record(student_id=" 789 ")]
    parsed = parse(write(tmp_path, rows))
    assert parsed.rejected.is_empty()
    assert parsed.results.get_column("vendor_student_id").to_list() == ["00123", "0000456", "789"]
    assert parsed.results.schema["vendor_student_id"] == pl.Utf8
    assert parsed.results.get_column("student_id").null_count() == 3  # not mapped by the parser
    ids = mapped(parsed.results)
    assert ids.get_column("student_id").to_list() == [123, 456, 789]
    assert ids.schema["student_id"] == pl.Int64


def test_measures_kept_as_text(tmp_path):
    rows = [
        record(student_id=1, lexile_measure="BR400L", lexile_range="BR400L-BR290L"),
        record(student_id=2, lexile_measure="1035L", lexile_range="1060L - 1210L"),
    ]
    parsed = parse(write(tmp_path, rows))
    assert parsed.results.sort("vendor_student_id").get_column("lexile_measure").to_list() == ["BR400L", "1035L"]
    math = [record(student_id=3, quantile_measure="EM85Q", lexile_measure=None)]
    row = parse(write(tmp_path, math, subject="math", name="m.csv"), "math").results.row(0, named=True)
    assert row["quantile_measure"] == "EM85Q" and row["lexile_measure"] is None


def test_domain_placements_without_scores_are_valid(tmp_path):
    rows = [
        record(
            student_id=1,
            phonics_scale_score=None,
            phonics_placement="Tested Out",
            phonics_relative_placement="Mid or Above Grade Level",
        ),
        record(
            student_id=2,
            phonics_scale_score=None,
            phonics_placement="Surpassed Level",
            phonics_relative_placement="Mid or Above Grade Level",
        ),
        record(
            student_id=3,
            phonics_scale_score=None,
            phonics_placement="Not Assessed",
            phonics_relative_placement="Not Assessed",
        ),
        record(
            student_id=4,
            phonics_scale_score=800,
            phonics_placement="Max Score",
            phonics_relative_placement="Mid or Above Grade Level",
        ),
        record(student_id=5, phonics_scale_score=None, phonics_placement=None, phonics_relative_placement=None),
    ]
    parsed = parse(write(tmp_path, rows))
    assert parsed.rejected.is_empty()
    got = (
        parsed.results.sort("vendor_student_id")
        .select("phonics_scale_score", "phonics_placement", "phonics_relative_placement")
        .rows()
    )
    assert got == [
        (None, "Tested Out", "Mid or Above Grade Level"),
        (None, "Surpassed Level", "Mid or Above Grade Level"),
        (None, "Not Assessed", "Not Assessed"),
        (800, "Max Score", "Mid or Above Grade Level"),
        (None, None, None),
    ]


@pytest.mark.parametrize("placement", RELATIVE_PLACEMENTS)
def test_every_relative_placement_loads(tmp_path, placement):
    parsed = parse(
        write(tmp_path, [record(overall_relative_placement=placement, phonics_relative_placement=placement)])
    )
    assert parsed.results.item(0, "overall_relative_placement") == placement


def test_integers_written_as_floats_and_padded_text(tmp_path):
    rows = [
        record(
            percentile="45.0",
            diagnostic_gain="12.0",
            overall_scale_score=" 500 ",
            overall_relative_placement=" Mid or Above Grade Level ",
            school_name="  Cedar Grove  ",
            student_grade=" K ",
            is_baseline=" y ",
        )
    ]
    parsed = parse(write(tmp_path, rows))
    assert parsed.rejected.is_empty(), parsed.rejected.to_dicts()
    row = parsed.results.row(0, named=True)
    assert (row["percentile"], row["diagnostic_gain"], row["overall_scale_score"]) == (45, 12, 500)
    assert row["overall_relative_placement"] == "Mid or Above Grade Level"
    assert row["school_name"] == "Cedar Grove"
    assert row["student_grade"] == 0 and row["is_baseline"] is True


@pytest.mark.parametrize(
    "grade, expected",
    [("TK", -1), ("tk", -1), ("K", 0), ("KG", 0), ("0", 0), ("1", 1), ("12", 12), ("", None)],
)
def test_grades(tmp_path, grade, expected):
    """TK (transitional kindergarten) is grade -1 as in Aeries (contract change: it was rejected before)."""
    parsed = parse(write(tmp_path, [record(student_grade=grade)]))
    assert parsed.rejected.is_empty()
    assert parsed.cell_problems.is_empty()
    assert parsed.results.item(0, "student_grade") == expected


def test_quoted_cells_with_commas_and_header_variations(tmp_path):
    rows = [record(school_name="Smith, Jones Academy")]
    path = write(tmp_path, rows)
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    header[header.index("Student ID")] = "  STUDENT ID "
    header[header.index("Overall Scale Score")] = "overall scale score"
    header[header.index("Duration (min)")] = "Duration (MIN)"
    header[header.index("Academic Year")] = " Academic  Year"
    lines[0] = ",".join(header) + ",Favorite Color,Georgia Custom Flag"
    lines[1] += ",teal,Y"
    path.write_text("\n".join(lines) + "\n")
    parsed = parse(path)
    assert parsed.rejected.is_empty()
    assert parsed.unknown_columns == ["Favorite Color", "Georgia Custom Flag"]
    row = parsed.results.row(0, named=True)
    assert row["school_name"] == "Smith, Jones Academy"
    assert (row["vendor_student_id"], row["overall_scale_score"], row["duration_min"]) == ("1001", 520, 45)
    assert "teal" not in parsed.results.write_json()


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(tmp_path):
    path = write(tmp_path, [record(student_id=1), record(student_id=2, overall_scale_score=950)])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1], "", lines[2], "", ""]))
    parsed = parse(path)
    assert parsed.total_rows == 2 and parsed.results.height == 1
    assert parsed.rejected.get_column("line_number").to_list() == [4]


def test_non_utf8_file_still_loads(tmp_path):
    path = write(tmp_path, [record(last_name="Muñoz", school_name="Escuela Peña")])
    path.write_bytes(path.read_bytes().decode("utf-8").encode("latin-1"))
    parsed = parse(path)
    assert parsed.results.height == 1 and parsed.rejected.is_empty()


# --- privacy and output contract ---------------------------------------------------------------


def test_no_personal_data_anywhere(tmp_path):
    rows = records(3) + [record(student_id="??", overall_scale_score=999)]
    path = write(tmp_path, rows)
    assert PII[0] in path.read_text()  # the file really carries the names
    parsed = parse(path)
    assert not set(parsed.results.columns) & PII_FIELDS
    assert_no_pii(
        parsed.results.write_csv(), parsed.rejected.write_csv(), parsed.cell_problems.write_csv(), repr(parsed)
    )
    for bad in ({"expected_academic_year": 2030},):
        with pytest.raises(StaleFileError) as err:
            parse(path, **bad)
        assert_no_pii(str(err.value))


def test_results_schema_and_lineage(tmp_path):
    parsed = parse(
        write(tmp_path, records(2)), loaded_at=datetime(2025, 1, 15, 0, 30, tzinfo=timezone(timedelta(hours=-8)))
    )
    assert parsed.results.schema == pl.Schema(PUBLISHED_COLUMNS)
    assert parsed.results.schema["loaded_at"] == pl.Datetime("us", "UTC")
    assert parsed.results.item(0, "loaded_at") == datetime(2025, 1, 15, 8, 30, tzinfo=UTC)
    assert parsed.results.item(0, "source_file") == "diagnostic_results_ela_CONFIDENTIAL.csv"
    naive = parse(write(tmp_path, records(1), name="n.csv"), loaded_at=datetime(2025, 1, 15, 8, 30))
    assert naive.results.item(0, "loaded_at") == datetime(2025, 1, 15, 8, 30, tzinfo=UTC)
    default = parse_diagnostic_file(write(tmp_path, records(1), name="d.csv"), subject="ela", source_file="d.csv")
    assert default.results.item(0, "loaded_at").tzinfo is not None


def test_unknown_subject_is_refused(tmp_path):
    with pytest.raises(ValueError, match="subject"):
        parse(write(tmp_path, records(1)), "science")


# --- the pandera schema ------------------------------------------------------------------------


def test_schema_columns_follow_the_contract_order():
    assert list(DIAGNOSTIC_RESULTS_SCHEMA.columns) == list(COLUMN_NAMES)
    assert COLUMN_NAMES[:4] == ("student_id", "vendor_student_id", "subject", "academic_year")
    assert COLUMN_NAMES[-2:] == ("source_file", "loaded_at")
    assert len(COLUMN_NAMES) == 61


def test_validate_results_reports_problems(tmp_path):
    good = parse(write(tmp_path, records(3))).results
    assert validate_results(good) == []
    broken = pl.concat([good, good.head(1)]).with_columns(
        pl.when(pl.col("vendor_student_id") == "1002")
        .then(950)
        .otherwise(pl.col("overall_scale_score"))
        .cast(pl.Int32)
        .alias("overall_scale_score")
    )
    problems = validate_results(broken)
    assert any("share a key" in p for p in problems)
    assert any(p.startswith("overall_scale_score: in_range(100, 800)") and "950" in p for p in problems)
    assert validate_results(good.drop("percentile"))  # missing column
    assert validate_results(good.with_columns(pl.col("percentile").cast(pl.Int64)))  # wrong dtype
    assert validate_results(good.with_columns(pl.lit("Nope").alias("overall_relative_placement")))


def test_pandera_gate_sets_aside_rows_the_rules_missed(tmp_path, monkeypatch):
    """With the scale-score rule disabled, the schema still keeps 950 out of the results."""
    real = parser_module._row_checks

    def without_range(failed, expected):
        return [k for k in real(failed, expected) if k.name != "range_overall_scale_score"]

    monkeypatch.setattr(parser_module, "_row_checks", without_range)
    parsed = parse(write(tmp_path, [record(student_id=1), record(student_id=2, overall_scale_score=950)]))
    assert parsed.results.get_column("vendor_student_id").to_list() == ["1"]
    assert parsed.rejected.select("line_number", "reason").rows() == [
        (3, "schema_check: overall_scale_score in_range(100, 800)")
    ]


# --- the demo writer ---------------------------------------------------------------------------


def test_synthetic_diagnostics_are_deterministic_and_coherent():
    one = synthetic_diagnostics(200, 2024, "math", seed=11)
    assert one.equals(synthetic_diagnostics(200, 2024, "math", seed=11))
    assert not one.equals(synthetic_diagnostics(200, 2024, "math", seed=12))
    per_student = one.group_by("student_id").agg(
        pl.len().alias("n"),
        pl.col("is_baseline").sum().alias("baselines"),
        pl.col("is_most_recent").sum().alias("most_recent"),
        pl.col("completion_date").is_sorted().alias("ordered"),
        (pl.col("completion_date").first() == pl.col("completion_date").min()).alias("first_is_baseline_date"),
    )
    assert per_student.height == 200
    assert per_student.get_column("n").is_between(1, 3).all()
    assert (per_student.get_column("baselines") == 1).all()
    assert (per_student.get_column("most_recent") == 1).all()
    assert per_student.get_column("ordered").all()
    assert one.filter(pl.col("is_baseline")).get_column("diagnostic_gain").eq(0).all()
    assert one.get_column("overall_scale_score").is_between(100, 800).all()
    assert set(one.get_column("overall_relative_placement")) <= set(RELATIVE_PLACEMENTS)
    assert one.get_column("academic_year").unique().to_list() == [2024]
    assert one.get_column("completion_date").is_between(date(2024, 7, 1), date(2025, 6, 30)).all()
    windows = (
        parse_diagnostic_file(_write_tmp(one, "math"), subject="math", source_file="m.csv")
        .results.group_by("vendor_student_id")
        .agg(pl.col("assessment_window").n_unique().alias("w"), pl.len().alias("n"))
    )
    assert (windows.get_column("w") == windows.get_column("n")).all()  # one test per window


def _write_tmp(frame: pl.DataFrame, subject: str) -> bytes:
    buffer = io.BytesIO()
    write_diagnostic_csv(buffer, frame, subject=subject)
    return buffer.getvalue()


def test_synthetic_diagnostics_use_given_ids():
    ids = [7, 8, 9]
    frame = synthetic_diagnostics(3, 2025, "ela", seed=1, student_ids=ids)
    assert sorted(frame.get_column("student_id").unique().to_list()) == ids
    assert {"last_name", "first_name"} <= set(frame.columns)


def test_writer_formats_values_like_the_vendor(tmp_path):
    rows = [
        record(
            student_grade=0,
            start_date=date(2024, 8, 5),
            completion_date=date(2024, 8, 6),
            is_baseline=True,
            is_most_recent=False,
        )
    ]
    current = write(tmp_path, rows).read_text().splitlines()
    cells = dict(zip(current[0].split(","), next(csv_rows(current)), strict=True))
    assert cells["Student Grade"] == "K" and cells["Academic Year"] == "2024-2025"
    assert cells["Start Date"] == "8/5/2024" and cells["Completion Date"] == "8/6/2024"
    assert cells["Baseline Diagnostic (Y/N)"] == "Y" and cells["Most Recent Diagnostic YTD (Y/N)"] == "N"
    assert cells["Overall Relative Placement"] == "Early On Grade Level"
    assert cells["Class Teacher(s)"] == "Quillfeather, Zenobia; Okafor, Ada"
    padded = write(tmp_path, rows, layout="2022-23", name="p.csv").read_text().splitlines()
    cells = dict(zip(padded[0].split(","), next(csv_rows(padded)), strict=True))
    assert cells["Completion Date"] == "08/06/2024"


def csv_rows(lines: list[str]):
    reader = csv.reader(lines)
    next(reader)
    return reader
