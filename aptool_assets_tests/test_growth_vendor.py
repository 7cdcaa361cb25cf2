"""Our ``pct_typical_growth`` against the vendor's "Percent Progress to Annual Typical Growth (%)" (contract §4.6's
data test): the comparison's rules on hand-built frames, then the real vendor samples and the demo's generated
files, parsed and mapped the way the pipeline does, with the counts each comparison reports."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from aptool_assets.rules.growth import (
    DISAGREEMENT_SCHEMA,
    ProgressAgreement,
    iready_growth,
    vendor_progress_agreement,
    vendor_progress_disagreements,
)
from aptool_assets_tests.iready_parser_helpers import FIXTURES, mapped, needs_fixtures, parse, write
from aptool_demo.diagnostics import synthetic_diagnostics

YEAR = 2024
KEY = ["school_year", "student_id", "subject"]


def diagnostics(rows: list[tuple]) -> pl.DataFrame:
    """rows: (student_id, subject, completion_date, score, is_baseline, typical measure, vendor percent)."""
    return pl.DataFrame(
        [
            (sid, subj, YEAR, day, score, base, typ, typ * 2 if typ else None, pct)
            for sid, subj, day, score, base, typ, pct in rows
        ],
        schema={
            "student_id": pl.Int64,
            "subject": pl.Utf8,
            "academic_year": pl.Int32,
            "completion_date": pl.Date,
            "overall_scale_score": pl.Int32,
            "is_baseline": pl.Boolean,
            "annual_typical_growth_measure": pl.Int32,
            "annual_stretch_growth_measure": pl.Int32,
            "percent_progress_to_annual_typical_growth": pl.Int32,
        },
        orient="row",
    )


FALL, WINTER = date(2024, 9, 3), date(2024, 12, 10)


def compare(rows: list[tuple], tolerance: float = 1.0) -> tuple[pl.DataFrame, ProgressAgreement]:
    diags = diagnostics(rows)
    growth = iready_growth(diags, None, None, school_year=YEAR)
    return vendor_progress_disagreements(growth, diags, tolerance), vendor_progress_agreement(growth, diags, tolerance)


# --- the comparison's rules ---------------------------------------------------------------------------------


def test_differences_up_to_the_tolerance_agree_and_beyond_it_disagree():
    # Typical 30: 10 points is 33.3%; the vendor's 32 is 1.3 away, 33 is 0.3 away, 34 is 0.7 away.
    rows = [
        (1, "ela", FALL, 500, True, 30, 0),
        (1, "ela", WINTER, 510, False, 30, 32),
        (2, "ela", FALL, 500, True, 20, 0),
        (2, "ela", WINTER, 510, False, 20, 51),  # ours 50.0: exactly 1.0 away agrees
        (3, "ela", FALL, 500, True, 30, 0),
        (3, "ela", WINTER, 510, False, 30, 34),
    ]
    found, counts = compare(rows)
    assert found.schema == pl.Schema(DISAGREEMENT_SCHEMA)
    assert found.rows() == [(YEAR, 1, "ela", 33.3, 32, 1.3)]
    assert counts == ProgressAgreement(compared=3, agree=2, disagree=1)
    assert compare(rows, tolerance=0.25)[1] == ProgressAgreement(3, 0, 3)
    assert compare(rows, tolerance=1.3)[1] == ProgressAgreement(3, 3, 0)


def test_the_vendors_figure_is_read_from_the_latest_diagnostic_only():
    rows = [
        (1, "math", FALL, 500, True, 20, 99),  # the baseline's percent is not compared
        (1, "math", WINTER, 505, False, 20, None),  # the latest carries none: nothing to compare
        (2, "math", FALL, 500, True, 20, 0),
        (2, "math", WINTER, 505, False, 20, 25),
        (2, "math", WINTER, 503, False, 20, 99),  # a lower same-day retest is not the latest
    ]
    found, counts = compare(rows)
    assert found.is_empty() and counts == ProgressAgreement(1, 1, 0)


def test_our_missing_percent_next_to_the_vendors_is_a_disagreement_without_a_difference():
    # No measure on our baseline row, a percent on the vendor's latest row.
    rows = [(1, "ela", FALL, 500, True, None, None), (1, "ela", WINTER, 510, False, 20, 50)]
    found, counts = compare(rows)
    assert found.rows() == [(YEAR, 1, "ela", None, 50, None)]
    assert counts == ProgressAgreement(1, 0, 1)


def test_a_single_diagnostic_compares_zero_with_zero():
    found, counts = compare([(1, "ela", FALL, 500, True, 20, 0), (2, "math", FALL, 470, True, 15, 0)])
    assert found.is_empty() and counts == ProgressAgreement(2, 2, 0)


def test_negative_growth_disagrees_with_the_vendors_floor_at_zero():
    found, counts = compare([(1, "ela", FALL, 500, True, 20, 0), (1, "ela", WINTER, 490, False, 20, 0)])
    assert found.rows() == [(YEAR, 1, "ela", -50.0, 0, -50.0)]
    assert counts == ProgressAgreement(1, 0, 1)


def test_rows_without_a_growth_row_and_unmapped_students_are_not_compared():
    diags = diagnostics([(1, "ela", FALL, 500, True, 20, 0), (None, "ela", FALL, 500, True, 20, 80)])
    growth = iready_growth(diags, None, None, school_year=YEAR).filter(pl.col("student_id") == 99)
    assert vendor_progress_agreement(growth, diags) == ProgressAgreement(0, 0, 0)
    assert vendor_progress_disagreements(growth, diags).is_empty()


# --- the real vendor samples ---------------------------------------------------------------------------------


def growth_of(results: pl.DataFrame) -> pl.DataFrame:
    years = sorted(results.get_column("academic_year").unique().to_list())
    return pl.concat([iready_growth(results, None, None, school_year=year) for year in years])


@needs_fixtures
def test_the_vendor_samples_agree_except_where_the_score_fell():
    files = sorted(FIXTURES.glob("*.csv"))
    assert len(files) == 6
    results = pl.concat([mapped(parse(f, "math" if "math" in f.name.lower() else "ela").results) for f in files])
    growth = growth_of(results)
    assert growth.height == 16
    counts = vendor_progress_agreement(growth, results)
    found = vendor_progress_disagreements(growth, results)
    # Only the 2022-23 and 2024-25 layouts carry the percent; of their 9 growth rows the latest diagnostic of 7
    # carries it. The five 2022-23 students took one test each (0 = 0.0); the two disagreements are 2024-25
    # students whose score fell (growth −26 and −17) and whose vendor percent is floored at 0.
    assert counts == ProgressAgreement(compared=7, agree=5, disagree=2)
    assert found.rows() == [
        (2024, 11402, "ela", -152.9, 0, -152.9),
        (2024, 11455, "math", -58.6, 0, -58.6),
    ]
    fell = growth.join(found, on=KEY).get_column("growth_to_date").to_list()
    assert fell == [-26, -17]


# --- the demo's generated files ------------------------------------------------------------------------------


def demo_results(tmp_path: Path) -> pl.DataFrame:
    frames = []
    for subject in ("ela", "math"):
        records = synthetic_diagnostics(300, 2025, subject, seed=7)
        path = write(tmp_path, records, name=f"diagnostic_results_{subject}_CONFIDENTIAL.csv", subject=subject)
        parsed = parse(path, subject)
        assert parsed.rejected.is_empty()
        frames.append(mapped(parsed.results))
    return pl.concat(frames)


def test_the_demo_files_disagree_exactly_where_the_score_fell(tmp_path):
    results = demo_results(tmp_path)
    growth = iready_growth(results, None, None, school_year=2025)
    counts = vendor_progress_agreement(growth, results)
    found = vendor_progress_disagreements(growth, results)
    # The generator writes a percent on every row: every growth row is compared.
    assert counts.compared == growth.height == 600
    assert counts.agree + counts.disagree == counts.compared and counts.disagree == found.height
    # It computes floor(100 · max(gain, 0) / typical): never more than a point below ours when the score rose,
    # 0 when it fell, so the disagreements are exactly the students whose score fell.
    fell = growth.filter(pl.col("growth_to_date") < 0)
    assert 0 < found.height == fell.height
    assert found.select(KEY).equals(fell.select(KEY))
    assert found.get_column("vendor_pct_typical_growth").unique().to_list() == [0]
    vendor = results.filter(pl.col("is_most_recent")).select(
        pl.col("academic_year").alias("school_year"),
        "student_id",
        "subject",
        pl.col("percent_progress_to_annual_typical_growth").alias("vendor"),
    )
    rose = growth.filter(pl.col("growth_to_date") >= 0).join(vendor, on=KEY)
    gap = rose.select(pl.col("pct_typical_growth") - pl.col("vendor")).to_series()
    assert rose.height == counts.agree and gap.min() >= 0 and gap.max() <= 1.0


@pytest.mark.parametrize("tolerance", [0.0, 1.0, 1000.0])
def test_the_counts_always_add_up(tmp_path, tolerance):
    results = demo_results(tmp_path)
    growth = iready_growth(results, None, None, school_year=2025)
    counts = vendor_progress_agreement(growth, results, tolerance)
    assert counts.agree + counts.disagree == counts.compared == 600
    assert counts.disagree == vendor_progress_disagreements(growth, results, tolerance).height
    if tolerance == 1000.0:
        assert counts.disagree == 0
