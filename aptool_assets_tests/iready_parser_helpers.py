"""Helpers for the i-Ready parser tests: a valid current-layout record with planted fake names, files
written by the demo's vendor-format writer, the parser called the way the tests call it, the vendor IDs
mapped to Aeries StudentIDs through a roster made from them, a check that none of the planted names
leaks, and where the real vendor samples live (``needs_fixtures`` skips a test when they are absent)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from aptool_assets.rules.student_ids import map_vendor_ids
from aptool_assets.sources.iready.parser import ParsedDiagnostics, parse_diagnostic_file
from aptool_demo.iready_files import write_diagnostic_csv

# Fake personal data planted in generated files; none of it may surface anywhere.
PII = ("Quillfeather", "Zenobia", "zenobia.quillfeather")
LOADED_AT = datetime(2025, 1, 15, 8, 30, tzinfo=UTC)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "iready"
"""The real, scrubbed vendor sample files (/work/shared/fixtures/iready)."""
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"real i-Ready sample files not available at {FIXTURES}"
)


def parse(path: Path, subject: str = "ela", **kwargs) -> ParsedDiagnostics:
    kwargs.setdefault("loaded_at", LOADED_AT)
    return parse_diagnostic_file(path, subject=subject, source_file=path.name, **kwargs)


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


def roster_of(results: pl.DataFrame) -> pl.DataFrame:
    """An ``aptool.students``-like roster in which each delivered Student ID, read as a number, is one
    student's StudentID, StudentNumber and SSID (so "00123" belongs to student 123)."""
    ids = results.get_column("vendor_student_id").cast(pl.Int64).unique().sort()
    return pl.DataFrame({"student_id": ids, "student_number": ids, "state_student_id": ids.cast(pl.Utf8)})


def mapped(results: pl.DataFrame, id_field: str = "student_id") -> pl.DataFrame:
    """``results`` with ``student_id`` filled the way the pipeline does (``map_vendor_ids``), against
    :func:`roster_of` the same results."""
    return map_vendor_ids(results, roster_of(results), id_field)


def assert_no_pii(*texts: str) -> None:
    for text in texts:
        for secret in PII:
            assert secret not in text, f"personal data leaked: {secret!r}"
