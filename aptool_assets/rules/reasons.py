"""The ranking's ``reasons`` column: a short plain-words explanation per student, never a name.

Built only from ``REASON_COLUMNS`` (tier, rate, days, risk, placements, truancy), so no identifying
column can leak into it whatever the input frame holds.
"""

from __future__ import annotations

import polars as pl

REASON_COLUMNS: tuple[str, ...] = (
    "is_enrolled",
    "left_on",
    "as_of_date",
    "attendance_tier",
    "absence_rate",
    "days_absent",
    "days_enrolled",
    "overall_risk",
    "ela_relative_placement",
    "math_relative_placement",
    "truancy_count",
    "truancy_letter_level",
)
"""The only columns ``reasons_expr`` reads: no name or other identifying column ever can leak."""


def clean_rate(col: str = "absence_rate") -> pl.Expr:
    """The rate as Float64 with NaN read as null (no enrolled days)."""
    return pl.col(col).cast(pl.Float64).fill_nan(None)


TIER_WORDS: dict[str, str] = {
    "severe_chronic": "severe chronic absence",
    "moderate_chronic": "moderate chronic absence",
    "at_risk": "at-risk attendance",
    "satisfactory": "satisfactory attendance",
}
SUBJECT_WORDS: dict[str, str] = {"ela": "reading", "math": "math"}
ON_GRADE_PLACEMENTS: tuple[str, ...] = ("Mid or Above Grade Level", "Early On Grade Level")
BELOW_GRADE_WORDS: dict[str, str] = {
    "1 Grade Level Below": "1 grade level below",
    "2 Grade Levels Below": "2 grade levels below",
    "3 or More Grade Levels Below": "3+ grade levels below",
}
_PERCENT_EPSILON = 1e-9
"""0.29 * 100 is 28.999999999999996 in floating point; a rate p/q (q ≤ a few hundred days) is
never within 1e-9 of a whole percent without being on it, so the nudge only undoes rounding."""


def _plural(count: pl.Expr, word: str) -> pl.Expr:
    return pl.when(count == 1).then(pl.lit(word)).otherwise(pl.lit(word + "s"))


def _attendance_reason() -> pl.Expr:
    """ "severe chronic absence 23% (14 of 60 days)", or "... , no enrolled days yet" for a null rate.

    The percent is truncated, not rounded, so the shown number never crosses a tier bound
    (9.9% is at_risk and shows 9%, not 10%).
    """
    tier = pl.col("attendance_tier").cast(pl.Utf8)
    words = tier.replace_strict(TIER_WORDS, default=tier.str.replace_all("_", " "), return_dtype=pl.Utf8)
    words = words.fill_null(pl.lit("unknown attendance tier"))
    rate = clean_rate()
    percent = (rate * 100 + _PERCENT_EPSILON).floor().cast(pl.Int64).cast(pl.Utf8)
    absent = pl.col("days_absent").cast(pl.Int64)
    enrolled = pl.col("days_enrolled").cast(pl.Int64)
    days = pl.concat_str(
        [
            pl.lit(" ("),
            absent.cast(pl.Utf8),
            pl.lit(" of "),
            enrolled.cast(pl.Utf8),
            pl.lit(" "),
            _plural(enrolled, "day"),
            pl.lit(")"),
        ]
    )  # null (and so left out) when either count is null
    with_rate = pl.concat_str([words, pl.lit(" "), percent, pl.lit("%"), days.fill_null("")])
    return pl.when(rate.is_null()).then(words + pl.lit(", no enrolled days yet")).otherwise(with_rate)


def _subject_below(subject: str) -> pl.Expr:
    """ "reading 2 grade levels below" for a below-grade placement, null when on grade or missing.

    An unrecognized placement is quoted as delivered (lower-cased) rather than dropped.
    """
    placement = pl.col(f"{subject}_relative_placement").cast(pl.Utf8)
    words = (
        pl.when(placement.is_in(ON_GRADE_PLACEMENTS) | placement.is_null())
        .then(pl.lit(None, dtype=pl.Utf8))
        .otherwise(
            placement.replace_strict(BELOW_GRADE_WORDS, default=placement.str.to_lowercase(), return_dtype=pl.Utf8)
        )
    )
    return pl.lit(SUBJECT_WORDS[subject] + " ") + words


def _academic_reason() -> pl.Expr:
    """Below-grade subjects, a missing subject when the other has a result, else "on grade level".

    - no result in either subject: "no i-Ready results" (or "academic risk high" when a risk
      level arrives without placements);
    - something below grade: "reading 2 grade levels below; math 1 grade level below",
      on/above-grade subjects left out, "no math result" added when math is missing;
    - nothing below grade: "reading and math on grade level", or "reading on grade level;
      no math result".
    """
    ela = pl.col("ela_relative_placement")
    math_ = pl.col("math_relative_placement")
    ela_below, math_below = _subject_below("ela"), _subject_below("math")
    missing = (
        pl.when(ela.is_null()).then(pl.lit("no reading result")).when(math_.is_null()).then(pl.lit("no math result"))
    )
    risk = pl.col("overall_risk").cast(pl.Utf8)
    return (
        pl.when(ela.is_null() & math_.is_null())
        .then(
            pl.when(risk.is_in(["HIGH", "MEDIUM", "LOW"]))
            .then(pl.lit("academic risk ") + risk.str.to_lowercase())
            .otherwise(pl.lit("no i-Ready results"))
        )
        .when(ela_below.is_not_null() | math_below.is_not_null())
        .then(pl.concat_str([ela_below, math_below, missing], separator="; ", ignore_nulls=True))
        .when(ela.is_not_null() & math_.is_not_null())
        .then(pl.lit("reading and math on grade level"))
        .when(ela.is_not_null())
        .then(pl.lit("reading on grade level; no math result"))
        .otherwise(pl.lit("math on grade level; no reading result"))
    )


def _truancy_reason() -> pl.Expr:
    """ "truancy letter 2 (7 days)" once a letter is due; nothing below letter 1."""
    level = pl.col("truancy_letter_level").cast(pl.Int64)
    count = pl.col("truancy_count").cast(pl.Int64)
    days = pl.concat_str([pl.lit(" ("), count.cast(pl.Utf8), pl.lit(" "), _plural(count, "day"), pl.lit(")")])
    return (
        pl.when(level >= 1)
        .then(pl.concat_str([pl.lit("truancy letter "), level.cast(pl.Utf8), days.fill_null("")]))
        .otherwise(pl.lit(None, dtype=pl.Utf8))
    )


def _enrollment_reason() -> pl.Expr:
    """ "left on 2025-10-03" for a student no longer enrolled at the school (or "not enrolled on <as-of
    date>" when no leave date is known); nothing for an enrolled student."""

    def day(col: str) -> pl.Expr:
        return pl.col(col).cast(pl.Date).dt.to_string("%Y-%m-%d")

    left = pl.concat_str([pl.lit("left on "), day("left_on")])
    if_unknown = pl.concat_str([pl.lit("not enrolled on "), day("as_of_date")])
    return (
        pl.when(pl.col("is_enrolled").fill_null(True))
        .then(pl.lit(None, dtype=pl.Utf8))
        .otherwise(pl.coalesce(left, if_unknown, pl.lit("not enrolled")))
    )


def reasons_expr() -> pl.Expr:
    """A short plain-words explanation: enrollment; attendance; academics; truancy (parts joined by "; ").

    e.g. "severe chronic absence 23% (14 of 60 days); reading 2 grade levels below; math 1
    grade level below; truancy letter 2 (7 days)", "satisfactory attendance 1% (1 of 58
    days); no i-Ready results", or "left on 2025-10-03; severe chronic absence 40% (4 of 10 days);
    ...". Reads only ``REASON_COLUMNS``: never a name.
    """
    return pl.concat_str(
        [_enrollment_reason(), _attendance_reason(), _academic_reason(), _truancy_reason()],
        separator="; ",
        ignore_nulls=True,
    ).alias("reasons")
