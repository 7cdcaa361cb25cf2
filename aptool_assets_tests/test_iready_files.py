"""Recognising diagnostic-results files in every naming of the reference (§3) and mapping folders to years."""

from __future__ import annotations

import pytest

from aptool_assets.sources.iready.files import classify, diagnostic_files, subject_of
from aptool_assets.sources.iready.resources import RemoteFile


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("comprehensive_student_diagnostic_activity_ela.csv", "ela"),
        ("comprehensive_student_diagnostic_activity_math.csv", "math"),
        ("diagnostic_results_ela.csv", "ela"),
        ("diagnostic_results_math.csv", "math"),
        ("diagnostic_results_ela_CONFIDENTIAL.csv", "ela"),
        ("diagnostic_results_math_CONFIDENTIAL.csv", "math"),
        ("i-ready_inform_results_reading_english_CONFIDENTIAL.csv", "ela"),
        ("i-ready_inform_results_math_CONFIDENTIAL.csv", "math"),
        ("I-Ready_Inform_Results_Math_confidential.CSV", "math"),
        ("DIAGNOSTIC_RESULTS_ELA.csv", "ela"),
    ],
)
def test_every_vendor_name_is_recognised(name, subject):
    assert subject_of(name) == subject


@pytest.mark.parametrize(
    "name",
    [
        "personalized_instruction_by_lesson_ela_CONFIDENTIAL.csv",
        "iready_instruction_by_lesson_math.csv",
        "iready_pro_instruction_by_lesson_ela.csv",
        "personalized_instruction_summary_reading_CONFIDENTIAL.csv",
        "instructional_usage_data_math.csv",
        "diagnostic_and_instruction_ela_ytd_window.csv",
        "standards_results_math_grade_3.csv",
        "i-ready_inform_results_reading_spanish_CONFIDENTIAL.csv",
        "diagnostic_results_ela.csv.part",
        "diagnostic_results_science.csv",
    ],
)
def test_other_exports_are_ignored(name):
    assert subject_of(name) is None


def rf(path: str, size: int = 10, mtime: int = 1) -> RemoteFile:
    return RemoteFile(path=path, size=size, mtime=mtime)


def test_year_folders_map_to_partitions():
    cur = classify(rf("/exports/fl-kipp_miami/Current_Year/diagnostic_results_ela_CONFIDENTIAL.csv"), 2026)
    assert (cur.school_year, cur.subject, cur.year_folder, cur.region) == (
        2026,
        "ela",
        "Current_Year",
        "/exports/fl-kipp_miami",
    )
    arch = classify(rf("/exports/nj-kipp_nj/2024/diagnostic_results_math.csv"), 2026)
    assert (arch.school_year, arch.subject, arch.region) == (2024, "math", "/exports/nj-kipp_nj")
    dashed = classify(rf("/exports/2023-2024/diagnostic_results_math.csv"), 2026)
    assert dashed.school_year == 2023
    single = classify(rf("/exports/Current_Year/i-ready_inform_results_math_CONFIDENTIAL.csv"), 2026)
    assert (single.school_year, single.region) == (2026, "/exports")
    flat = classify(rf("/exports/diagnostic_results_ela.csv"), 2026)
    assert (flat.school_year, flat.year_folder, flat.region) == (2026, None, "/exports")


def test_listing_is_filtered_and_sorted():
    files = diagnostic_files(
        [
            rf("/exports/r/Current_Year/diagnostic_results_math.csv"),
            rf("/exports/r/Current_Year/personalized_instruction_by_lesson_math.csv"),
            rf("/exports/r/2025/diagnostic_results_ela.csv"),
        ],
        2026,
    )
    assert [f.remote.path for f in files] == [
        "/exports/r/2025/diagnostic_results_ela.csv",
        "/exports/r/Current_Year/diagnostic_results_math.csv",
    ]
