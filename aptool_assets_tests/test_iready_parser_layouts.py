"""i-Ready Diagnostic Results parser on every layout: the real vendor samples, the header aliases of
each era, and generated files of every layout that must round-trip.

The real samples live outside the repository (``/work/shared/fixtures/iready``); their tests skip
when the directory is absent, and the same layouts are also exercised on generated files so the
suite stays meaningful anywhere.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from aptool_assets.sources.iready.parser import ParsedDiagnostics, StaleFileError, peek_academic_years
from aptool_assets.sources.iready.schemas import (
    CELL_COLUMNS,
    HEADER_ALIASES,
    canonical_field,
    header_key,
    validate_results,
)
from aptool_assets.tables.iready import COLUMN_NAMES, PUBLISHED_COLUMNS
from aptool_assets_tests.iready_parser_helpers import mapped, parse, record, write
from aptool_demo.diagnostics import synthetic_diagnostics
from aptool_demo.iready_files import LAYOUTS, layout_headers

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "iready"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"real i-Ready sample files not available at {FIXTURES}"
)

FX_2018_ELA = "2018-2019_ALL__2018-2019diagnostic_results_ela_scrubbed.csv"
FX_2020_MATH = "2020-2021_ALL__scrubbed_diagnostic_results_math_2020_2021.csv"
FX_2021_ELA = "2021-2022_ALL__scrubbed_diagnostic_results_ela.csv"
FX_2022_MATH = "2022-2023_ALL__IREADY_9_9_DIAGNOSTIC_RESULTS_MATH_scrubbed.csv"
FX_2024_ELA = "2023-2024_ALL__diagnostic_results_ela_CONFIDENTIAL_scrub.csv"
FX_2024_MATH = "2023-2024_ALL__diagnostic_results_math_CONFIDENTIAL_scrub.csv"
# file → (subject, layout the writer reproduces, data rows, academic start year)
FIXTURE_FILES = {
    FX_2018_ELA: ("ela", "2018-19", 1, 2018),
    FX_2020_MATH: ("math", "2020-21", 7, 2020),
    FX_2021_ELA: ("ela", "2021-22", 3, 2021),
    FX_2022_MATH: ("math", "2022-23", 5, 2022),
    FX_2024_ELA: ("ela", "2024-25", 4, 2024),
    FX_2024_MATH: ("math", "2024-25", 4, 2024),
}


def fixture(name: str) -> Path:
    return FIXTURES / name


def row_of(parsed: ParsedDiagnostics, vendor_student_id: str, completion: date) -> dict:
    rows = parsed.results.filter(
        (pl.col("vendor_student_id") == vendor_student_id) & (pl.col("completion_date") == completion)
    ).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


# --- the real vendor samples -----------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("name", sorted(FIXTURE_FILES))
def test_every_fixture_parses_cleanly(name):
    subject, _layout, n_rows, year = FIXTURE_FILES[name]
    parsed = parse(fixture(name), subject)
    assert parsed.total_rows == n_rows
    assert parsed.results.height == n_rows
    assert parsed.rejected.is_empty(), parsed.rejected.to_dicts()
    assert parsed.unknown_columns == []
    assert parsed.academic_years == [year]
    assert parsed.duplicate_rows_collapsed == 0
    assert list(parsed.results.columns) == list(COLUMN_NAMES)
    assert validate_results(parsed.results) == []
    assert parsed.results.get_column("subject").unique().to_list() == [subject]
    assert peek_academic_years(fixture(name)) == {year}
    # The parser leaves the Aeries StudentID to the mapping; every delivered ID is kept as digits.
    assert parsed.results.get_column("student_id").null_count() == n_rows
    assert parsed.results.get_column("vendor_student_id").str.contains(r"^[0-9]+$").all()
    assert mapped(parsed.results).get_column("student_id").null_count() == 0


@needs_fixtures
@pytest.mark.parametrize("name", sorted(FIXTURE_FILES))
def test_writer_reproduces_fixture_headers(name):
    subject, layout, _, _ = FIXTURE_FILES[name]
    header = fixture(name).read_text(encoding="utf-8").splitlines()[0].split(",")
    assert layout_headers(layout, subject) == header


@needs_fixtures
def test_fixture_2018_19_oldest_ela_layout():
    parsed = parse(fixture(FX_2018_ELA), "ela")
    row = row_of(parsed, "10179", date(2018, 9, 25))
    assert row["academic_year"] == 2018
    assert row["student_grade"] == 10
    assert row["overall_scale_score"] == 361
    assert row["overall_placement"] == "Level K"
    assert row["overall_relative_placement"] == "1 Grade Level Below"
    assert row["lexile_measure"] == "BR400L"
    assert row["percentile"] == 14 and row["grouping"] == 1
    assert row["is_baseline"] is True and row["is_most_recent"] is False  # old flag headers
    assert row["duration_min"] == 19 and row["rush_flag"] is None
    assert row["school_name"] == "Google Redwood High School"
    assert row["start_date"] == date(2018, 9, 25) and row["assessment_window"] == "BOY"
    # "Reading Comprehension: Literature" is today's comprehension_literature.
    assert row["comprehension_literature_scale_score"] == 370
    assert row["comprehension_informational_text_scale_score"] == 369
    assert row["vocabulary_placement"] == "Emerging K"
    assert row["phonics_relative_placement"] is None  # no domain relative placements yet
    assert row["diagnostic_gain"] is None and row["percent_progress_to_annual_typical_growth"] is None
    assert (row["annual_typical_growth_measure"], row["annual_stretch_growth_measure"]) == (49, 67)
    assert row["mid_on_grade_level_scale_score"] == 458
    assert row["number_and_operations_scale_score"] is None


@needs_fixtures
def test_fixture_2020_21_math_with_optional_columns():
    parsed = parse(fixture(FX_2020_MATH), "math")
    first = row_of(parsed, "13029", date(2020, 12, 17))
    assert first["rush_flag"] == "Yellow Rush Flag"
    assert first["start_date"] == date(2020, 11, 30)
    assert first["assessment_window"] == "MOY"
    assert first["quantile_measure"] == "145Q"
    assert first["number_and_operations_relative_placement"] == "1 Grade Level Below"
    assert first["geometry_scale_score"] == 362
    spring = row_of(parsed, "13029", date(2021, 3, 23))  # zero-padded 03/23/2021
    assert spring["quantile_measure"] == "EM390Q"
    assert spring["overall_relative_placement"] == "3 or More Grade Levels Below"
    assert spring["is_most_recent"] is True and spring["assessment_window"] == "EOY"
    assert parsed.results.filter(pl.col("vendor_student_id") == "13031").height == 3


@needs_fixtures
def test_fixture_2021_22_ela_tested_out_domains():
    parsed = parse(fixture(FX_2021_ELA), "ela")
    row = row_of(parsed, "13033", date(2021, 8, 24))
    assert row["rush_flag"] == "Red Rush Flag"
    assert row["lexile_measure"] == "670L"
    for domain in ("phonological_awareness", "phonics", "high_frequency_words"):
        assert row[f"{domain}_scale_score"] is None
        assert row[f"{domain}_placement"] == "Tested Out"
        assert row[f"{domain}_relative_placement"] == "Mid or Above Grade Level"
    assert row["comprehension_literature_relative_placement"] == "3 or More Grade Levels Below"
    early = row_of(parsed, "13034", date(2021, 8, 17))
    assert early["overall_placement"] == "Early 7"
    assert early["comprehension_informational_text_relative_placement"] == "Mid or Above Grade Level"


@needs_fixtures
def test_fixture_2022_23_math_transition_headers():
    parsed = parse(fixture(FX_2022_MATH), "math")
    row = row_of(parsed, "13976", date(2022, 8, 23))
    assert row["student_grade"] == 1
    assert row["overall_relative_placement"] == "Early On Grade Level"
    assert row["is_baseline"] is True and row["is_most_recent"] is True
    assert row["diagnostic_gain"] == 0
    assert row["percent_progress_to_annual_typical_growth"] == 0
    assert row["measurement_and_data_relative_placement"] == "1 Grade Level Below"
    assert row["mid_on_grade_level_scale_score"] == 413


@needs_fixtures
def test_fixture_2024_25_ela_current_layout():
    # The folder says 2023-2024 but the content is Academic Year 2024-2025.
    parsed = parse(fixture(FX_2024_ELA), "ela", expected_academic_year=2024)
    first = row_of(parsed, "11455", date(2024, 8, 6))  # unpadded 8/6/2024
    assert first["student_grade"] == 0  # 'K'
    assert first["academic_year"] == 2024
    assert first["overall_scale_score"] == 594 and first["overall_placement"] == "Grade 7"
    assert first["grouping"] is None
    assert first["phonological_awareness_placement"] == "Not Assessed"
    assert first["phonological_awareness_relative_placement"] == "Not Assessed"
    assert first["phonics_scale_score"] is None and first["phonics_placement"] == "Surpassed Level"
    assert first["comprehension_overall_scale_score"] == 584
    assert first["comprehension_informational_text_placement"] == "Grade 4"
    assert first["annual_typical_growth_measure"] is None
    later = row_of(parsed, "11455", date(2024, 12, 12))
    assert later["percentile"] is None and later["diagnostic_gain"] == 45
    assert later["assessment_window"] == "MOY" and later["is_most_recent"] is True
    winter = row_of(parsed, "11402", date(2025, 1, 22))
    assert winter["phonics_scale_score"] == 532 and winter["phonics_placement"] == "Grade 3"


@needs_fixtures
def test_fixture_2024_25_math_current_layout():
    parsed = parse(fixture(FX_2024_MATH), "math")
    row = row_of(parsed, "11455", date(2024, 12, 9))
    assert row["quantile_measure"] == "EM85Q"
    assert row["lexile_measure"] is None
    late = row_of(parsed, "11402", date(2024, 12, 10))
    assert late["number_and_operations_scale_score"] is None
    assert late["number_and_operations_placement"] == "Surpassed Level"
    assert late["overall_relative_placement"] == "Early On Grade Level"
    assert late["annual_typical_growth_measure"] is None and late["diagnostic_gain"] == 21


@needs_fixtures
@pytest.mark.parametrize("name", [FX_2024_ELA, FX_2024_MATH])
def test_fixture_in_2023_folder_is_stale_when_loaded_as_2023(name):
    subject = FIXTURE_FILES[name][0]
    with pytest.raises(StaleFileError) as err:
        parse(fixture(name), subject, expected_academic_year=2023)
    assert str(err.value) == (
        f"{name} holds Academic Year 2024-2025 but is being loaded as 2023-2024: refusing a stale "
        "or rollover file; the previously published data is kept"
    )
    # Names in the fixture never reach the message.
    assert "Seal" not in str(err.value) and "Jayden" not in str(err.value)


@needs_fixtures
def test_fixture_names_never_reach_results():
    parsed = parse(fixture(FX_2021_ELA), "ela")
    dumped = parsed.results.write_json()
    for secret in ("Dunn", "Elane", "justi.lo5104", "Vagim", "Homeroom"):
        assert secret not in dumped


# --- header mapping --------------------------------------------------------------------------

# Every header variant of reference §6-7 → its canonical field.
HEADER_VARIANTS = {
    "Time on Task (minutes)": "duration_min",
    "Duration (min)": "duration_min",
    "Diagnostic used to establish Growth Measures (Y/N)": "is_baseline",
    "Baseline Diagnostic (Y/N)": "is_baseline",
    "Baseline Assessment (Y/N)": "is_baseline",
    "Most Recent Diagnostic (Y/N)": "is_most_recent",
    "Most Recent Diagnostic YTD (Y/N)": "is_most_recent",
    "Most Recent Assessment YTD (Y/N)": "is_most_recent",
    "Diagnostic Gain": "diagnostic_gain",
    "Assessment Gain": "diagnostic_gain",
    "Diagnostic Language": "assessment_language",
    "Assessment Language": "assessment_language",
    "Gender": "sex",
    "Sex": "sex",
    "Enrolled": "enrolled",
    "Reading Comprehension: Literature Scale Score": "comprehension_literature_scale_score",
    "Reading Comprehension: Informational Text Relative Placement": (
        "comprehension_informational_text_relative_placement"
    ),
    "Reading Comprehension: Overall Placement": "comprehension_overall_placement",
    "Comprehension: Overall Scale Score": "comprehension_overall_scale_score",
    "Comprehension: Literature Placement": "comprehension_literature_placement",
    "Read Aloud": "read_aloud",
    "Tactile Graphics": "tactile_graphics",
    "Norming Window": "norming_window",
    "Student State ID": "student_state_id",
    "504 Plan": "plan_504",
    "Gifted and Talented (GATE)": "gifted_and_talented",
    "Percent Progress to Annual Typical Growth (%)": "percent_progress_to_annual_typical_growth",
    "Percent Progress to Annual Stretch Growth (%)": "percent_progress_to_annual_stretch_growth",
    "Class Teacher(s)": "class_teachers",
    "High-Frequency Words Relative Placement": "high_frequency_words_relative_placement",
    "Proficiency if Student Shows No Additional Growth": "proficiency_no_additional_growth",
    "Reading Difficulty Indicator (Y/N)": "reading_difficulty_indicator",
    "  student id ": "vendor_student_id",
    "OVERALL RELATIVE PLACEMENT": "overall_relative_placement",
    "\ufeffLast Name": "last_name",
}


@pytest.mark.parametrize("header, field", sorted(HEADER_VARIANTS.items()))
def test_header_variants_map(header, field):
    assert canonical_field(header) == field


def test_header_key_normalisation():
    assert header_key("Class Teacher(s)") == "class_teacher_s"
    assert header_key(" Duration (min) ") == "duration_min"
    assert header_key("Percent Progress to Annual Typical Growth (%)") == (
        "percent_progress_to_annual_typical_growth_percent"
    )


@needs_fixtures
def test_every_fixture_header_is_in_the_alias_table():
    for name in FIXTURE_FILES:
        header = fixture(name).read_text(encoding="utf-8").splitlines()[0].split(",")
        assert [h for h in header if header_key(h) not in HEADER_ALIASES] == [], name


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("subject", ["ela", "math"])
def test_every_generated_header_is_in_the_alias_table(layout, subject):
    assert all(header_key(h) in HEADER_ALIASES for h in layout_headers(layout, subject))


def test_layout_column_counts_match_the_reference():
    counts = {(lay, s): len(layout_headers(lay, s)) for lay in LAYOUTS for s in ("ela", "math")}
    assert counts[("2018-19", "ela")] == 34 and counts[("2018-19", "math")] == 30
    assert counts[("2020-21", "math")] == 45 and counts[("2021-22", "ela")] == 52
    assert counts[("2022-23", "math")] == 50
    assert counts[("2024-25", "ela")] == 63 and counts[("2024-25", "math")] == 54
    assert counts[("2026-27", "ela")] == 61  # KIPP's 60 + Tactile Graphics


# --- generated files: every layout round-trips -------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("subject", ["ela", "math"])
def test_generated_layout_round_trips(tmp_path, layout, subject):
    source = synthetic_diagnostics(25, 2025, subject, seed=3)
    path = write(tmp_path, source, subject=subject, layout=layout)
    parsed = parse(path, subject, expected_academic_year=2025)
    assert parsed.rejected.is_empty(), parsed.rejected.to_dicts()
    assert parsed.unknown_columns == []
    assert parsed.results.height == source.height
    assert validate_results(parsed.results) == []

    carried = {HEADER_ALIASES[header_key(h)] for h in layout_headers(layout, subject)}
    delivered = source.rename({"student_id": "vendor_student_id"})  # the file's "Student ID"
    expected = delivered.select(
        (pl.col(c) if c in carried and c in delivered.columns else pl.lit(None)).cast(PUBLISHED_COLUMNS[c]).alias(c)
        for c in CELL_COLUMNS
    )
    got = parsed.results.select(CELL_COLUMNS)
    order = ("vendor_student_id", "completion_date")
    assert got.sort(*order).equals(expected.sort(*order))
    # Mapped through a roster of the delivered IDs, each row finds its student again.
    by_student = ("student_id", "completion_date")
    assert mapped(parsed.results).select(by_student).sort(by_student).rows() == (
        source.select(by_student).sort(by_student).rows()
    )


def test_fy27_layout_renames(tmp_path):
    rows = [record(diagnostic_gain=17, is_baseline=False, is_most_recent=True, tactile_graphics="Off")]
    path = write(tmp_path, rows, layout="2026-27", name="i-ready_inform_results_reading_english_CONFIDENTIAL.csv")
    header = path.read_text().splitlines()[0]
    for new in ("Baseline Assessment (Y/N)", "Most Recent Assessment YTD (Y/N)", "Assessment Gain", "Tactile Graphics"):
        assert new in header
    assert "Diagnostic Gain" not in header
    row = parse(path, "reading_english").results.row(0, named=True)
    assert row["subject"] == "ela"
    assert (row["diagnostic_gain"], row["is_baseline"], row["is_most_recent"]) == (17, False, True)


def test_fy27_math_assessment_language(tmp_path):
    path = write(tmp_path, synthetic_diagnostics(5, 2026, "math", seed=1), subject="math", layout="2026-27")
    assert "Assessment Language" in path.read_text().splitlines()[0]
    parsed = parse(path, "math", expected_academic_year=2026)
    assert parsed.unknown_columns == [] and parsed.rejected.is_empty()


def test_pre_2020_time_on_task(tmp_path):
    path = write(tmp_path, [record(duration_min=33)], layout="2019-20")
    assert "Time on Task (minutes)" in path.read_text().splitlines()[0]
    assert parse(path).results.item(0, "duration_min") == 33


def test_old_and_new_header_in_one_file_are_coalesced(tmp_path):
    path = write(tmp_path, [record(diagnostic_gain=None), record(student_id=1002, diagnostic_gain=9)])
    lines = path.read_text().splitlines()
    lines[0] += ",Assessment Gain"
    lines[1] += ",12"
    lines[2] += ","
    path.write_text("\n".join(lines) + "\n")
    parsed = parse(path)
    assert parsed.unknown_columns == []
    assert parsed.results.sort("vendor_student_id").get_column("diagnostic_gain").to_list() == [12, 9]
