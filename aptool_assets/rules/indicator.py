"""The Dashboard's Chronic Absenteeism Indicator, previewed (contract §3
``aptool.chronic_absenteeism_indicator``, §4.5), and the same rows in CDE's download layout.

Pure functions over polars frames: no Dagster, no I/O. Rates, levels and changes are computed in
integer tenths of a percentage point, never in floats: "rounded half up to one decimal" and the level
cut points (2.5, 5.0, …; ±0.5, ±3.0) are then exact comparisons, and ``rate_pct`` is the one-decimal
value as the nearest double (2.6 is the literal 2.6).

Input frames, one school year each (``conform`` casts and checks the columns): one row per student
and school, the attendance summary joined with the student's grade and enter date at that school and
with the student's groups (``aptool.student_groups``):

    school_year Int32, student_id Int64, school_code Int32, grade Int32 (-1 TK, 0 K, …),
    enter_date Date, days_enrolled Int32, days_absent Int32, race_ethnicity Utf8,
    is_english_learner, is_socioeconomically_disadvantaged, is_student_with_disability,
    is_foster_youth, is_homeless (Boolean)

A student without a groups row (race_ethnicity and the flags null, as a left join leaves them) counts
in ALL and in no other group: not in NR, which means "race not reported", not "nothing known".
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl

from aptool_assets.rules.enrollment import conform
from aptool_assets.rules.student_groups import GROUP_COLUMNS
from aptool_assets.vocabulary import (
    CHANGE_LEVEL_CUTS,
    CHANGE_LEVEL_TOP,
    CHRONIC_MIN_DAYS_ENROLLED,
    CHRONIC_RATE,
    INDICATOR_GRADES,
    N_SIZE,
    NOT_REPORTED,
    RACE_ETHNICITY_GROUPS,
    STATUS_LEVEL_CUTS,
    STATUS_LEVEL_TOP,
    STUDENT_GROUPS,
    SUPPRESSION_MIN_COUNT,
    UTC_TS,
    school_year_bounds,
)

INDICATOR_INPUT_SCHEMA: dict[str, pl.DataType] = {
    "school_year": pl.Int32(),
    "student_id": pl.Int64(),
    "school_code": pl.Int32(),
    "grade": pl.Int32(),
    "enter_date": pl.Date(),
    "days_enrolled": pl.Int32(),
    "days_absent": pl.Int32(),
    **GROUP_COLUMNS,
}

INDICATOR_SCHEMA: dict[str, pl.DataType] = {
    "school_year": pl.Int32(),
    "level": pl.Utf8(),
    "school_code": pl.Int32(),
    "student_group": pl.Utf8(),
    "as_of_date": pl.Date(),
    "eligible_count": pl.Int32(),
    "chronic_count": pl.Int32(),
    "rate_pct": pl.Float64(),
    "prior_eligible_count": pl.Int32(),
    "prior_chronic_count": pl.Int32(),
    "prior_rate_pct": pl.Float64(),
    "change_pct": pl.Float64(),
    "status_level": pl.Utf8(),
    "change_level": pl.Utf8(),
    "n_size_met": pl.Boolean(),
    "computed_at": UTC_TS,
}

SCHOOL_LEVEL, DISTRICT_LEVEL = "school", "district"
DISTRICT_SCHOOL_CODE = 0
"""``school_code`` of the district rows."""

GROUP_FLAGS: dict[str, str] = {
    "EL": "is_english_learner",
    "SED": "is_socioeconomically_disadvantaged",
    "SWD": "is_student_with_disability",
    "FOS": "is_foster_youth",
    "HOM": "is_homeless",
}
"""The boolean column that puts a student in each non-race group."""

_UNIT = ["level", "school_code"]
_KEY = [*_UNIT, "student_group"]
_RACE_OR_NR = [*RACE_ETHNICITY_GROUPS, NOT_REPORTED]
_GROUP_ORDER = {group: i for i, group in enumerate(STUDENT_GROUPS)}

# --- students: who is eligible, who is chronically absent, in which groups ----------------------


def _inputs(frame: pl.DataFrame, school_year: int, name: str) -> pl.DataFrame:
    """``frame``'s rows of ``school_year``, typed; raises ValueError on a null or repeated key or an
    unknown race_ethnicity (the upstream tables guarantee all three: a violation is a bug to surface)."""
    rows = conform(frame, INDICATOR_INPUT_SCHEMA, name).filter(pl.col("school_year") == school_year)
    rows = rows.select(list(INDICATOR_INPUT_SCHEMA))
    nulls = rows.filter(pl.col("student_id").is_null() | pl.col("school_code").is_null()).height
    if nulls:
        raise ValueError(f"{name} has {nulls} rows with a null student_id or school_code")
    repeated = rows.filter(pl.struct("student_id", "school_code").is_duplicated())
    if repeated.height:
        sample = repeated.select("student_id", "school_code").unique().sort("student_id").head(5).rows()
        raise ValueError(f"{name} repeats (student_id, school_code): {sample}")
    unknown = rows.filter(pl.col("race_ethnicity").is_not_null() & ~pl.col("race_ethnicity").is_in(_RACE_OR_NR))
    if unknown.height:
        values = sorted(unknown.get_column("race_ethnicity").unique().to_list())
        raise ValueError(
            f"{name} has an unknown race_ethnicity {values}; student IDs {unknown['student_id'][:5].to_list()}"
        )
    return rows.with_columns(pl.col("days_enrolled", "days_absent").fill_null(0))


def _district_students(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per student: days summed over the year's schools; grade and groups of the record entered
    last (latest enter_date, a null date counting as earliest; on a tie the higher grade, then the
    higher school_code, so the choice never depends on row order)."""
    last = rows.sort("student_id", "enter_date", "grade", "school_code", nulls_last=False).unique(
        subset="student_id", keep="last"
    )
    days = rows.group_by("student_id").agg(pl.col("days_enrolled", "days_absent").cast(pl.Int64).sum())
    return last.drop("days_enrolled", "days_absent").join(days, on="student_id", how="inner")


def _eligible(students: pl.DataFrame) -> pl.DataFrame:
    """Eligible students (TK–8, at least 31 days enrolled, at least one day attended) with ``_chronic``:
    absent on at least 10% of their enrolled days, compared in integers (exactly 10% counts)."""
    low, high = INDICATOR_GRADES
    enrolled, absent = pl.col("days_enrolled").cast(pl.Int64), pl.col("days_absent").cast(pl.Int64)
    return students.filter(
        pl.col("grade").is_between(low, high) & (enrolled >= CHRONIC_MIN_DAYS_ENROLLED) & (enrolled > absent)
    ).with_columns((absent * CHRONIC_RATE.denominator >= enrolled * CHRONIC_RATE.numerator).alias("_chronic"))


def _group_counts(rows: pl.DataFrame) -> pl.DataFrame:
    """(level, school_code, student_group, eligible_count, chronic_count) for every group with an eligible
    student, at both levels. A student counts in ALL, in their race/ethnicity group (none without a groups
    row) and in each flagged group: one aggregation per kind of group, run together."""
    school = _eligible(rows).with_columns(pl.lit(SCHOOL_LEVEL).alias("level"))
    district = _eligible(_district_students(rows)).with_columns(
        pl.lit(DISTRICT_LEVEL).alias("level"), pl.lit(DISTRICT_SCHOOL_CODE, dtype=pl.Int32).alias("school_code")
    )
    cols = ["level", "school_code", "_chronic", "race_ethnicity", *GROUP_FLAGS.values()]
    students = pl.concat([school.select(cols), district.select(cols)]).lazy()
    tally = [
        pl.len().cast(pl.Int64).alias("eligible_count"),
        pl.col("_chronic").sum().cast(pl.Int64).alias("chronic_count"),
    ]
    parts = [
        students.group_by(_UNIT).agg(*tally).with_columns(pl.lit("ALL").alias("student_group")),
        students.drop_nulls("race_ethnicity")
        .group_by(*_UNIT, "race_ethnicity")
        .agg(*tally)
        .rename({"race_ethnicity": "student_group"}),
        *(
            students.filter(pl.col(col).fill_null(False))
            .group_by(_UNIT)
            .agg(*tally)
            .with_columns(pl.lit(group).alias("student_group"))
            for group, col in GROUP_FLAGS.items()
        ),
    ]
    return pl.concat([part.select(*_KEY, "eligible_count", "chronic_count") for part in parts]).collect()


# --- suppression ---------------------------------------------------------------------------------


def _suppressed(counts: pl.DataFrame) -> pl.Series:
    """``_suppressed``, one value per row of ``counts``: True where a group's chronic count may not be
    published. Decided per level and school:

    1. CDE's rule: fewer than ``SUPPRESSION_MIN_COUNT`` eligible students.
    2. CDE's complementary rule: when any race/ethnicity group is suppressed, NR is suppressed too.
    3. So that ALL minus the published race/ethnicity and NR groups never reveals one group's count, when
       ALL is published but exactly one of those groups is suppressed (NR alone, or one race group where
       the school has no NR), the published one with the fewest eligible students (then the first in
       ``STUDENT_GROUPS`` order) is suppressed as well; if there is none, ALL is (possible only when some
       students have no groups row).
    """
    group = pl.col("student_group")
    in_r = group.is_in(_RACE_OR_NR)
    small = pl.col("eligible_count") < SUPPRESSION_MIN_COUNT
    race_small = (small & group.is_in(RACE_ETHNICITY_GROUPS)).any().over(_UNIT)
    step2 = small | ((group == NOT_REPORTED) & race_small)

    frame = counts.with_columns(
        step2.alias("_s"), group.replace_strict(_GROUP_ORDER, return_dtype=pl.Int32).alias("_o")
    )
    lone = ((pl.col("_s") & in_r).sum().over(_UNIT) == 1) & (((group == "ALL") & ~pl.col("_s")).any().over(_UNIT))
    candidate = in_r & ~pl.col("_s")
    # The published race/NR group that sorts first by (eligible_count, group order) in its level and school.
    sort_key = pl.when(candidate).then(pl.col("eligible_count") * 100 + pl.col("_o"))
    chosen = candidate & (sort_key == sort_key.min().over(_UNIT))
    any_candidate = candidate.any().over(_UNIT)
    step3 = lone & (chosen | ((group == "ALL") & ~any_candidate))
    return frame.select((pl.col("_s") | step3).alias("_suppressed")).to_series()


def _year_table(rows: pl.DataFrame) -> pl.DataFrame:
    """Counts per level, school and group with ``_tenths`` (the rate in tenths of a percent, rounded half
    up) and ``chronic_count`` null where suppressed."""
    counts = _group_counts(rows)
    suppressed = _suppressed(counts)
    e, c = pl.col("eligible_count"), pl.col("chronic_count")
    # round half up of 1000·c/e: floor((2000·c + e) / 2e), exact in integers.
    tenths = (2000 * c + e) // (2 * e)
    return counts.with_columns(suppressed).with_columns(
        pl.when(pl.col("_suppressed")).then(None).otherwise(c).alias("chronic_count"),
        pl.when(pl.col("_suppressed")).then(None).otherwise(tenths).alias("_tenths"),
    )


_ONE_DECIMAL: dict[int, float] = {tenths: tenths / 10 for tenths in range(-1000, 1001)}
"""Every rate and change there can be (−100.0 … 100.0), from tenths to the nearest double of the one-decimal
value. Python's ``/`` is correctly rounded; polars' ``tenths / 10`` is not (it multiplies by 0.1, and
33 · 0.1 is 3.3000000000000003)."""


def _one_decimal(tenths: pl.Expr) -> pl.Expr:
    """Tenths of a percentage point as the one-decimal Float64 (33 → 3.3); null stays null."""
    return tenths.replace_strict(_ONE_DECIMAL, return_dtype=pl.Float64)


def _level_expr(tenths: pl.Expr, cuts: tuple[tuple[str, int], ...], top: str) -> pl.Expr:
    """The level whose inclusive upper bound (in tenths) is the first at or above ``tenths``; null stays null."""
    expr = pl.when(tenths.is_null()).then(pl.lit(None, dtype=pl.Utf8))
    for level, upper in cuts:
        expr = expr.when(tenths <= upper).then(pl.lit(level))
    return expr.otherwise(pl.lit(top))


def _utc(moment: datetime | None) -> datetime:
    """``moment`` in UTC (naive read as UTC); now when None."""
    if moment is None:
        return datetime.now(UTC)
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).astimezone(UTC)


def chronic_absenteeism_indicator(
    current: pl.DataFrame,
    prior: pl.DataFrame | None,
    *,
    school_year: int,
    as_of_date: date,
    computed_at: datetime | None = None,
) -> pl.DataFrame:
    """``aptool.chronic_absenteeism_indicator`` for one school year (contract §4.5).

    ``current`` holds the year's rows through the as-of date, ``prior`` the previous year's full year
    (rows of other years are ignored; None, or no row of the previous year: no prior year, and every
    prior figure and change is null). Both are read by the same rules:

    - Eligible: grade -1..8, days_enrolled ≥ 31 and days_enrolled > days_absent. School level: each
      (student, school) row on its own. District level (school_code 0): each student once, days summed
      over the year's schools, grade and groups of the record entered last.
    - chronic: days_absent · 10 ≥ days_enrolled. rate_pct = 100 · chronic / eligible rounded half up
      to one decimal; status_level from it; change_pct = rate_pct − prior_rate_pct (of the rounded
      values), change_level from it.
    - Suppression: see ``_suppressed`` (fewer than 11 eligible; CDE's complementary NR rule; and one
      more group so that a lone suppressed race/NR count cannot be recovered by subtraction). A
      suppressed group keeps eligible_count and publishes no chronic_count, rate, levels or change;
      the prior year is suppressed the same way within itself.
    - prior_eligible_count is 0 for a group with no eligible student in a prior year that is held.
    - n_size_met: eligible_count ≥ 30.

    One row per level, school and group with an eligible student this year, sorted district first,
    then by school_code and ``STUDENT_GROUPS`` order. Columns and dtypes: ``INDICATOR_SCHEMA``.
    """
    _, year_end = school_year_bounds(school_year)
    as_of = min(as_of_date, year_end)
    table = _year_table(_inputs(current, school_year, "current"))
    prior_rows = None if prior is None else _inputs(prior, school_year - 1, "prior")
    if prior_rows is not None and prior_rows.height > 0:
        before = _year_table(prior_rows).select(
            *_KEY,
            pl.col("eligible_count").alias("prior_eligible_count"),
            pl.col("chronic_count").alias("prior_chronic_count"),
            pl.col("_tenths").alias("_prior_tenths"),
        )
        table = table.join(before, on=_KEY, how="left").with_columns(pl.col("prior_eligible_count").fill_null(0))
    else:
        table = table.with_columns(
            pl.lit(None, dtype=pl.Int64).alias("prior_eligible_count"),
            pl.lit(None, dtype=pl.Int64).alias("prior_chronic_count"),
            pl.lit(None, dtype=pl.Int64).alias("_prior_tenths"),
        )
    change = pl.col("_tenths") - pl.col("_prior_tenths")
    out = table.with_columns(
        pl.lit(school_year, dtype=pl.Int32).alias("school_year"),
        pl.lit(as_of, dtype=pl.Date).alias("as_of_date"),
        _one_decimal(pl.col("_tenths")).alias("rate_pct"),
        _one_decimal(pl.col("_prior_tenths")).alias("prior_rate_pct"),
        _one_decimal(change).alias("change_pct"),
        _level_expr(pl.col("_tenths"), STATUS_LEVEL_CUTS, STATUS_LEVEL_TOP).alias("status_level"),
        _level_expr(change, CHANGE_LEVEL_CUTS, CHANGE_LEVEL_TOP).alias("change_level"),
        (pl.col("eligible_count") >= N_SIZE).alias("n_size_met"),
        pl.lit(_utc(computed_at)).alias("computed_at"),
        (pl.col("level") == SCHOOL_LEVEL).alias("_school_first"),
        pl.col("student_group").replace_strict(_GROUP_ORDER, return_dtype=pl.Int32).alias("_order"),
    ).sort("_school_first", "school_code", "_order")
    return out.select(pl.col(name).cast(dtype) for name, dtype in INDICATOR_SCHEMA.items())


# --- CDE's download layout -----------------------------------------------------------------------

CDE_COLUMNS: tuple[str, ...] = (
    "cds",
    "rtype",
    "studentgroup",
    "currnumer",
    "currdenom",
    "currstatus",
    "priornumer",
    "priordenom",
    "priorstatus",
    "change",
    "statuslevel",
    "changelevel",
    "currnsizemet",
)
"""The columns of CDE's Chronic Absenteeism Indicator data file this platform can fill, in CDE's order
(the file also carries names, flags, colour and box, which the platform does not compute)."""

CDE_STATUS_LEVELS: dict[str, int] = {"very_high": 1, "high": 2, "medium": 3, "low": 4, "very_low": 5}
"""``statuslevel``: the Dashboard technical guide's five levels, numbered as CDE's record layouts number them,
from the worst performance (1) to the best (5). For chronic absenteeism, where lower is better, that is
1 = Very High … 5 = Very Low, as CDE's 2022 chronic absenteeism record layout reads (which also used 0 for
"no data"). Not 1 = Very Low: that is the numbering of indicators where higher is better (ELA, math)."""

CDE_CHANGE_LEVELS: dict[str, int] = {
    "increased_significantly": 1,
    "increased": 2,
    "maintained": 3,
    "declined": 4,
    "declined_significantly": 5,
}
"""``changelevel``: the same worst-to-best order (1 = Increased Significantly … 5 = Declined Significantly).
UNSURE: inferred from the status numbering and the other indicators' layouts, not read from a chronic
absenteeism record layout; check it against the year's layout before relying on it."""

CDE_RECORD_TYPES: dict[str, str] = {SCHOOL_LEVEL: "S", DISTRICT_LEVEL: "D"}
CDS_WIDTH = 14


def cde_layout(indicator: pl.DataFrame) -> pl.DataFrame:
    """The indicator's rows as CDE's downloadable ``chronicabsenteeism`` file lays them out, to diff a
    preview against the state's file. Columns ``CDE_COLUMNS``:

    - cds: a STAND-IN — the platform holds no County-District-School code, so this is the school code
      zero-padded to CDE's 14 characters (the district row: all zeros). Map it before a real diff.
    - rtype: the state's record types, S (school) or D (district). studentgroup: the state's codes (ALL, AA,
      AI, AS, FI, HI, PI, WH, MR, EL, SED, SWD, FOS, HOM); NR rows are left out (not a CDE group).
    - currnumer/currdenom/currstatus, priornumer/priordenom/priorstatus, change: the indicator's counts,
      rates and change (one decimal). Suppressed values stay null, to be written as blanks
      (``write_csv(..., separator="\\t", null_value="")``); CDE's files have also used ``*``.
    - statuslevel, changelevel: ``CDE_STATUS_LEVELS`` and ``CDE_CHANGE_LEVELS`` (worst = 1 … best = 5, the
      Dashboard technical guide's order as CDE's record layouts number it; the change numbering is
      inferred — see ``CDE_CHANGE_LEVELS``); null where the indicator has no level.
    - currnsizemet: Y when at least 30 eligible students, else N (UNSURE: Y/N is our reading of the layout).
    """
    return indicator.filter(pl.col("student_group") != NOT_REPORTED).select(
        pl.col("school_code").cast(pl.Utf8).str.zfill(CDS_WIDTH).alias("cds"),
        pl.col("level").replace_strict(CDE_RECORD_TYPES, return_dtype=pl.Utf8).alias("rtype"),
        pl.col("student_group").alias("studentgroup"),
        pl.col("chronic_count").cast(pl.Int32).alias("currnumer"),
        pl.col("eligible_count").cast(pl.Int32).alias("currdenom"),
        pl.col("rate_pct").alias("currstatus"),
        pl.col("prior_chronic_count").cast(pl.Int32).alias("priornumer"),
        pl.col("prior_eligible_count").cast(pl.Int32).alias("priordenom"),
        pl.col("prior_rate_pct").alias("priorstatus"),
        pl.col("change_pct").alias("change"),
        pl.col("status_level")
        .replace_strict(CDE_STATUS_LEVELS, default=None, return_dtype=pl.Int32)
        .alias("statuslevel"),
        pl.col("change_level")
        .replace_strict(CDE_CHANGE_LEVELS, default=None, return_dtype=pl.Int32)
        .alias("changelevel"),
        pl.when(pl.col("n_size_met")).then(pl.lit("Y")).otherwise(pl.lit("N")).alias("currnsizemet"),
    )
