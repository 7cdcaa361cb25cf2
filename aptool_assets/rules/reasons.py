"""The ranking's ``reasons`` column: a short plain-words explanation per student, never a name.

Built only from ``REASON_COLUMNS`` (tier, rate, days, risk, placements, truancy, i-Ready growth), so no
identifying column can leak into it whatever the input frame holds. The growth part
(:func:`growth_reason_expr`, fed by :func:`growth_columns`) is separate so the ranking can add it where it
wants: ``pl.concat_str([reasons_expr(), growth_reason_expr()], separator="; ", ignore_nulls=True)``.
"""

from __future__ import annotations

import polars as pl

from aptool_assets.rules.academic import DEFAULT_WINDOWS, AssessmentWindows, assessment_window_expr
from aptool_assets.vocabulary import CHRONIC_RATE, SUBJECTS

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
    "ela_pct_typical_growth",
    "ela_growth_status",
    "ela_growth_window",
    "math_pct_typical_growth",
    "math_growth_status",
    "math_growth_window",
    "projected_rate",
    "projected_chronic",
)
"""The only columns ``reasons_expr`` and ``growth_reason_expr`` read: no name or other identifying column ever
can leak."""


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


# --- i-Ready growth (contract §4.6), for the ranking to add --------------------------------------------

GROWTH_WINDOW_WORDS: dict[str, str] = {"BOY": "by fall", "MOY": "by mid-year", "EOY": "by spring"}
"""When the latest diagnostic was taken, by its assessment window (contract §4.3)."""

GROWTH_REASON_STATUS = "below_typical"
"""The only growth status worth a reason: on-track students and those without progress data get none."""


def growth_window_phrase(window: str | pl.Expr) -> pl.Expr:
    """ "by fall" / "by mid-year" / "by spring" for a BOY / MOY / EOY column; null for anything else."""
    col = pl.col(window) if isinstance(window, str) else window
    return col.cast(pl.Utf8).replace_strict(GROWTH_WINDOW_WORDS, default=None, return_dtype=pl.Utf8)


def _subject_growth(subject: str) -> pl.Expr:
    """ "reading: 12% of typical growth by mid-year" when the subject is below typical growth, else null.

    The percent is truncated towards zero like the attendance percent (12.9 shows 12, never rounding up
    towards the share the student has not reached); without a known window the phrase is left out.
    """
    pct = pl.col(f"{subject}_pct_typical_growth").cast(pl.Float64).fill_nan(None)
    below = pl.col(f"{subject}_growth_status").cast(pl.Utf8) == GROWTH_REASON_STATUS
    text = pl.concat_str(
        [
            pl.lit(SUBJECT_WORDS[subject] + ": "),
            pct.cast(pl.Int64).cast(pl.Utf8),  # float → int truncates towards zero
            pl.lit("% of typical growth"),
            (pl.lit(" ") + growth_window_phrase(f"{subject}_growth_window")).fill_null(""),
        ]
    )
    return pl.when(below.fill_null(False)).then(text).otherwise(pl.lit(None, dtype=pl.Utf8))


def growth_reason_expr() -> pl.Expr:
    """The growth part of the reasons: each subject below typical growth, joined by "; ", e.g. "reading: 12% of
    typical growth by mid-year; math: -40% of typical growth by spring"; null when nothing is worth saying
    (on track, no progress data, or no growth row). Reads only the ``<subject>_pct_typical_growth``,
    ``<subject>_growth_status`` and ``<subject>_growth_window`` columns of :func:`growth_columns`.
    """
    parts = [_subject_growth(s) for s in SUBJECTS]
    joined = pl.concat_str(parts, separator="; ", ignore_nulls=True)  # "" when every part is null
    said = pl.any_horizontal(part.is_not_null() for part in parts)
    return pl.when(said).then(joined).otherwise(pl.lit(None, dtype=pl.Utf8)).alias("growth_reason")


GROWTH_REASON_SCHEMA: dict[str, pl.DataType] = {
    "school_year": pl.Int32(),
    "student_id": pl.Int64(),
    **{
        f"{subject}_{name}": dtype
        for subject in SUBJECTS
        for name, dtype in (
            ("pct_typical_growth", pl.Float64()),
            ("growth_status", pl.Utf8()),
            ("growth_window", pl.Utf8()),
        )
    },
}
"""What :func:`growth_columns` returns: one row per (school_year, student_id)."""


def growth_columns(growth: pl.DataFrame, windows: AssessmentWindows = DEFAULT_WINDOWS) -> pl.DataFrame:
    """``aptool.iready_growth`` (one row per student and subject) turned into one row per (school_year,
    student_id) with ``<subject>_pct_typical_growth``, ``<subject>_growth_status`` and ``<subject>_growth_window``
    (the assessment window of the latest completion date) for ela and math; a subject without a growth row is
    null. Join it to the ranking's frame on (school_year, student_id), left, before ``growth_reason_expr``.
    Raises ValueError (naming IDs) when the growth table repeats its key.
    """
    rows = growth.select(
        pl.col("school_year").cast(pl.Int32),
        pl.col("student_id").cast(pl.Int64),
        pl.col("subject").cast(pl.Utf8),
        pl.col("pct_typical_growth").cast(pl.Float64),
        pl.col("growth_status").cast(pl.Utf8),
        assessment_window_expr(windows, date_col="latest_completion_date", year_col="school_year").alias(
            "growth_window"
        ),
    ).drop_nulls(["school_year", "student_id"])
    repeated = rows.filter(pl.struct("school_year", "student_id", "subject").is_duplicated())
    if repeated.height:
        ids = repeated.get_column("student_id").unique().sort().head(5).to_list()
        raise ValueError(f"growth repeats (school_year, student_id, subject) for student IDs {ids}")
    out = rows.select("school_year", "student_id").unique()
    for subject in SUBJECTS:
        part = rows.filter(pl.col("subject") == subject).select(
            "school_year",
            "student_id",
            *(pl.col(c).alias(f"{subject}_{c}") for c in ("pct_typical_growth", "growth_status", "growth_window")),
        )
        out = out.join(part, on=["school_year", "student_id"], how="left")
    return out.select(pl.col(n).cast(t) for n, t in GROWTH_REASON_SCHEMA.items()).sort("school_year", "student_id")


PROJECTION_REASON_COLUMNS: tuple[str, ...] = ("projected_rate", "projected_chronic")
"""What the projection part reads from ``aptool.chronic_absence_projection`` (also in ``REASON_COLUMNS``)."""


def projection_reason_expr() -> pl.Expr:
    """ "on track to be chronically absent by June (projected 12%)" for a student below 10% today whose
    projection ends the year chronic; null otherwise. The percent is truncated like the attendance percent,
    so it never shows 10% for a projection under it."""
    below_today = clean_rate().fill_null(0.0) < float(CHRONIC_RATE)
    heading = pl.col("projected_chronic").fill_null(False) & below_today
    percent = (pl.col("projected_rate").cast(pl.Float64) * 100 + _PERCENT_EPSILON).floor().cast(pl.Int64)
    text = pl.concat_str(
        [pl.lit("on track to be chronically absent by June (projected "), percent.cast(pl.Utf8), pl.lit("%)")]
    )
    return pl.when(heading).then(text).otherwise(pl.lit(None, dtype=pl.Utf8)).alias("projection_reason")


def outlook_reasons_expr() -> pl.Expr:
    """``reasons_expr`` followed by where the student is heading: the projection part, then the growth part."""
    return pl.concat_str(
        [reasons_expr(), projection_reason_expr(), growth_reason_expr()], separator="; ", ignore_nulls=True
    ).alias("reasons")
