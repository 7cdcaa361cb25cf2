"""Intervention ranking (contract §4.4): who an assistant principal should see first, per school.

Pure functions over polars frames: no Dagster, no I/O, so every boundary can be tested with
small hand-built frames and the assets stay thin.

The contract fixes the *order*: enrolled at the school on the as-of date first (a student who left
cannot be reached there), then attendance tier, then overall academic risk, then absence rate
(higher first), then student_id (ascending). ``priority_score`` is a single number that is
monotone in that order, so a reader can sort or threshold on it without knowing the rule. It is
a weighted sum of four levels::

    priority_score = enrolled * is_enrolled
                   + tier * TIER_ORDER[attendance_tier]
                   + risk * RISK_ORDER[overall_risk]
                   + absence_rate * clip(absence_rate, 0, 1)      (null or NaN rate → 0)

With the default weights (10000, 1000, 100, 99) each level strictly dominates everything below it
(10000 > 3·1000 + 3·100 + 99, 1000 > 3·100 + 99 and 100 > 99), so sorting by the score reproduces
the contract order; the
remaining keys only break exact score ties (equal tier, risk and rate, or a null rate next
to a 0 rate). A district may set other weights (``APTOOL_PRIORITY_WEIGHTS``); when they
break dominance the rows are ordered by the score first and the contract keys only break
ties, so ``priority_score`` stays non-increasing with ``rank`` either way.

Truancy is deliberately not part of the score: the contract order has no truancy key and
tier already measures absence. It is shown in ``reasons``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import polars as pl

from aptool_assets.rules.enrollment import enrollment_on
from aptool_assets.rules.reasons import (
    GROWTH_REASON_SCHEMA,
    PROJECTION_REASON_COLUMNS,
    clean_rate,
    outlook_reasons_expr,
)
from aptool_assets.vocabulary import RISK_ORDER, TIER_ORDER, UNKNOWN_RISK

RANKING_SCHEMA: dict[str, pl.DataType] = {
    "school_year": pl.Int32(),
    "school_code": pl.Int32(),
    "student_id": pl.Int64(),
    "rank": pl.Int32(),
    "priority_score": pl.Float64(),
    "attendance_tier": pl.Utf8(),
    "overall_risk": pl.Utf8(),
    "absence_rate": pl.Float64(),
    "is_chronically_absent": pl.Boolean(),
    "is_enrolled": pl.Boolean(),
    "days_enrolled": pl.Int32(),
    "reasons": pl.Utf8(),
    "computed_at": pl.Datetime("us", "UTC"),
}

SUMMARY_COLUMNS: tuple[str, ...] = (
    "school_year",
    "student_id",
    "school_code",
    "absence_rate",
    "attendance_tier",
    "is_chronically_absent",
    "truancy_count",
    "truancy_letter_level",
    "days_enrolled",
    "days_absent",
)
"""What the ranking reads from ``aptool.student_attendance_summary``; other columns are ignored."""

RISK_COLUMNS: tuple[str, ...] = (
    "school_year",
    "student_id",
    "overall_risk",
    "ela_relative_placement",
    "math_relative_placement",
)
"""What the ranking reads from ``aptool.student_academic_risk``; other columns are ignored."""

_SCHOOL = ["school_year", "school_code"]
_KEY = ["school_year", "school_code", "student_id"]


@dataclass(frozen=True)
class PriorityWeights:
    """priority_score = enrolled · is_enrolled + tier · TIER_ORDER + risk · RISK_ORDER + absence_rate · rate
    (rate clipped to 0..1).

    Parsed from ``APTOOL_PRIORITY_WEIGHTS`` ("enrolled=10000,tier=1000,risk=100,absence_rate=99"); unnamed
    weights keep their defaults. Any finite weights are accepted: ``preserves_contract_order``
    tells whether the score alone reproduces the contract order (the asset warns when not).
    """

    enrolled: float = 10000.0
    tier: float = 1000.0
    risk: float = 100.0
    absence_rate: float = 99.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"priority weight {f.name}={value!r} is not a finite number")
            object.__setattr__(self, f.name, float(value))

    @classmethod
    def from_string(cls, text: str | None) -> PriorityWeights:
        """Parse "name=number" pairs separated by commas; None or blank → the defaults."""
        if text is None or not text.strip():
            return cls()
        names = [f.name for f in fields(cls)]
        values: dict[str, float] = {}
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue  # a trailing comma is harmless
            name, sep, raw = part.partition("=")
            name, raw = name.strip(), raw.strip()
            if not sep or not name or not raw:
                raise ValueError(f"priority weights: {part!r} is not name=number (expected e.g. {DEFAULT_TEXT!r})")
            if name not in names:
                raise ValueError(f"priority weights: unknown weight {name!r} in {part!r} (known: {', '.join(names)})")
            if name in values:
                raise ValueError(f"priority weights: {name!r} is given twice")
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"priority weights: {raw!r} in {part!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"priority weights: {raw!r} in {part!r} is not a finite number")
            values[name] = value
        return cls(**values)

    def to_string(self) -> str:
        """The ``from_string`` form, e.g. "enrolled=10000,tier=1000,risk=100,absence_rate=99"."""
        return ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))

    __str__ = to_string

    def preserves_contract_order(self) -> bool:
        """True when each level strictly outweighs everything below it, so the score alone gives
        the contract order: enrolled > 3·tier + 3·risk + absence_rate, tier > 3·risk + absence_rate,
        risk > absence_rate, all > 0.

        (The rate contributes at most ``absence_rate`` points because it is clipped to 0..1;
        risk levels span 0..3.)
        """
        return (
            self.tier > 0
            and self.risk > 0
            and self.absence_rate > 0
            and self.risk > self.absence_rate
            and self.tier > 3 * self.risk + self.absence_rate
            and self.enrolled > 3 * self.tier + 3 * self.risk + self.absence_rate
        )


DEFAULT_WEIGHTS = PriorityWeights()
DEFAULT_TEXT = DEFAULT_WEIGHTS.to_string()


def _tier_level(col: str = "attendance_tier") -> pl.Expr:
    """0..3, null for a missing or unrecognized tier."""
    return pl.col(col).cast(pl.Utf8).replace_strict(TIER_ORDER, default=None, return_dtype=pl.Int8)


def _risk_level(col: str = "overall_risk") -> pl.Expr:
    """0..3 with a null risk read as UNKNOWN (no results); null for an unrecognized value."""
    risk = pl.col(col).cast(pl.Utf8).fill_null(UNKNOWN_RISK)
    return risk.replace_strict(RISK_ORDER, default=None, return_dtype=pl.Int8)


def priority_score_expr(weights: PriorityWeights = DEFAULT_WEIGHTS) -> pl.Expr:
    """``priority_score`` from is_enrolled, attendance_tier, overall_risk and absence_rate (Float64).

    A null rate counts as 0 (nothing measured yet, nothing missed); the rate is clipped to
    0..1 so even a corrupt rate cannot jump a risk level. A null overall_risk counts as
    UNKNOWN. The score is null only for a tier or risk that is not a known value.
    Sums are formed in a fixed order, so within one tier and risk the score is non-decreasing
    in the rate (IEEE multiplication and addition are monotone).
    """
    rate = clean_rate().fill_null(0.0).clip(0.0, 1.0)
    return (
        pl.col("is_enrolled").cast(pl.Float64) * weights.enrolled
        + _tier_level().cast(pl.Float64) * weights.tier
        + _risk_level().cast(pl.Float64) * weights.risk
        + rate * weights.absence_rate
    ).alias("priority_score")


# --- ranking -----------------------------------------------------------------------------------


def _require(frame: pl.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _sample(frame: pl.DataFrame, cols: Sequence[str], n: int = 5) -> str:
    rows = frame.select(cols).head(n).rows()
    return ", ".join("/".join(str(v) for v in row) for row in rows)


def _inputs(summary: pl.DataFrame, academic_risk: pl.DataFrame, school_year: int) -> pl.DataFrame:
    """The year's summary rows joined with their academic risk (null → UNKNOWN), typed, with the
    tier and risk levels; raises ValueError (naming IDs) on a null or repeated key."""
    _require(summary, SUMMARY_COLUMNS, "summary")
    _require(academic_risk, RISK_COLUMNS, "academic_risk")
    known = "as_of_date" in summary.columns
    as_of = [pl.col("as_of_date").cast(pl.Date) if known else pl.lit(None, pl.Date).alias("as_of_date")]
    students = (
        summary.select(*SUMMARY_COLUMNS, *as_of)
        .with_columns(
            pl.col("school_year").cast(pl.Int32),
            pl.col("school_code").cast(pl.Int32),
            pl.col("student_id").cast(pl.Int64),
            pl.col("attendance_tier").cast(pl.Utf8),
            clean_rate().alias("absence_rate"),
            pl.col("is_chronically_absent").cast(pl.Boolean),
        )
        .filter(pl.col("school_year") == school_year)
    )
    risk = (
        academic_risk.select(RISK_COLUMNS)
        .with_columns(
            pl.col("school_year").cast(pl.Int32),
            pl.col("student_id").cast(pl.Int64),
            pl.col("overall_risk", "ela_relative_placement", "math_relative_placement").cast(pl.Utf8),
        )
        .filter(pl.col("school_year") == school_year)
        .drop("school_year")
    )

    null_keys = students.filter(pl.any_horizontal(pl.col(_KEY).is_null()))
    if null_keys.height:
        raise ValueError(f"summary has {null_keys.height} rows with a null student_id or school_code")
    dup = students.filter(pl.struct(_KEY).is_duplicated())
    if dup.height:
        raise ValueError(f"summary repeats (school_year, school_code, student_id): {_sample(dup.unique(_KEY), _KEY)}")
    dup = risk.filter(pl.col("student_id").is_duplicated() & pl.col("student_id").is_not_null())
    if dup.height:
        raise ValueError(f"academic_risk repeats student_id: {_sample(dup.unique('student_id'), ['student_id'])}")
    return (
        students.join(risk.drop_nulls("student_id"), on="student_id", how="left")
        .with_columns(pl.col("overall_risk").fill_null(UNKNOWN_RISK))
        .with_columns(_tier_level().alias("_tier"), _risk_level().alias("_risk"))
    )


def _require_known_levels(frame: pl.DataFrame) -> None:
    """A tier or risk outside the vocabulary is a bug upstream: name the values and a few IDs."""
    for level, column, table in (("_tier", "attendance_tier", "summary"), ("_risk", "overall_risk", "academic_risk")):
        bad = frame.filter(pl.col(level).is_null())
        if bad.height:
            values = sorted(bad.get_column(column).unique().to_list(), key=str)
            raise ValueError(
                f"{bad.height} {table} rows have an unknown {column} {values}; "
                f"student IDs {bad.get_column('student_id').head(5).to_list()}"
            )


def _utc(moment: datetime | None) -> datetime:
    """``moment`` in UTC (naive read as UTC); now when None."""
    if moment is None:
        return datetime.now(UTC)
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).astimezone(UTC)


def _with_enrollment(frame: pl.DataFrame, summary: pl.DataFrame, enrollment: pl.DataFrame | None) -> pl.DataFrame:
    """``is_enrolled`` and ``left_on`` per row: from the enrollment stints and the summary's as-of date, or,
    without ``enrollment``, every student enrolled (nothing known about leaving)."""
    if enrollment is None:
        return frame.with_columns(pl.lit(True).alias("is_enrolled"), pl.lit(None, pl.Date).alias("left_on"))
    _require(summary, ["as_of_date"], "summary")
    status = enrollment_on(enrollment, frame.select("student_id", "school_code", pl.col("as_of_date")))
    return pl.concat([frame, status.select("is_enrolled", "left_on")], how="horizontal")


def _with_outlook(frame: pl.DataFrame, growth: pl.DataFrame | None, projection: pl.DataFrame | None) -> pl.DataFrame:
    """The columns the reasons read about where a student is heading: growth per student (``growth_columns``)
    and the projection per student and school; null where not given, so those parts of ``reasons`` stay out."""
    if growth is None:
        frame = frame.with_columns(
            pl.lit(None, dtype).alias(name) for name, dtype in GROWTH_REASON_SCHEMA.items() if name not in frame.columns
        )
    else:
        frame = frame.join(growth.drop("school_year").unique("student_id"), on="student_id", how="left")
    if projection is None:
        return frame.with_columns(
            pl.lit(None, pl.Float64).alias("projected_rate"), pl.lit(None, pl.Boolean).alias("projected_chronic")
        )
    keys = ["student_id", "school_code"]
    projected = projection.select(
        pl.col("student_id").cast(pl.Int64), pl.col("school_code").cast(pl.Int32), *PROJECTION_REASON_COLUMNS
    ).unique(keys)
    return frame.join(projected, on=keys, how="left")


def intervention_ranking(
    summary: pl.DataFrame,
    academic_risk: pl.DataFrame,
    *,
    school_year: int,
    enrollment: pl.DataFrame | None = None,
    growth: pl.DataFrame | None = None,
    projection: pl.DataFrame | None = None,
    weights: PriorityWeights = DEFAULT_WEIGHTS,
    computed_at: datetime | None = None,
) -> pl.DataFrame:
    """``aptool.student_intervention_ranking`` for one school year (contract §3, §4.4).

    One row per summary row of that year (a student at two schools is ranked in each);
    students without an academic-risk row, or with a null overall_risk, are ``UNKNOWN``.
    ``is_enrolled``: a stint of ``enrollment`` at that school includes the summary's as-of date
    (without ``enrollment``, as in hand-built examples, every student counts as enrolled). ``growth``
    (``reasons.growth_columns`` of ``aptool.iready_growth``) and ``projection`` (``aptool.chronic_absence_projection``)
    only add to ``reasons``: growth below typical, and "on track to be chronically absent by June"; the order
    does not depend on them.
    Within each (school_year, school_code) rows are sorted by priority_score descending, then
    enrolled, tier, risk, absence rate (null last) descending, then student_id ascending, and
    ranked 1..n. Output columns and dtypes are ``RANKING_SCHEMA``, sorted by school and rank.

    Raises ValueError (naming the IDs) when an input key is null or repeated or a tier or risk
    is not a known value: the upstream tables guarantee all of these, so a violation is a bug
    to surface, not a row to guess about. ``computed_at`` defaults to now; a naive value is
    read as UTC.
    """
    frame = _with_enrollment(_inputs(summary, academic_risk, school_year), summary, enrollment)
    _require_known_levels(frame)
    ranked = (
        _with_outlook(frame, growth, projection)
        .with_columns(priority_score_expr(weights), outlook_reasons_expr())
        .sort(
            [*_SCHOOL, "priority_score", "is_enrolled", "_tier", "_risk", "absence_rate", "student_id"],
            descending=[False, False, True, True, True, True, True, False],
            nulls_last=[False, False, False, False, False, False, True, False],
        )
        # Rows are sorted by school, so a per-school running count is the rank.
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(_SCHOOL).alias("rank"))
        .with_columns(pl.lit(_utc(computed_at)).alias("computed_at"))
    )
    return ranked.select(pl.col(name).cast(dtype) for name, dtype in RANKING_SCHEMA.items())


# --- checks ------------------------------------------------------------------------------------


def _null_problems(df: pl.DataFrame, columns: Sequence[str]) -> list[str]:
    problems = [
        f"{_n(nulls, 'row')} with a null {col}" for col in columns if (nulls := df.get_column(col).null_count())
    ]
    if df.get_column("priority_score").dtype.is_float():
        nans = df.select(pl.col("priority_score").is_nan().sum()).item()
        if nans:
            problems.append(f"{_n(nans, 'row')} with a NaN priority_score")
    return problems


def _rank_gaps(df: pl.DataFrame, max_examples: int) -> list[str]:
    """Schools whose ranks are not exactly 1..n."""
    per_school = (
        df.group_by(_SCHOOL)
        .agg(
            pl.len().alias("n"),
            pl.col("rank").min().alias("lo"),
            pl.col("rank").max().alias("hi"),
            pl.col("rank").drop_nulls().n_unique().alias("distinct"),
            pl.col("rank").null_count().alias("nulls"),
        )
        .filter(
            (pl.col("lo") != 1).fill_null(True)
            | (pl.col("hi") != pl.col("n")).fill_null(True)
            | (pl.col("distinct") != pl.col("n"))
        )
        .sort(_SCHOOL)
    )
    problems = [
        f"school {school} ({year}): ranks are not exactly 1..{n} "
        f"(min {lo}, max {hi}, {distinct} distinct, {nulls} null, {n} rows)"
        for year, school, n, lo, hi, distinct, nulls in per_school.head(max_examples).iter_rows()
    ]
    if per_school.height > max_examples:
        problems.append(f"{per_school.height - max_examples} more schools with ranks not exactly 1..n")
    return problems


def _score_rises(df: pl.DataFrame, max_examples: int) -> list[str]:
    """Schools where priority_score goes up as rank goes down."""
    rises = (
        df.drop_nulls(["rank", "priority_score"])
        .sort([*_SCHOOL, "rank", "priority_score"], descending=[False, False, False, True], nulls_last=True)
        .with_columns(
            pl.col("priority_score").shift(1).over(_SCHOOL).alias("_prev_score"),
            pl.col("rank").shift(1).over(_SCHOOL).alias("_prev_rank"),
        )
        .filter(pl.col("priority_score") > pl.col("_prev_score"))
    )
    if rises.height == 0:
        return []
    by_school = rises.group_by(_SCHOOL, maintain_order=True).agg(
        pl.len().alias("n"), pl.col("rank").first(), pl.col("student_id").first(), pl.col("_prev_rank").first()
    )
    problems = [
        f"school {school} ({year}): priority_score rises with rank at {_n(n, 'place')}, "
        f"e.g. rank {rank} (student {student}) scores above rank {prev_rank}"
        for year, school, n, rank, student, prev_rank in by_school.head(max_examples).iter_rows()
    ]
    if by_school.height > max_examples:
        problems.append(f"{by_school.height - max_examples} more schools where priority_score rises with rank")
    return problems


def ranking_problems(ranking: pl.DataFrame, max_examples: int = 5) -> list[str]:
    """What is wrong with a published ranking, in words with IDs and counts only (no names).

    Looks for: missing columns, null keys/rank/score, repeated (school_year, school_code,
    student_id), ranks that are not exactly 1..n within a school, and a priority_score that
    rises as rank goes down. An empty list means the table is sound.
    """
    needed = [*_KEY, "rank", "priority_score"]
    missing = [c for c in needed if c not in ranking.columns]
    if missing:
        return [f"ranking lacks columns {missing}"]
    if ranking.height == 0:
        return []
    df = ranking.select(needed)
    problems = _null_problems(df, needed)
    dups = df.filter(pl.struct(_KEY).is_duplicated()).unique(_KEY).sort(_KEY)
    if dups.height:
        problems.append(
            f"{_n(dups.height, 'key')} (school_year, school_code, student_id) repeated, "
            f"e.g. {_sample(dups, _KEY, max_examples)}"
        )
    return problems + _rank_gaps(df, max_examples) + _score_rises(df, max_examples)
