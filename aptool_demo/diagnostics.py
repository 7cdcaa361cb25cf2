"""Synthetic i-Ready diagnostics: deterministic, coherent records (scores, placements, growth measures,
domains) for the demo district, the tests and the parser benchmark, in the canonical field names that
:func:`aptool_demo.iready_files.write_diagnostic_csv` writes in any vendor layout."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import NamedTuple

import numpy as np
import polars as pl

from aptool_assets.rules.academic import RELATIVE_PLACEMENTS
from aptool_assets.tables.iready import ELA_DOMAINS, MATH_DOMAINS

_LAST = [
    "Rivera",
    "Nguyen",
    "Okafor",
    "Smith",
    "Garcia",
    "Kowalski",
    "Haddad",
    "Tanaka",
    "Begay",
    "Murphy",
    "Chen",
    "Johnson",
    "Delgado",
    "Ivanova",
    "Mensah",
    "Larsen",
]
_FIRST = [
    "Ava",
    "Mateo",
    "Zoe",
    "Liam",
    "Sofia",
    "Kai",
    "Amara",
    "Noah",
    "Maya",
    "Ezra",
    "Lena",
    "Omar",
    "Ivy",
    "Diego",
    "Nia",
    "Theo",
]
_SCHOOLS = [
    "Cedar Grove Elementary School",
    "Harbor View Middle School",
    "Sunrise K-8 Academy",
    "Maple Street Elementary School",
    "Riverside Middle School",
]
_WINDOW_RANGES = (((8, 10), (11, 15)), ((11, 16), (3, 1)), ((3, 2), (6, 10)))  # BOY, MOY, EOY


def _window_bounds(academic_year: int) -> list[tuple[date, date]]:
    def d(md: tuple[int, int]) -> date:
        return date(academic_year + (0 if md[0] >= 7 else 1), *md)

    return [(d(a), d(b)) for a, b in _WINDOW_RANGES]


def _measure(values: np.ndarray, unit: str, below: str) -> pl.Series:
    """Lexile/Quantile text: 1035L, BR400L (beginning reader), 880Q, EM85Q (emerging)."""
    s = pl.Series(values)
    return pl.select(
        pl.when(s < 0)
        .then(pl.concat_str(pl.lit(below), (-s).cast(pl.Utf8), pl.lit(unit)))
        .otherwise(pl.concat_str(s.cast(pl.Utf8), pl.lit(unit)))
    ).to_series()


class _Students(NamedTuple):
    """Per-student draws: grade, how many tests, the first test's window, ability, name indexes."""

    grade: np.ndarray
    n_tests: np.ndarray
    first_window: np.ndarray
    mid: np.ndarray  # the mid-on-grade-level scale score of the grade
    ability: np.ndarray
    last_i: np.ndarray
    first_i: np.ndarray


class _Tests(NamedTuple):
    """One entry per test: its student's index, the index of that student's first test, its number and window."""

    stu: np.ndarray
    starts: np.ndarray
    test_no: np.ndarray
    window: np.ndarray

    @property
    def n(self) -> int:
        return len(self.stu)


def synthetic_diagnostics(
    n_students: int,
    academic_year: int,
    subject: str,
    seed: int,
    student_ids: Sequence[int] | pl.Series | None = None,
) -> pl.DataFrame:
    """Deterministic, plausible diagnostics: 1-3 per student in consecutive BOY/MOY/EOY windows.

    Flags are coherent (first test baseline, last most recent), scores stay in 100..800 and
    placements use the vendor vocabularies, so every row parses cleanly.
    """
    if subject not in ("ela", "math"):
        raise ValueError(f"subject must be 'ela' or 'math', not {subject!r}")
    # Every draw below comes from this generator in a fixed order: the same seed gives the same file.
    rng = np.random.default_rng([seed, academic_year, 0 if subject == "ela" else 1])
    if student_ids is None:
        ids = 100_001 + np.arange(n_students, dtype=np.int64)
    else:
        ids = np.asarray(pl.Series(student_ids).cast(pl.Int64).to_numpy())[:n_students]
    students = _draw_students(rng, len(ids))
    tests = _expand_tests(students)
    completion, start = _draw_dates(rng, academic_year, tests)
    score = np.clip(
        np.rint(students.ability[tests.stu] + 12 * tests.window + rng.normal(0, 8, tests.n)), 100, 800
    ).astype(np.int32)
    df = _base_frame(rng, ids, students, tests, academic_year, (start, completion), score)
    g, mid = students.grade[tests.stu], students.mid[tests.stu]
    df = _with_growth(rng, df, score, score[tests.starts][tests.stu], g, mid)
    df, domains = _with_measure(df, subject, score)
    df = _with_domains(rng, df, domains, score, mid, g)
    return df.drop("_rel", "_g").sort("student_id", "completion_date")


def _draw_students(rng: np.random.Generator, n_students: int) -> _Students:
    grade = rng.choice(np.arange(0, 13), size=n_students, p=np.r_[np.full(9, 0.96 / 9), np.full(4, 0.01)])
    n_tests = rng.choice([1, 2, 3], size=n_students, p=[0.2, 0.3, 0.5])
    first_window = (rng.random(n_students) * (4 - n_tests)).astype(np.int64)
    mid = 400 + 28 * grade
    ability = mid + rng.normal(-20, 40, n_students)
    last_i, first_i = rng.integers(0, len(_LAST), n_students), rng.integers(0, len(_FIRST), n_students)
    return _Students(grade, n_tests, first_window, mid, ability, last_i, first_i)


def _expand_tests(students: _Students) -> _Tests:
    n_tests = students.n_tests
    stu = np.repeat(np.arange(len(n_tests)), n_tests)
    starts = np.cumsum(n_tests) - n_tests
    test_no = np.arange(len(stu)) - np.repeat(starts, n_tests)
    return _Tests(stu, starts, test_no, students.first_window[stu] + test_no)


def _draw_dates(rng: np.random.Generator, academic_year: int, tests: _Tests) -> tuple[np.ndarray, np.ndarray]:
    """Completion days inside each test's window, start days up to three days earlier (as day numbers)."""
    bounds = _window_bounds(academic_year)
    lo = np.array([(b[0] - date(1970, 1, 1)).days for b in bounds])
    span = np.array([(b[1] - b[0]).days + 1 for b in bounds])
    completion = lo[tests.window] + (rng.random(tests.n) * span[tests.window]).astype(np.int64)
    year_start = (date(academic_year, 7, 1) - date(1970, 1, 1)).days
    start = np.maximum(completion - rng.integers(0, 4, tests.n), year_start)
    return completion, start


def _base_frame(
    rng: np.random.Generator,
    ids: np.ndarray,
    students: _Students,
    tests: _Tests,
    academic_year: int,
    start_completion: tuple[np.ndarray, np.ndarray],
    score: np.ndarray,
) -> pl.DataFrame:
    """Who, when, flags and the overall score columns (plus helper columns ``_rel`` and ``_g``)."""
    stu, n = tests.stu, tests.n
    g, mid = students.grade[stu], students.mid[stu]
    start, completion = start_completion
    rel_idx = _relative_index(score - mid)
    school = (ids % len(_SCHOOLS)).astype(np.int64)
    return pl.DataFrame(
        {
            "student_id": ids[stu],
            "last_name": np.array(_LAST)[students.last_i][stu],
            "first_name": np.array(_FIRST)[students.first_i][stu],
            "student_grade": g.astype(np.int32),
            "academic_year": np.full(n, academic_year, dtype=np.int32),
            "school_name": np.array(_SCHOOLS)[school][stu],
            "start_date": start.astype("datetime64[D]"),
            "completion_date": completion.astype("datetime64[D]"),
            "is_baseline": tests.test_no == 0,
            "is_most_recent": tests.test_no == students.n_tests[stu] - 1,
            "duration_min": rng.integers(10, 121, n).astype(np.int32),
            "overall_scale_score": score,
            "percentile": np.clip(np.rint(50 + 0.9 * (score - mid) + rng.normal(0, 6, n)), 1, 99).astype(np.int32),
            "grouping": (5 - rel_idx).astype(np.int32),
            "_rel": rel_idx,
            "_g": g,
        }
    )


def _with_growth(
    rng: np.random.Generator,
    df: pl.DataFrame,
    score: np.ndarray,
    baseline_score: np.ndarray,
    g: np.ndarray,
    mid: np.ndarray,
) -> pl.DataFrame:
    """Rush flags, placements and the growth measures (gain since the baseline test, typical and stretch)."""
    rush = rng.random(len(score))
    typical = np.maximum(30 - 2 * g, 8).astype(np.int32)
    gain = np.maximum(score - baseline_score, 0).astype(np.int32)
    return df.with_columns(
        pl.when(pl.Series(rush < 0.03))
        .then(pl.lit("Yellow Rush Flag"))
        .when(pl.Series(rush < 0.04))
        .then(pl.lit("Red Rush Flag"))
        .alias("rush_flag"),
        _placement(pl.col("_g"), pl.col("_rel")).alias("overall_placement"),
        pl.col("_rel")
        .replace_strict(dict(enumerate(RELATIVE_PLACEMENTS)), return_dtype=pl.Utf8)
        .alias("overall_relative_placement"),
        pl.Series("diagnostic_gain", gain),
        pl.Series("annual_typical_growth_measure", typical),
        pl.Series("annual_stretch_growth_measure", (typical * 1.8).astype(np.int32)),
        pl.Series("percent_progress_to_annual_typical_growth", (100 * gain // typical).astype(np.int32)),
        pl.Series(
            "percent_progress_to_annual_stretch_growth",
            (100 * gain // (typical * 1.8).astype(np.int32)).astype(np.int32),
        ),
        pl.Series("mid_on_grade_level_scale_score", mid.astype(np.int32)),
    )


def _with_measure(df: pl.DataFrame, subject: str, score: np.ndarray) -> tuple[pl.DataFrame, Sequence[str]]:
    """The Lexile (ELA) or Quantile (math) measure and range; returns the subject's domains too."""
    if subject == "ela":
        lexile = np.rint((score - 420) * 4.2 / 5).astype(np.int64) * 5
        df = df.with_columns(
            _measure(lexile, "L", "BR").alias("lexile_measure"),
            pl.concat_str(_measure(lexile - 100, "L", "BR"), _measure(lexile + 50, "L", "BR"), separator="-").alias(
                "lexile_range"
            ),
        )
        return df, ELA_DOMAINS
    quantile = np.rint((score - 390) * 5 / 5).astype(np.int64) * 5
    df = df.with_columns(
        _measure(quantile, "Q", "EM").alias("quantile_measure"),
        pl.concat_str(_measure(quantile - 50, "Q", "EM"), _measure(quantile + 50, "Q", "EM"), separator="-").alias(
            "quantile_range"
        ),
    )
    return df, MATH_DOMAINS


def _with_domains(
    rng: np.random.Generator,
    df: pl.DataFrame,
    domains: Sequence[str],
    score: np.ndarray,
    mid: np.ndarray,
    g: np.ndarray,
) -> pl.DataFrame:
    """Scale score, placement and relative placement per domain, near the overall score."""
    foundational = {"phonological_awareness", "phonics", "high_frequency_words"}
    for d in domains:
        d_score = np.clip(np.rint(score + rng.normal(0, 15, len(score))), 100, 800).astype(np.int32)
        d_rel = _relative_index(d_score - mid)
        # Older readers are no longer tested on foundational skills: vendor blanks the score.
        surpassed = (g >= 3) & (d in foundational)
        df = df.with_columns(
            pl.when(~pl.Series(surpassed)).then(pl.Series(d_score)).alias(f"{d}_scale_score"),
            pl.when(pl.Series(surpassed))
            .then(pl.lit("Surpassed Level"))
            .otherwise(_placement(pl.col("_g"), pl.Series(d_rel)))
            .alias(f"{d}_placement"),
            pl.when(pl.Series(surpassed))
            .then(pl.lit(0))
            .otherwise(pl.Series(d_rel))
            .replace_strict(dict(enumerate(RELATIVE_PLACEMENTS)), return_dtype=pl.Utf8)
            .alias(f"{d}_relative_placement"),
        )
    return df


def _relative_index(diff: np.ndarray) -> np.ndarray:
    """Index into RELATIVE_PLACEMENTS from the distance to the mid-on-grade score."""
    return np.select([diff >= 0, diff >= -20, diff >= -50, diff >= -80], [0, 1, 2, 3], default=4)


def _placement(grade: pl.Expr, rel: pl.Expr) -> pl.Expr:
    """Vendor placement text: 'Mid 5', 'Early 5' on grade, 'Grade 3' below it ('K' for 0)."""

    def g_text(e: pl.Expr) -> pl.Expr:
        return pl.when(e <= 0).then(pl.lit("K")).otherwise(e.cast(pl.Utf8))

    below = pl.max_horizontal(grade - (rel - 1), pl.lit(0))
    return (
        pl.when(rel == 0)
        .then(pl.concat_str(pl.lit("Mid "), g_text(grade)))
        .when(rel == 1)
        .then(pl.concat_str(pl.lit("Early "), g_text(grade)))
        .otherwise(pl.concat_str(pl.lit("Grade "), g_text(below)))
    )
