"""The published i-Ready table: canonical columns, vendor header aliases and the pandera schema.

One schema serves both the parser (as the gate before anything is published) and the Dagster
asset check, so "valid" means the same thing in both places.
"""

from __future__ import annotations

import copy
import re

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from aptool_assets.rules.academic import RELATIVE_PLACEMENTS
from aptool_assets.tables.iready import (
    COLUMN_NAMES,
    DIAGNOSTIC_RESULTS,
    DOMAINS,
    KEY_COLUMNS,
    PUBLISHED_COLUMNS,
)
from aptool_assets.vocabulary import ASSESSMENT_WINDOWS, SUBJECTS

NOT_ASSESSED = "Not Assessed"
DOMAIN_RELATIVE_PLACEMENTS: tuple[str, ...] = (*RELATIVE_PLACEMENTS, NOT_ASSESSED)

SCALE_SCORE_MIN, SCALE_SCORE_MAX = 100, 800
PERCENTILE_MIN, PERCENTILE_MAX = 1, 99
GRADE_MIN, GRADE_MAX = -1, 12  # TK (transitional kindergarten) is -1, as in Aeries; K is 0
VENDOR_ID_PATTERN = r"^[0-9]{1,20}$"
"""A vendor "Student ID" the platform keeps: digits (every Aeries identifier is numeric; a name shifted into
the column never is), leading zeros as delivered."""
# Sanity bounds only: i-Ready exports start in the 2010s; anything outside is a broken cell.
ACADEMIC_YEAR_MIN, ACADEMIC_YEAR_MAX = 2000, 2100

# Published columns that come from a file cell (the rest are derived: the mapped Aeries ID, subject, window,
# lineage).
CELL_COLUMNS: tuple[str, ...] = tuple(
    c for c in COLUMN_NAMES if c not in ("student_id", "subject", "assessment_window", "source_file", "loaded_at")
)

REQUIRED_FIELDS: tuple[str, ...] = (
    "vendor_student_id",
    "academic_year",
    "completion_date",
    "overall_scale_score",
    "overall_relative_placement",
)
"""Fields without which a file cannot be loaded at all (reference §6, contract key)."""


# --- header aliases -------------------------------------------------------------------------


def header_key(header: str) -> str:
    """Normalised header: trimmed, lowercase, ``%`` → percent, other non-alphanumerics → ``_``."""
    text = header.replace("\ufeff", "").strip().lower().replace("%", " percent ")
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


_DOMAIN_HEADERS: dict[str, tuple[str, ...]] = {
    "phonological_awareness": ("Phonological Awareness",),
    "phonics": ("Phonics",),
    "high_frequency_words": ("High-Frequency Words",),
    "vocabulary": ("Vocabulary",),
    "comprehension_overall": ("Comprehension: Overall", "Reading Comprehension: Overall"),
    "comprehension_literature": ("Comprehension: Literature", "Reading Comprehension: Literature"),
    "comprehension_informational_text": (
        "Comprehension: Informational Text",
        "Reading Comprehension: Informational Text",
    ),
    "number_and_operations": ("Number and Operations",),
    "algebra_and_algebraic_thinking": ("Algebra and Algebraic Thinking",),
    "measurement_and_data": ("Measurement and Data",),
    "geometry": ("Geometry",),
}

# canonical field → vendor headers (newest first). Order within a tuple is the coalesce order.
_PUBLISHED_HEADERS: dict[str, tuple[str, ...]] = {
    "vendor_student_id": ("Student ID",),
    "academic_year": ("Academic Year",),
    "school_name": ("School", "School Name"),
    "student_grade": ("Student Grade", "Grade"),
    "start_date": ("Start Date",),
    "completion_date": ("Completion Date",),
    "is_baseline": (
        "Baseline Assessment (Y/N)",
        "Baseline Diagnostic (Y/N)",
        "Diagnostic used to establish Growth Measures (Y/N)",
    ),
    "is_most_recent": (
        "Most Recent Assessment YTD (Y/N)",
        "Most Recent Diagnostic YTD (Y/N)",
        "Most Recent Diagnostic (Y/N)",
    ),
    "duration_min": ("Duration (min)", "Time on Task (minutes)"),
    "rush_flag": ("Rush Flag",),
    "overall_scale_score": ("Overall Scale Score",),
    "overall_placement": ("Overall Placement",),
    "overall_relative_placement": ("Overall Relative Placement",),
    "percentile": ("Percentile",),
    "grouping": ("Grouping",),
    "lexile_measure": ("Lexile Measure",),
    "quantile_measure": ("Quantile Measure",),
    "diagnostic_gain": ("Assessment Gain", "Diagnostic Gain"),
    "annual_typical_growth_measure": ("Annual Typical Growth Measure",),
    "annual_stretch_growth_measure": ("Annual Stretch Growth Measure",),
    "percent_progress_to_annual_typical_growth": ("Percent Progress to Annual Typical Growth (%)",),
    "percent_progress_to_annual_stretch_growth": ("Percent Progress to Annual Stretch Growth (%)",),
    "mid_on_grade_level_scale_score": ("Mid On Grade Level Scale Score",),
}
for _d, _names in _DOMAIN_HEADERS.items():
    _PUBLISHED_HEADERS[f"{_d}_scale_score"] = tuple(f"{n} Scale Score" for n in _names)
    _PUBLISHED_HEADERS[f"{_d}_placement"] = tuple(f"{n} Placement" for n in _names)
    _PUBLISHED_HEADERS[f"{_d}_relative_placement"] = tuple(f"{n} Relative Placement" for n in _names)

# Personal data: recognised so they are not reported as unknown, never carried anywhere
# (the SIS is the source of names and demographics).
_PII_HEADERS: dict[str, tuple[str, ...]] = {
    "last_name": ("Last Name",),
    "first_name": ("First Name",),
    "user_name": ("User Name",),
    "sex": ("Sex", "Gender"),
    "hispanic_or_latino": ("Hispanic or Latino",),
    "race": ("Race",),
    "english_language_learner": ("English Language Learner",),
    "special_education": ("Special Education",),
    "economically_disadvantaged": ("Economically Disadvantaged",),
    "migrant": ("Migrant",),
    "classes": ("Class(es)",),
    "class_teachers": ("Class Teacher(s)",),
    "report_groups": ("Report Group(s)",),
    "student_state_id": ("Student State ID",),
    "plan_504": ("504 Plan",),
    "english_language_acquisition": ("English Language Acquisition",),
    "foster_youth": ("Foster Youth",),
    "gifted_and_talented": ("Gifted and Talented (GATE)",),
    "homeless_youth": ("Homeless Youth",),
    "student_with_disabilities": ("Student with Disabilities",),
    "transitional_kindergarten": ("Transitional Kindergarten",),
}

# Known vendor columns the table does not publish (kept out of unknown_columns).
_OTHER_HEADERS: dict[str, tuple[str, ...]] = {
    "enrolled": ("Enrolled",),
    "district_state_id": ("District State ID",),
    "account_state_id": ("Account State ID",),
    "school_state_id": ("School State ID",),
    "norming_window": ("Norming Window",),
    "read_aloud": ("Read Aloud",),
    "tactile_graphics": ("Tactile Graphics",),
    "lexile_range": ("Lexile Range",),
    "quantile_range": ("Quantile Range",),
    "assessment_language": ("Assessment Language", "Diagnostic Language"),
    "reading_difficulty_indicator": ("Reading Difficulty Indicator (Y/N)",),
    "proficiency_no_additional_growth": ("Proficiency if Student Shows No Additional Growth",),
    "projection_typical_growth": ("Projection if Student Achieves Typical Growth",),
    "projection_stretch_growth": ("Projection if Student Achieves Stretch Growth",),
}

PII_FIELDS: frozenset[str] = frozenset(_PII_HEADERS)

VENDOR_HEADERS: dict[str, tuple[str, ...]] = {**_PUBLISHED_HEADERS, **_PII_HEADERS, **_OTHER_HEADERS}
"""Canonical field → the vendor header spellings that carry it (newest first)."""

HEADER_ALIASES: dict[str, str] = {header_key(h): field for field, headers in VENDOR_HEADERS.items() for h in headers}
"""Normalised header key (see :func:`header_key`) → canonical field."""

assert len(HEADER_ALIASES) == sum(len(h) for h in VENDOR_HEADERS.values()), "alias collision"
assert set(_PUBLISHED_HEADERS) == set(CELL_COLUMNS), "every cell column needs a header"


def canonical_field(header: str) -> str | None:
    """The canonical field a vendor header maps to, or None when unknown."""
    return HEADER_ALIASES.get(header_key(header))


def required_header(field: str) -> str:
    """The current vendor spelling of a field, for messages."""
    return VENDOR_HEADERS[field][0]


# --- pandera schema -------------------------------------------------------------------------


DOMAIN_SCALE_SCORE_COLUMNS: tuple[str, ...] = tuple(f"{d}_scale_score" for d in DOMAINS)
DOMAIN_RELATIVE_PLACEMENT_COLUMNS: tuple[str, ...] = tuple(f"{d}_relative_placement" for d in DOMAINS)


def _column(name: str, dtype: pl.DataType) -> pa.Column:
    nullable = name not in (*REQUIRED_FIELDS, "subject", "assessment_window", "source_file", "loaded_at")
    checks = {
        "overall_scale_score": pa.Check.in_range(SCALE_SCORE_MIN, SCALE_SCORE_MAX),
        "overall_relative_placement": pa.Check.isin(RELATIVE_PLACEMENTS),
        "percentile": pa.Check.in_range(PERCENTILE_MIN, PERCENTILE_MAX),
        "student_grade": pa.Check.in_range(GRADE_MIN, GRADE_MAX),
        "academic_year": pa.Check.in_range(ACADEMIC_YEAR_MIN, ACADEMIC_YEAR_MAX),
        "subject": pa.Check.isin(SUBJECTS),
        "assessment_window": pa.Check.isin(ASSESSMENT_WINDOWS),
        "student_id": pa.Check.ge(0),
        "vendor_student_id": pa.Check.str_matches(VENDOR_ID_PATTERN),
        "duration_min": pa.Check.ge(0),
    }
    return pa.Column(dtype, checks=checks.get(name), nullable=nullable)


def _all_columns(name: str, columns: tuple[str, ...], rule) -> pa.Check:
    """One check over a group of like columns (the 11 domains): a row fails when any cell
    breaks ``rule``; null cells pass. Grouped because per-column checks cost a pass each."""
    return pa.Check(lambda data: data.lazyframe.select(rule(pl.col(c)).alias(c) for c in columns), name=name)


DIAGNOSTIC_RESULTS_SCHEMA = pa.DataFrameSchema(
    {name: _column(name, dtype) for name, dtype in PUBLISHED_COLUMNS.items()},
    checks=[
        _all_columns(
            f"domain_scale_scores_in_range({SCALE_SCORE_MIN}, {SCALE_SCORE_MAX})",
            DOMAIN_SCALE_SCORE_COLUMNS,
            lambda c: c.is_between(SCALE_SCORE_MIN, SCALE_SCORE_MAX),
        ),
        _all_columns(
            "domain_relative_placements_isin(vendor values, Not Assessed)",
            DOMAIN_RELATIVE_PLACEMENT_COLUMNS,
            lambda c: c.is_in(DOMAIN_RELATIVE_PLACEMENTS),
        ),
    ],
    unique=list(KEY_COLUMNS),
    strict=True,
    ordered=True,
    name=DIAGNOSTIC_RESULTS.qualified,
)
"""The contract for ``aptool.iready_diagnostic_results``; shared by the parser and the asset check."""

_ROW_GATE_SCHEMA = copy.deepcopy(DIAGNOSTIC_RESULTS_SCHEMA)
_ROW_GATE_SCHEMA.unique = None
"""The same contract less the key uniqueness, for the parser's gate: the parser has already set every
key repeat aside (collapsed or rejected as a conflict) before it runs, so the check would only repeat
that work (about a tenth of a parse); ``schema_valid`` on the published table keeps it."""


def schema_failure_cases(df: pl.DataFrame, *, key_unique: bool = True) -> pl.DataFrame | None:
    """Pandera's lazy failure cases for ``df``, or None when it is valid (``key_unique=False``: all but
    the key's uniqueness, for a frame that is unique by construction)."""
    try:
        (DIAGNOSTIC_RESULTS_SCHEMA if key_unique else _ROW_GATE_SCHEMA).validate(df, lazy=True)
    except SchemaErrors as exc:
        return exc.failure_cases
    except SchemaError as exc:  # non-lazy paths (e.g. wrong object type) still raise singly
        return pl.DataFrame(
            {
                "failure_case": [None],
                "schema_context": ["DataFrameSchema"],
                "column": [None],
                "check": [str(exc)],
                "check_number": [None],
                "index": [None],
            },
            schema={
                "failure_case": pl.Utf8,
                "schema_context": pl.Utf8,
                "column": pl.Utf8,
                "check": pl.Utf8,
                "check_number": pl.Int32,
                "index": pl.Int32,
            },
        )
    return None


def describe_failures(failure_cases: pl.DataFrame, max_examples: int = 3) -> list[str]:
    """One readable line per (column, check) with a row count and a few failing values.

    The table holds no names or demographics, so example values are safe to show; callers
    that must not echo cell values at all pass ``max_examples=0``.
    """
    problems: list[str] = []
    grouped = (
        failure_cases.with_columns(pl.col("failure_case").cast(pl.Utf8))
        .group_by(["schema_context", "column", "check"], maintain_order=True)
        .agg(
            pl.col("index").drop_nulls().n_unique().alias("rows"),
            pl.col("failure_case").drop_nulls().unique(maintain_order=True).head(max_examples).alias("examples"),
        )
    )
    for ctx, column, check, rows, examples in grouped.iter_rows():
        shown = f" (e.g. {', '.join(examples)})" if examples else ""
        if check == "multiple_fields_uniqueness":
            problems.append(f"{rows} rows share a key ({', '.join(KEY_COLUMNS)})")
        elif rows and ctx == "DataFrameSchema":  # a row check over several columns: cases are whole rows
            problems.append(f"{check} failed on {rows} rows")
        elif rows:
            problems.append(f"{column}: {check} failed on {rows} rows{shown}")
        else:  # table-level: missing or extra column, wrong dtype, ...
            problems.append(f"{column or 'table'}: {check}{shown}")
    return problems


def validate_results(df: pl.DataFrame) -> list[str]:
    """Human-readable problems of ``df`` against the published schema; empty when valid."""
    failures = schema_failure_cases(df)
    return [] if failures is None else describe_failures(failures)
