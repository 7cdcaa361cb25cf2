"""Chronic Absenteeism Indicator (contract §4.5): the columnar implementation against a plain per-student
reference written below (dicts, loops, ``fractions.Fraction`` for rates and half-up rounding) on many seeded
random districts — a few hundred student-records over a few schools, some students at two schools, grades
-2..12, days around every cut, small groups — and the privacy property: where ALL's chronic count is
published, never exactly one race/ethnicity or NR group of that level and school has its count withheld,
so subtraction cannot recover a suppressed group's count."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import date, timedelta
from fractions import Fraction

import polars as pl
import pytest

from aptool_assets.rules.indicator import chronic_absenteeism_indicator
from aptool_assets_tests.indicator_helpers import AS_OF, NOW, YEAR, frame

RACES = ["AA", "AI", "AS", "FI", "HI", "PI", "WH", "MR"]
RACE_WEIGHTS = [6, 2, 10, 4, 40, 2, 20, 5, 4]  # …, NR: several groups small at most schools
ORDER = ["ALL", *RACES, "NR", "EL", "SED", "SWD", "FOS", "HOM"]
FLAGS = {
    "EL": "is_english_learner",
    "SED": "is_socioeconomically_disadvantaged",
    "SWD": "is_student_with_disability",
    "FOS": "is_foster_youth",
    "HOM": "is_homeless",
}
FLAG_ODDS = {"EL": 0.25, "SED": 0.5, "SWD": 0.12, "FOS": 0.02, "HOM": 0.04}

# --- random districts ------------------------------------------------------------------------------


def days(rng: random.Random) -> tuple[int, int]:
    """(enrolled, absent) drawn around every cut: 30/31 days, exactly 10%, none attended."""
    enrolled = rng.choice([rng.randint(0, 180), rng.randint(25, 45), 30, 31, 40, rng.randint(100, 180)])
    kind = rng.random()
    if kind < 0.45:
        absent = rng.randint(0, max(0, enrolled // 12))
    elif kind < 0.6:
        absent = math.ceil(enrolled / 10)  # exactly 10% when enrolled is a multiple of 10
    elif kind < 0.7:
        absent = max(0, math.ceil(enrolled / 10) - 1)
    elif kind < 0.75:
        absent = enrolled  # never attended
    else:
        absent = rng.randint(0, enrolled)
    return enrolled, absent


def district(rng: random.Random, school_year: int, ids: range) -> list[dict]:
    """Rows for ``ids``: 85% at one school, the rest at two; each student's groups shared by their rows."""
    schools = rng.sample(range(101, 111), rng.randint(1, 4))
    weights = list(RACE_WEIGHTS)
    if rng.random() < 0.4:  # a district of few races, where NR may be the only small group
        few = set(rng.sample(range(len(RACES)), rng.randint(1, 3)))
        weights = [w if i in few or i == len(RACES) else 0 for i, w in enumerate(weights)]
    rows = []
    for student_id in ids:
        if rng.random() < 0.05:
            groups = {"race_ethnicity": None} | dict.fromkeys(FLAGS.values())  # no groups row
        else:
            race = rng.choices([*RACES, "NR"], weights)[0]
            groups = {"race_ethnicity": race} | {FLAGS[g]: rng.random() < p for g, p in FLAG_ODDS.items()}
        stints = 1 if rng.random() < 0.85 or len(schools) == 1 else 2
        for school_code in rng.sample(schools, stints):
            enrolled, absent = days(rng)
            entered = date(school_year, 8, 1) + timedelta(days=rng.randint(0, 3) * rng.choice([0, 1, 60]))
            rows.append(
                {
                    "school_year": school_year,
                    "student_id": student_id,
                    "school_code": school_code,
                    "grade": None if rng.random() < 0.01 else rng.choice([*range(-2, 13), 3, 5, 7]),
                    "enter_date": None if rng.random() < 0.03 else entered,
                    "days_enrolled": enrolled,
                    "days_absent": absent,
                    **groups,
                }
            )
    rng.shuffle(rows)
    return rows


def random_years(seed: int) -> tuple[list[dict], list[dict] | None]:
    rng = random.Random(seed)
    first = rng.randint(1, 50)
    current = district(rng, YEAR, range(first, first + rng.randint(100, 320)))
    if rng.random() < 0.15:
        return current, None
    return current, district(rng, YEAR - 1, range(first + 40, first + 40 + rng.randint(60, 320)))


# --- the reference ---------------------------------------------------------------------------------


def eligible_and_chronic(grade, enrolled, absent) -> tuple[bool, bool]:
    eligible = grade is not None and -1 <= grade <= 8 and enrolled >= 31 and enrolled > absent
    return eligible, eligible and Fraction(absent, enrolled) >= Fraction(1, 10)


def groups_of(row: dict) -> list[str]:
    groups = ["ALL"]
    if row["race_ethnicity"] is not None:
        groups.append(row["race_ethnicity"])
    return groups + [g for g, col in FLAGS.items() if row[col]]


def counts(rows: list[dict]) -> dict[tuple, list[int]]:
    """(level, school_code, group) → [eligible, chronic]."""
    out: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])

    def add(level, school_code, grade, enrolled, absent, row):
        eligible, chronic = eligible_and_chronic(grade, enrolled, absent)
        if eligible:
            for group in groups_of(row):
                out[(level, school_code, group)][0] += 1
                out[(level, school_code, group)][1] += chronic

    by_student = defaultdict(list)
    for row in rows:
        add("school", row["school_code"], row["grade"], row["days_enrolled"], row["days_absent"], row)
        by_student[row["student_id"]].append(row)
    for records in by_student.values():

        def entered_last(r):
            return (r["enter_date"] or date.min, -99 if r["grade"] is None else r["grade"], r["school_code"])

        last = max(records, key=entered_last)
        enrolled = sum(r["days_enrolled"] for r in records)
        absent = sum(r["days_absent"] for r in records)
        add("district", 0, last["grade"], enrolled, absent, last)
    return dict(out)


def suppressed(table: dict[tuple, list[int]]) -> set[tuple]:
    units = defaultdict(dict)
    for (level, school_code, group), (eligible, _) in table.items():
        units[(level, school_code)][group] = eligible
    out = set()
    for unit, sizes in units.items():
        hidden = {g for g, n in sizes.items() if n < 11}
        if hidden & set(RACES) and "NR" in sizes:
            hidden.add("NR")
        race_or_nr = [g for g in sizes if g in RACES or g == "NR"]
        if "ALL" not in hidden and len([g for g in race_or_nr if g in hidden]) == 1:
            shown = sorted((sizes[g], ORDER.index(g), g) for g in race_or_nr if g not in hidden)
            hidden.add(shown[0][2] if shown else "ALL")
        out |= {(*unit, g) for g in hidden}
    return out


def tenths(chronic: int, eligible: int) -> int:
    """100 · chronic / eligible in tenths, rounded half up."""
    return math.floor(Fraction(1000 * chronic, eligible) + Fraction(1, 2))


def status(t: int) -> str:
    rate = Fraction(t, 10)
    if rate <= Fraction(25, 10):
        return "very_low"
    if rate <= 5:
        return "low"
    if rate <= 10:
        return "medium"
    if rate <= 20:
        return "high"
    return "very_high"


def change_level(t: int) -> str:
    delta = Fraction(t, 10)
    if delta <= -3:
        return "declined_significantly"
    if delta <= Fraction(-5, 10):
        return "declined"
    if delta < Fraction(5, 10):
        return "maintained"
    if delta < 3:
        return "increased"
    return "increased_significantly"


def published(rows: list[dict]) -> dict[tuple, tuple]:
    """(level, school, group) → (eligible, chronic or None, tenths or None)."""
    table = counts(rows)
    hidden = suppressed(table)
    return {key: (e, None, None) if key in hidden else (e, c, tenths(c, e)) for key, (e, c) in table.items()}


def reference(current: list[dict], prior: list[dict] | None) -> list[dict]:
    now = published([r for r in current if r["school_year"] == YEAR])
    prior_rows = [r for r in prior or [] if r["school_year"] == YEAR - 1]
    before = published(prior_rows) if prior_rows else None
    out = []
    for key in sorted(now, key=lambda k: (k[0] != "district", k[1], ORDER.index(k[2]))):
        eligible, chronic, t = now[key]
        if before is None:
            prior_eligible = prior_chronic = prior_t = None
        else:
            prior_eligible, prior_chronic, prior_t = before.get(key, (0, None, None))
        delta = None if t is None or prior_t is None else t - prior_t
        out.append(
            {
                "level": key[0],
                "school_code": key[1],
                "student_group": key[2],
                "eligible_count": eligible,
                "chronic_count": chronic,
                "rate_pct": None if t is None else float(Fraction(t, 10)),
                "prior_eligible_count": prior_eligible,
                "prior_chronic_count": prior_chronic,
                "prior_rate_pct": None if prior_t is None else float(Fraction(prior_t, 10)),
                "change_pct": None if delta is None else float(Fraction(delta, 10)),
                "status_level": None if t is None else status(t),
                "change_level": None if delta is None else change_level(delta),
                "n_size_met": eligible >= 30,
            }
        )
    return out


def fast(current: list[dict], prior: list[dict] | None, school_year: int = YEAR) -> pl.DataFrame:
    return chronic_absenteeism_indicator(
        frame(current),
        None if prior is None else frame(prior),
        school_year=school_year,
        as_of_date=AS_OF,
        computed_at=NOW,
    )


# --- the comparison --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_reference_on_random_districts(seed):
    for case in range(40):
        current, prior = random_years(seed * 1000 + case)
        table = fast(current, prior)
        got = table.drop("school_year", "as_of_date", "computed_at").to_dicts()
        expected = reference(current, prior)
        assert got == expected, f"seed {seed}, case {case}"
        assert table["computed_at"].unique().to_list() == [NOW]


def test_the_random_districts_reach_the_interesting_cases():
    """The generator is not vacuous: over the cases compared above, every path of the rules is taken."""
    seen = defaultdict(int)
    for seed in range(60):
        current, prior = random_years(seed)
        for row in current:
            eligible, chronic = eligible_and_chronic(row["grade"], row["days_enrolled"], row["days_absent"])
            seen["chronic"] += chronic
            seen["exactly 10%"] += eligible and row["days_absent"] * 10 == row["days_enrolled"]
            seen["never attended"] += row["days_enrolled"] >= 31 and row["days_absent"] == row["days_enrolled"]
            seen["30 days"] += row["days_enrolled"] == 30
            seen["TK"] += row["grade"] == -1
        by_student = defaultdict(int)
        for row in current:
            by_student[row["student_id"]] += 1
        seen["two schools"] += sum(n == 2 for n in by_student.values())
        table = fast(current, prior)
        seen["suppressed"] += table["chronic_count"].null_count()
        nr = table.filter((pl.col("student_group") == "NR") & pl.col("chronic_count").is_null())
        seen["NR withheld at 11+"] += nr.filter(pl.col("eligible_count") >= 11).height
        race = pl.col("student_group").is_in(RACES)
        seen["race withheld at 11+"] += table.filter(
            race & pl.col("chronic_count").is_null() & (pl.col("eligible_count") >= 11)
        ).height
        seen["change"] += table["change_level"].drop_nulls().n_unique()
        seen["no prior"] += prior is None
    assert all(seen[k] > 0 for k in ("chronic", "exactly 10%", "never attended", "30 days", "TK", "two schools")), seen
    assert all(
        seen[k] > 0 for k in ("suppressed", "NR withheld at 11+", "race withheld at 11+", "change", "no prior")
    ), seen


# --- privacy ---------------------------------------------------------------------------------------


def lone_withheld(table: pl.DataFrame, count: str = "chronic_count") -> list[tuple]:
    """(level, school_code) units where ALL's count is published and exactly one race/ethnicity or NR group's
    count is withheld: ALL minus the published groups would recover it."""
    race_or_nr = pl.col("student_group").is_in([*RACES, "NR"])
    units = table.group_by("level", "school_code").agg(
        ((pl.col("student_group") == "ALL") & pl.col(count).is_not_null()).any().alias("all_published"),
        (race_or_nr & pl.col(count).is_null()).sum().alias("withheld"),
    )
    return units.filter(pl.col("all_published") & (pl.col("withheld") == 1)).select("level", "school_code").rows()


@pytest.mark.parametrize("seed", range(4))
def test_no_suppressed_count_can_be_recovered_by_subtraction(seed):
    for case in range(50):
        current, prior = random_years(10_000 + seed * 1000 + case)
        table = fast(current, prior)
        assert lone_withheld(table) == [], f"seed {seed}, case {case}"
        if prior is not None:
            assert lone_withheld(fast(prior, None, school_year=YEAR - 1)) == [], f"prior, seed {seed}, case {case}"
        # CDE's own rule, stated directly: a race group under 11 withholds NR of its level and school.
        small_race = table.filter(pl.col("student_group").is_in(RACES) & (pl.col("eligible_count") < 11))
        nr = table.filter(pl.col("student_group") == "NR").join(
            small_race.select("level", "school_code").unique(), on=["level", "school_code"]
        )
        assert nr["chronic_count"].null_count() == nr.height
