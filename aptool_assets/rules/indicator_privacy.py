"""What a published Chronic Absenteeism Indicator must never show (contract §4.5 suppression): the data test's
rule, kept beside the indicator rules and tested without Dagster.

The indicator is the one table a district may share beyond staff, so a small group's count must be neither
published nor recoverable: no count, rate, level or change where fewer than 11 students are eligible (this
year or the prior year), and NR suppressed wherever a race/ethnicity group of the same level and school is
(else ALL minus the published race groups would reveal the suppressed one).
"""

from __future__ import annotations

import polars as pl

from aptool_assets.vocabulary import RACE_ETHNICITY_GROUPS

MIN_PUBLISHED_GROUP = 11
_CURRENT = ("chronic_count", "rate_pct", "status_level", "change_pct", "change_level")
_PRIOR = ("prior_chronic_count", "prior_rate_pct", "change_pct", "change_level")
_SCOPE = ["school_year", "level", "school_code"]


def suppression_problems(indicator: pl.DataFrame, max_examples: int = 5) -> list[str]:
    """The ways ``indicator`` breaks suppression, in words with school codes, groups and counts (an empty
    list: nothing small is shown, nothing suppressed can be recovered)."""
    problems: list[str] = []
    small = pl.col("eligible_count") < MIN_PUBLISHED_GROUP
    small_prior = pl.col("prior_eligible_count") < MIN_PUBLISHED_GROUP
    for condition, columns, which in ((small, _CURRENT, "this year"), (small_prior, _PRIOR, "prior year")):
        shown = indicator.filter(
            condition.fill_null(False) & pl.any_horizontal(pl.col(c).is_not_null() for c in columns)
        )
        if shown.height:
            examples = ", ".join(
                f"{r['school_code']}/{r['student_group']}" for r in shown.head(max_examples).iter_rows(named=True)
            )
            problems.append(f"{shown.height} rows show figures for fewer than 11 students ({which}), e.g. {examples}")
    race_suppressed = (
        indicator.filter(pl.col("student_group").is_in(RACE_ETHNICITY_GROUPS) & pl.col("chronic_count").is_null())
        .select(_SCOPE)
        .unique()
    )
    nr_shown = indicator.filter((pl.col("student_group") == "NR") & pl.col("chronic_count").is_not_null()).join(
        race_suppressed, on=_SCOPE, how="semi"
    )
    if nr_shown.height:
        examples = ", ".join(str(sc) for sc in nr_shown.get_column("school_code").head(max_examples).to_list())
        problems.append(
            f"{nr_shown.height} NR rows published where a race/ethnicity group is suppressed (schools {examples})"
        )
    return problems
