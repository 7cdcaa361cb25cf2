"""i-Ready Diagnostic Results parser: real vendor samples, generated layouts, every quirk and bad case.

The real samples live outside the repository (``/work/shared/fixtures/iready``); their tests skip
when the directory is absent, and the same layouts are also exercised on generated files so the
suite stays meaningful anywhere.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from aptool_assets.rules.academic import RELATIVE_PLACEMENTS, AssessmentWindows
from aptool_assets.sources.iready import parser as parser_module
from aptool_assets.sources.iready.parser import (
    DiagnosticFileError,
    ParsedDiagnostics,
    StaleFileError,
    parse_diagnostic_file,
    peek_academic_years,
)
from aptool_assets.sources.iready.schemas import (
    CELL_COLUMNS,
    DIAGNOSTIC_RESULTS_SCHEMA,
    HEADER_ALIASES,
    PII_FIELDS,
    canonical_field,
    header_key,
    validate_results,
)
from aptool_assets.tables.iready import COLUMN_NAMES, PUBLISHED_COLUMNS
from aptool_demo.diagnostics import synthetic_diagnostics
from aptool_demo.iready_files import LAYOUTS, layout_headers, write_diagnostic_csv

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

# Fake personal data planted in generated files; none of it may surface anywhere.
PII = ("Quillfeather", "Zenobia", "zenobia.quillfeather")
LOADED_AT = datetime(2025, 1, 15, 8, 30, tzinfo=UTC)


def parse(path: Path, subject: str = "ela", **kwargs) -> ParsedDiagnostics:
    kwargs.setdefault("loaded_at", LOADED_AT)
    return parse_diagnostic_file(path, subject=subject, source_file=path.name, **kwargs)


def fixture(name: str) -> Path:
    return FIXTURES / name


def row_of(parsed: ParsedDiagnostics, student_id: int, completion: date) -> dict:
    rows = parsed.results.filter(
        (pl.col("student_id") == student_id) & (pl.col("completion_date") == completion)
    ).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


def record(**overrides) -> dict:
    """A valid current-layout ELA record with planted fake names."""
    base = {
        "student_id": 1001,
        "last_name": PII[0],
        "first_name": PII[1],
        "user_name": PII[2],
        "class_teachers": "Quillfeather, Zenobia; Okafor, Ada",
        "student_grade": 5,
        "academic_year": 2024,
        "school_name": "Cedar Grove Elementary School",
        "start_date": date(2024, 9, 3),
        "completion_date": date(2024, 9, 4),
        "is_baseline": True,
        "is_most_recent": True,
        "duration_min": 45,
        "overall_scale_score": 520,
        "overall_placement": "Early 5",
        "overall_relative_placement": "Early On Grade Level",
        "percentile": 48,
        "grouping": 3,
        "lexile_measure": "780L",
        "lexile_range": "680L-830L",
        "vocabulary_scale_score": 530,
        "vocabulary_placement": "Mid 5",
        "vocabulary_relative_placement": "Mid or Above Grade Level",
        "diagnostic_gain": 0,
        "mid_on_grade_level_scale_score": 560,
    }
    base.update(overrides)
    return base


def records(n: int, start_id: int = 1001, **overrides) -> list[dict]:
    return [record(student_id=start_id + i, **overrides) for i in range(n)]


def write(tmp_path: Path, rows, name: str = "diagnostic_results_ela_CONFIDENTIAL.csv", **kwargs) -> Path:
    kwargs.setdefault("subject", "ela")
    path = tmp_path / name
    write_diagnostic_csv(path, rows, **kwargs)
    return path


def assert_no_pii(*texts: str) -> None:
    for text in texts:
        for secret in PII:
            assert secret not in text, f"personal data leaked: {secret!r}"


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


@needs_fixtures
@pytest.mark.parametrize("name", sorted(FIXTURE_FILES))
def test_writer_reproduces_fixture_headers(name):
    subject, layout, _, _ = FIXTURE_FILES[name]
    header = fixture(name).read_text(encoding="utf-8").splitlines()[0].split(",")
    assert layout_headers(layout, subject) == header


@needs_fixtures
def test_fixture_2018_19_oldest_ela_layout():
    parsed = parse(fixture(FX_2018_ELA), "ela")
    row = row_of(parsed, 10179, date(2018, 9, 25))
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
    first = row_of(parsed, 13029, date(2020, 12, 17))
    assert first["rush_flag"] == "Yellow Rush Flag"
    assert first["start_date"] == date(2020, 11, 30)
    assert first["assessment_window"] == "MOY"
    assert first["quantile_measure"] == "145Q"
    assert first["number_and_operations_relative_placement"] == "1 Grade Level Below"
    assert first["geometry_scale_score"] == 362
    spring = row_of(parsed, 13029, date(2021, 3, 23))  # zero-padded 03/23/2021
    assert spring["quantile_measure"] == "EM390Q"
    assert spring["overall_relative_placement"] == "3 or More Grade Levels Below"
    assert spring["is_most_recent"] is True and spring["assessment_window"] == "EOY"
    assert parsed.results.filter(pl.col("student_id") == 13031).height == 3


@needs_fixtures
def test_fixture_2021_22_ela_tested_out_domains():
    parsed = parse(fixture(FX_2021_ELA), "ela")
    row = row_of(parsed, 13033, date(2021, 8, 24))
    assert row["rush_flag"] == "Red Rush Flag"
    assert row["lexile_measure"] == "670L"
    for domain in ("phonological_awareness", "phonics", "high_frequency_words"):
        assert row[f"{domain}_scale_score"] is None
        assert row[f"{domain}_placement"] == "Tested Out"
        assert row[f"{domain}_relative_placement"] == "Mid or Above Grade Level"
    assert row["comprehension_literature_relative_placement"] == "3 or More Grade Levels Below"
    early = row_of(parsed, 13034, date(2021, 8, 17))
    assert early["overall_placement"] == "Early 7"
    assert early["comprehension_informational_text_relative_placement"] == "Mid or Above Grade Level"


@needs_fixtures
def test_fixture_2022_23_math_transition_headers():
    parsed = parse(fixture(FX_2022_MATH), "math")
    row = row_of(parsed, 13976, date(2022, 8, 23))
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
    first = row_of(parsed, 11455, date(2024, 8, 6))  # unpadded 8/6/2024
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
    later = row_of(parsed, 11455, date(2024, 12, 12))
    assert later["percentile"] is None and later["diagnostic_gain"] == 45
    assert later["assessment_window"] == "MOY" and later["is_most_recent"] is True
    winter = row_of(parsed, 11402, date(2025, 1, 22))
    assert winter["phonics_scale_score"] == 532 and winter["phonics_placement"] == "Grade 3"


@needs_fixtures
def test_fixture_2024_25_math_current_layout():
    parsed = parse(fixture(FX_2024_MATH), "math")
    row = row_of(parsed, 11455, date(2024, 12, 9))
    assert row["quantile_measure"] == "EM85Q"
    assert row["lexile_measure"] is None
    late = row_of(parsed, 11402, date(2024, 12, 10))
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
    "  student id ": "student_id",
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
    expected = source.select(
        (pl.col(c) if c in carried and c in source.columns else pl.lit(None)).cast(PUBLISHED_COLUMNS[c]).alias(c)
        for c in CELL_COLUMNS
    )
    got = parsed.results.select(CELL_COLUMNS)
    assert got.sort("student_id", "completion_date").equals(expected.sort("student_id", "completion_date"))


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
    assert parsed.results.sort("student_id").get_column("diagnostic_gain").to_list() == [12, 9]


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
    assert parsed.results.get_column("student_id").sort().to_list() == source.get_column("student_id").sort().to_list()
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
    got = parsed.results.sort("student_id").select("completion_date", "start_date", "assessment_window").rows()
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


def test_leading_zero_ids_become_integers(tmp_path):
    rows = [record(student_id="00123"), record(student_id="0000456"), record(student_id=" 789 ")]
    parsed = parse(write(tmp_path, rows))
    assert parsed.rejected.is_empty()
    assert parsed.results.get_column("student_id").to_list() == [123, 456, 789]
    assert parsed.results.schema["student_id"] == pl.Int64


def test_measures_kept_as_text(tmp_path):
    rows = [
        record(student_id=1, lexile_measure="BR400L", lexile_range="BR400L-BR290L"),
        record(student_id=2, lexile_measure="1035L", lexile_range="1060L - 1210L"),
    ]
    parsed = parse(write(tmp_path, rows))
    assert parsed.results.sort("student_id").get_column("lexile_measure").to_list() == ["BR400L", "1035L"]
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
        parsed.results.sort("student_id")
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


@pytest.mark.parametrize("grade, expected", [("K", 0), ("KG", 0), ("0", 0), ("1", 1), ("12", 12), ("", None)])
def test_grades(tmp_path, grade, expected):
    parsed = parse(write(tmp_path, [record(student_grade=grade)]))
    assert parsed.rejected.is_empty()
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
    assert (row["student_id"], row["overall_scale_score"], row["duration_min"]) == (1001, 520, 45)
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
    good_ids = [r["student_id"] for i, r in enumerate(rows) if i not in (1, 3, 5, 7)]
    assert sorted(parsed.results.get_column("student_id").to_list()) == good_ids
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
    assert raw["overall_scale_score"] == "950" and raw["student_id"] == "1104"
    assert set(raw) == set(CELL_COLUMNS)
    assert_no_pii(parsed.rejected.write_csv())


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"student_id": ""}, "missing_value: student_id"),
        ({"student_id": "-5"}, "non_numeric_student_id"),
        ({"academic_year": "2024"}, "invalid_academic_year"),
        ({"academic_year": "2024-2026"}, "invalid_academic_year"),
        ({"completion_date": ""}, "missing_value: completion_date"),
        ({"completion_date": "8/5/24"}, "invalid_date: completion_date"),
        ({"completion_date": "2/30/2025"}, "invalid_date: completion_date"),
        ({"start_date": "soon"}, "invalid_date: start_date"),
        ({"overall_scale_score": ""}, "missing_value: overall_scale_score"),
        ({"overall_scale_score": "abc"}, "invalid_integer: overall_scale_score"),
        ({"overall_scale_score": "99"}, "scale_score_out_of_range: overall_scale_score=99"),
        ({"overall_relative_placement": ""}, "missing_value: overall_relative_placement"),
        ({"overall_relative_placement": "Not Assessed"}, "invalid_relative_placement: overall_relative_placement"),
        ({"student_grade": "13"}, "invalid_grade: student_grade"),
        ({"student_grade": "TK"}, "invalid_grade: student_grade"),
        ({"is_baseline": "maybe"}, "invalid_flag: is_baseline"),
        ({"percentile": "0"}, "percentile_out_of_range: percentile=0"),
        ({"percentile": "100"}, "percentile_out_of_range: percentile=100"),
        ({"percentile": "12.5"}, "invalid_integer: percentile"),
        ({"duration_min": "-3"}, "invalid_duration: duration_min=-3"),
        ({"diagnostic_gain": "lots"}, "invalid_integer: diagnostic_gain"),
        ({"vocabulary_scale_score": "850"}, "scale_score_out_of_range: vocabulary_scale_score=850"),
        ({"vocabulary_relative_placement": "Below"}, "invalid_relative_placement: vocabulary_relative_placement"),
    ],
)
def test_each_rule_rejects_with_its_reason(tmp_path, overrides, reason):
    rows = [record(student_id=2001), record(**{"student_id": 2002, **overrides})]
    parsed = parse(write(tmp_path, rows), expected_academic_year=2024 if "academic_year" not in overrides else None)
    assert parsed.rejected.select("line_number", "reason").rows() == [(3, reason)]
    assert parsed.results.get_column("student_id").to_list() == [2001]
    assert_no_pii(parsed.rejected.write_csv())


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
        ("Percentile", "0"),
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
        (first_bad + 3, "percentile_out_of_range: percentile=0"),
    ]
    assert parsed.results.height == good.height


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


def test_byte_identical_rows_collapse_and_key_conflicts_are_rejected(tmp_path):
    rows = [
        record(student_id=1),
        record(student_id=1),  # byte-identical
        record(student_id=1),  # byte-identical
        record(student_id=2),
        record(student_id=2, percentile=77),  # same key, other content → conflict
        record(student_id="002"),  # same key after the int cast, other bytes → conflict
        record(student_id=3, overall_scale_score=530),  # same-day retest with another score: kept
        record(student_id=3, overall_scale_score=545),
    ]
    parsed = parse(write(tmp_path, rows))
    assert parsed.total_rows == 8
    assert parsed.duplicate_rows_collapsed == 2
    assert parsed.rejected.select("line_number", "reason").rows() == [
        (6, "duplicate_key_conflict"),
        (7, "duplicate_key_conflict"),
    ]
    assert parsed.results.height == 4
    assert parsed.results.filter(pl.col("student_id") == 2).item(0, "percentile") == 48  # first wins
    assert parsed.results.filter(pl.col("student_id") == 3).height == 2
    assert parsed.total_rows == parsed.results.height + parsed.rejected.height + parsed.duplicate_rows_collapsed


def test_same_key_with_other_personal_cells_is_a_conflict_not_a_duplicate(tmp_path):
    rows = [record(student_id=4), record(student_id=4, first_name="Octavia", class_teachers="Other, Teacher")]
    parsed = parse(write(tmp_path, rows))
    assert parsed.duplicate_rows_collapsed == 0
    assert parsed.rejected.select("line_number", "reason").rows() == [(3, "duplicate_key_conflict")]
    assert "Octavia" not in parsed.rejected.write_csv()
    assert_no_pii(parsed.rejected.write_csv())


def test_duplicated_bad_rows_are_rejected_once(tmp_path):
    rows = [record(student_id="bad")] * 3 + [record(student_id=9)]
    parsed = parse(write(tmp_path, rows))
    assert parsed.duplicate_rows_collapsed == 2
    assert parsed.rejected.select("line_number", "reason").rows() == [(2, "non_numeric_student_id")]


# --- privacy and output contract ---------------------------------------------------------------


def test_no_personal_data_anywhere(tmp_path):
    rows = records(3) + [record(student_id="??", overall_scale_score=999)]
    path = write(tmp_path, rows)
    assert PII[0] in path.read_text()  # the file really carries the names
    parsed = parse(path)
    assert not set(parsed.results.columns) & PII_FIELDS
    assert_no_pii(parsed.results.write_csv(), parsed.rejected.write_csv(), repr(parsed))
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
    assert COLUMN_NAMES[:3] == ("student_id", "subject", "academic_year")
    assert COLUMN_NAMES[-2:] == ("source_file", "loaded_at")
    assert len(COLUMN_NAMES) == 60


def test_validate_results_reports_problems(tmp_path):
    good = parse(write(tmp_path, records(3))).results
    assert validate_results(good) == []
    broken = pl.concat([good, good.head(1)]).with_columns(
        pl.when(pl.col("student_id") == 1002)
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
    assert parsed.results.get_column("student_id").to_list() == [1]
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
        .results.group_by("student_id")
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
