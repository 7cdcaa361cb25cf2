"""The platform's shared vocabulary: school years, subjects, tiers, risk levels and the thresholds
the rules use (contract §3 and §4), written down once.

Plain values and pure functions only (no Dagster, no I/O), so every layer may import it. A rule
that needs a threshold reads it from here, so changing a constant here changes the rule.
"""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import polars as pl

# --- school years -------------------------------------------------------------------------------

YEAR_START_MONTH = 7
"""A school year runs July 1 – June 30 and is named by its start year (2025 = 2025-26)."""

UTC_TS = pl.Datetime("us", "UTC")
"""Every timestamptz column: microseconds, UTC."""


def school_year_of(day: dt.date) -> int:
    """The school year (as its start year) that contains ``day``."""
    return day.year if day.month >= YEAR_START_MONTH else day.year - 1


def school_year_expr(date_col: str | pl.Expr) -> pl.Expr:
    """:func:`school_year_of` as a vectorised expression over a date (or datetime) column."""
    day = pl.col(date_col) if isinstance(date_col, str) else date_col
    return (day.dt.year() - (day.dt.month() < YEAR_START_MONTH).cast(pl.Int32)).cast(pl.Int32)


def school_year_bounds(school_year: int) -> tuple[dt.date, dt.date]:
    """First and last day of a school year (2025 → 2025-07-01 .. 2026-06-30)."""
    return dt.date(school_year, YEAR_START_MONTH, 1), dt.date(school_year + 1, YEAR_START_MONTH - 1, 30)


def clip_to_school_year(school_year: int, day: dt.date) -> dt.date:
    """``day`` moved into ``school_year``: a past year counts to its end, a future one from its start."""
    first, last = school_year_bounds(school_year)
    return min(max(day, first), last)


# --- i-Ready ------------------------------------------------------------------------------------

SUBJECTS: tuple[str, ...] = ("ela", "math")
ASSESSMENT_WINDOWS: tuple[str, ...] = ("BOY", "MOY", "EOY")

# --- attendance (contract §4.1) -----------------------------------------------------------------

TIERS: tuple[str, ...] = ("satisfactory", "at_risk", "moderate_chronic", "severe_chronic")
"""Attendance tiers, best first."""

TIER_ORDER: dict[str, int] = {tier: level for level, tier in enumerate(TIERS)}
"""Urgency of a tier: severe_chronic 3 … satisfactory 0 (the ranking's first key after enrollment)."""

CHRONIC_RATE = Fraction(1, 10)
"""Chronically absent at an absence rate of 10% or more (exactly 10% counts). A fraction, so the
rule compares integers (``days_absent * 10 >= days_enrolled``) and never trips over rounding."""

TIER_LOWER_BOUNDS: tuple[tuple[str, float], ...] = (
    ("severe_chronic", 0.20),
    ("moderate_chronic", float(CHRONIC_RATE)),
    ("at_risk", 0.05),
)
"""Inclusive lower bound of each tier's absence rate, worst first; below them all: satisfactory."""

CHRONIC_MIN_DAYS_ENROLLED = 31
"""Chronic absence needs at least this many days enrolled (CDE's definition)."""

TRUANCY_LETTER_THRESHOLDS: tuple[int, ...] = (3, 6, 9)
"""Truancy counts at which letter 1, 2 and 3 are due (Ed. Code 48260 ladder)."""

# --- academic risk (contract §4.2) --------------------------------------------------------------

UNKNOWN_RISK = "UNKNOWN"
RISK_ORDER: dict[str, int] = {"HIGH": 3, "MEDIUM": 2, "LOW": 1, UNKNOWN_RISK: 0}
"""Urgency of an overall risk level; HIGH is the worst, UNKNOWN (no results) the least known."""

RISK_LEVELS: tuple[str, ...] = tuple(level for level in RISK_ORDER if level != UNKNOWN_RISK)
"""The levels a subject can have (worst first); ``overall_risk`` may also be UNKNOWN."""

# --- student groups and the Chronic Absenteeism Indicator (contract §3, §4.5) ----------------------

RACE_ETHNICITY_GROUPS: tuple[str, ...] = ("AA", "AI", "AS", "FI", "HI", "PI", "WH", "MR")
"""The Dashboard's race/ethnicity groups (a student is in exactly one of them, or in ``NOT_REPORTED``)."""

NOT_REPORTED = "NR"
"""Race/ethnicity not reported: a platform group (the complement the suppression rule protects), not CDE's."""

PROGRAM_GROUPS: tuple[str, ...] = ("EL", "SED", "SWD", "FOS", "HOM")
"""Groups a student may belong to any number of, besides the race/ethnicity group."""

STUDENT_GROUPS: tuple[str, ...] = ("ALL", *RACE_ETHNICITY_GROUPS, NOT_REPORTED, *PROGRAM_GROUPS)
"""Every ``student_group`` of ``aptool.chronic_absenteeism_indicator``, in the order rows are listed."""

DEFAULT_FOSTER_PROGRAM_CODE = "190"
"""``APTOOL_FOSTER_PROGRAM_CODE``'s default: the Aeries program code that marks foster youth."""

INDICATOR_GRADES: tuple[int, int] = (-1, 8)
"""Grades the Dashboard's chronic absenteeism indicator counts: TK (-1, reported with K) through 8."""

SUPPRESSION_MIN_COUNT = 11
"""A group with fewer eligible students publishes no chronic count, rate or level (CDE's n < 11 rule)."""

N_SIZE = 30
"""The Dashboard colours a group from this many eligible students (``n_size_met``)."""

STATUS_LEVEL_CUTS: tuple[tuple[str, int], ...] = (("very_low", 25), ("low", 50), ("medium", 100), ("high", 200))
"""Inclusive upper bound of each status level, in tenths of a percentage point (2.5% = 25); above: very_high.
Tenths, so a published one-decimal rate is compared exactly."""

STATUS_LEVEL_TOP = "very_high"

CHANGE_LEVEL_CUTS: tuple[tuple[str, int], ...] = (
    ("declined_significantly", -30),
    ("declined", -5),
    ("maintained", 4),
    ("increased", 29),
)
"""Inclusive upper bound of each change level, in tenths of a percentage point; above: increased_significantly."""

CHANGE_LEVEL_TOP = "increased_significantly"
