"""Intervention ranking (contract §4.4): the order, one level at a time, schools ranked independently,
the output shape, the ``ranking_problems`` check, and a comparison of the columnar ranking with a plain
Python sort by the contract key (enrolled on the as-of date first) on a few hundred seeded random schools
with enrollment stints, students who left among them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from aptool_assets.rules.academic import RISK_BY_RELATIVE_PLACEMENT
from aptool_assets.rules.ranking import RANKING_SCHEMA, PriorityWeights, intervention_ranking, ranking_problems
from aptool_assets.vocabulary import RISK_ORDER, TIER_ORDER
from aptool_assets_tests.ranking_helpers import (
    AS_OF,
    NOW,
    PLACEMENT_BY_RISK,
    S1,
    S2,
    YEAR,
    enrollment_prefix,
    order,
    rank,
    reference_enrollment,
    risks,
    stints,
    summary,
)

# --- the contract order, one level at a time ----------------------------------------------------


def test_tier_beats_risk_and_rate():
    ranking = rank(
        [
            {"student_id": 1, "rate": 0.10},
            {"student_id": 2, "rate": 0.20},
            {"student_id": 3, "rate": 0.05},
            {"student_id": 4, "rate": 0.0},
        ],
        [(1, "LOW"), (3, "HIGH"), (4, "HIGH")],
    )
    # severe beats moderate beats at_risk beats satisfactory even with a worse risk below.
    assert order(ranking) == [2, 1, 3, 4]


def test_risk_beats_rate_within_a_tier():
    ranking = rank(
        [{"student_id": i, "rate": rate} for i, rate in [(1, 0.199), (2, 0.10), (3, 0.15), (4, 0.19), (5, 0.11)]],
        [(1, "UNKNOWN"), (2, "HIGH"), (3, "MEDIUM"), (4, "LOW")],  # 5 has no risk row at all
    )
    assert order(ranking) == [2, 3, 4, 1, 5]
    assert dict(ranking.select("student_id", "overall_risk").iter_rows())[5] == "UNKNOWN"


def test_rate_beats_student_id_and_null_rate_is_last():
    ranking = rank(
        [
            {"student_id": 1, "rate": None},
            {"student_id": 2, "rate": 0.0},
            {"student_id": 3, "rate": 0.04},
            {"student_id": 4, "rate": 0.01},
        ],
    )
    # A null rate scores like 0 but sorts after a measured 0 (both only the enrolled weight: without
    # enrollment stints every student counts as enrolled).
    assert order(ranking) == [3, 4, 2, 1]
    scores = dict(ranking.select("student_id", "priority_score").iter_rows())
    assert scores[1] == scores[2] == PriorityWeights().enrolled


def test_ties_in_everything_but_id_go_by_id_ascending():
    ranking = rank(
        [{"student_id": sid, "rate": 0.125} for sid in (900, 12, 345, 7)]
        + [{"student_id": sid, "rate": None} for sid in (50, 5)],
        [(900, "MEDIUM"), (12, "MEDIUM"), (345, "MEDIUM"), (7, "MEDIUM")],
    )
    assert order(ranking) == [7, 12, 345, 900, 5, 50]


def test_unknown_risk_ranks_below_low_and_null_risk_reads_unknown():
    ranking = rank(
        [{"student_id": 1, "rate": 0.07}, {"student_id": 2, "rate": 0.07}, {"student_id": 3, "rate": 0.07}],
        [(1, None), (2, "LOW")],
    )
    assert order(ranking) == [2, 1, 3]
    assert ranking.get_column("overall_risk").to_list() == ["LOW", "UNKNOWN", "UNKNOWN"]


def test_each_tier_and_risk_pair_in_contract_order():
    rows, risk_rows, sid = [], [], 0
    expected = []
    for tier in sorted(TIER_ORDER, key=TIER_ORDER.get, reverse=True):
        for risk in sorted(RISK_ORDER, key=RISK_ORDER.get, reverse=True):
            for rate in (0.9, 0.3, None):  # tier given explicitly: the rank obeys the tier column
                sid += 1
                rows.append({"student_id": 1000 - sid, "rate": rate, "tier": tier})
                risk_rows.append((1000 - sid, risk))
                expected.append(1000 - sid)
    ranking = rank(rows, risk_rows)
    assert order(ranking) == expected
    assert ranking.get_column("rank").to_list() == list(range(1, len(expected) + 1))


# --- schools, shape, dtypes ---------------------------------------------------------------------


def test_two_schools_ranked_independently_and_a_student_at_both():
    ranking = rank(
        [
            {"student_id": 1, "school": S1, "rate": 0.30},
            {"student_id": 2, "school": S1, "rate": 0.02},
            {"student_id": 3, "school": S2, "rate": 0.01},
            {"student_id": 2, "school": S2, "rate": 0.12},
            {"student_id": 4, "school": S2, "rate": 0.06},
        ],
        [(2, "HIGH")],
    )
    assert order(ranking, S1) == [1, 2]
    assert order(ranking, S2) == [2, 4, 3]
    assert ranking.filter(pl.col("student_id") == 2).get_column("school_code").sort().to_list() == [S1, S2]
    # Student 2 keeps each school's own attendance and the one academic risk.
    at_two = ranking.filter(pl.col("student_id") == 2).sort("school_code")
    assert at_two.get_column("attendance_tier").to_list() == ["satisfactory", "moderate_chronic"]
    assert at_two.get_column("overall_risk").to_list() == ["HIGH", "HIGH"]
    assert ranking.height == 5
    assert ranking_problems(ranking) == []


def test_output_columns_dtypes_and_row_order():
    ranking = rank([{"student_id": 2, "rate": 0.1, "school": S2}, {"student_id": 1, "rate": 0.3}], [(1, "HIGH")])
    assert ranking.schema == pl.Schema(RANKING_SCHEMA)
    assert ranking.get_column("computed_at").to_list() == [NOW, NOW]
    assert ranking.select("school_code", "rank").rows() == [(S1, 1), (S2, 1)]
    row = ranking.row(0, named=True)
    assert row["is_chronically_absent"] is True and row["absence_rate"] == 0.3 and row["school_year"] == YEAR


def test_only_the_requested_year_and_its_risks_count():
    s = pl.concat([summary([{"student_id": 1, "rate": 0.3}]), summary([{"student_id": 9, "rate": 0.3}], year=2024)])
    r = pl.concat([risks([(1, "LOW")]), risks([(1, "HIGH")], year=2024)])
    ranking = intervention_ranking(s, r, school_year=YEAR, computed_at=NOW)
    assert ranking.select("student_id", "overall_risk").rows() == [(1, "LOW")]


def test_empty_inputs_give_an_empty_typed_table():
    ranking = intervention_ranking(summary([]), risks([]), school_year=YEAR)
    assert ranking.height == 0 and ranking.schema == pl.Schema(RANKING_SCHEMA)


def test_computed_at_naive_is_utc_aware_is_converted_and_default_is_now():
    pacific = timezone(timedelta(hours=-7))
    naive = rank([{"student_id": 1, "rate": 0.0}], computed_at=datetime(2025, 10, 1, 12, 0))
    aware = rank([{"student_id": 1, "rate": 0.0}], computed_at=datetime(2025, 10, 1, 5, 0, tzinfo=pacific))
    assert naive.item(0, "computed_at") == aware.item(0, "computed_at") == NOW
    before = datetime.now(UTC)
    default = intervention_ranking(summary([{"student_id": 1, "rate": 0.0}]), risks([]), school_year=YEAR)
    assert before <= default.item(0, "computed_at") <= datetime.now(UTC)


def test_bad_inputs_are_refused_with_ids():
    with pytest.raises(ValueError, match="lacks columns"):
        intervention_ranking(summary([]).drop("attendance_tier"), risks([]), school_year=YEAR)
    with pytest.raises(ValueError, match="repeats .*2025/101/7"):
        rank([{"student_id": 7, "rate": 0.1}, {"student_id": 7, "rate": 0.2}])
    with pytest.raises(ValueError, match="academic_risk repeats student_id: 7"):
        rank([{"student_id": 7, "rate": 0.1}], [(7, "LOW"), (7, "HIGH")])
    with pytest.raises(ValueError, match="unknown attendance_tier .*chronic"):
        rank([{"student_id": 7, "rate": 0.1, "tier": "chronic"}])
    with pytest.raises(ValueError, match="unknown overall_risk .*SEVERE"):
        rank([{"student_id": 7, "rate": 0.1}], [(7, "SEVERE")])


# --- ranking_problems ---------------------------------------------------------------------------


def good_ranking() -> pl.DataFrame:
    return rank(
        [{"student_id": i, "rate": i / 50, "school": S1 if i % 2 else S2} for i in range(1, 11)],
        [(i, "MEDIUM") for i in range(1, 11, 3)],
    )


def test_a_sound_ranking_has_no_problems():
    assert ranking_problems(good_ranking()) == []
    assert ranking_problems(good_ranking().head(0)) == []


def test_problems_gap_in_ranks():
    broken = good_ranking().with_columns(
        pl.when((pl.col("school_code") == S1) & (pl.col("rank") == 5)).then(6).otherwise(pl.col("rank")).alias("rank")
    )
    problems = ranking_problems(broken)
    assert problems == [f"school {S1} ({YEAR}): ranks are not exactly 1..5 (min 1, max 6, 5 distinct, 0 null, 5 rows)"]


def test_problems_tied_and_zero_and_null_ranks():
    ranking = good_ranking()
    tied = ranking.with_columns(
        pl.when((pl.col("school_code") == S2) & (pl.col("rank") == 2)).then(1).otherwise(pl.col("rank")).alias("rank")
    )
    assert any(
        f"school {S2} ({YEAR}): ranks are not exactly 1..5" in p and "4 distinct" in p for p in ranking_problems(tied)
    )
    zero_based = ranking.with_columns(pl.col("rank") - 1)
    problems = ranking_problems(zero_based)
    assert len(problems) == 2 and all("min 0" in p for p in problems)
    nulled = ranking.with_columns(pl.when(pl.col("student_id") == 3).then(None).otherwise(pl.col("rank")).alias("rank"))
    problems = ranking_problems(nulled)
    assert "1 row with a null rank" in problems
    assert any(f"school {S1}" in p and "1 null" in p for p in problems)


def test_problems_duplicate_student():
    ranking = good_ranking()
    extra = ranking.filter(pl.col("student_id") == 3).with_columns(
        pl.lit(6, dtype=pl.Int32).alias("rank"), pl.lit(-1.0).alias("priority_score")
    )
    problems = ranking_problems(pl.concat([ranking, extra]))
    assert f"1 key (school_year, school_code, student_id) repeated, e.g. {YEAR}/{S1}/3" in problems
    assert len(problems) == 1  # ranks 1..6 and a falling score: only the key is wrong


def test_problems_score_rising_with_rank():
    ranking = good_ranking()
    last = ranking.filter(pl.col("school_code") == S2).get_column("rank").max()
    student = ranking.filter((pl.col("school_code") == S2) & (pl.col("rank") == last)).item(0, "student_id")
    score = pl.when(pl.col("student_id") == student).then(99999.0).otherwise(pl.col("priority_score"))
    broken = ranking.with_columns(score.alias("priority_score"))
    assert ranking_problems(broken) == [
        f"school {S2} ({YEAR}): priority_score rises with rank at 1 place, "
        f"e.g. rank {last} (student {student}) scores above rank {last - 1}"
    ]
    # Equal scores are fine: monotone means non-increasing.
    flat = ranking.with_columns(pl.lit(1.0).alias("priority_score"))
    assert ranking_problems(flat) == []


def test_problems_missing_columns_and_null_scores():
    assert ranking_problems(good_ranking().drop("rank")) == ["ranking lacks columns ['rank']"]
    nulled = good_ranking().with_columns(
        pl.when(pl.col("student_id") == 4).then(None).otherwise(pl.col("priority_score")).alias("priority_score")
    )
    assert ranking_problems(nulled) == ["1 row with a null priority_score"]


def test_problems_report_many_schools_briefly():
    ranking = rank([{"student_id": i, "rate": 0.1, "school": i} for i in range(1, 21)])
    problems = ranking_problems(ranking.with_columns(pl.lit(2, dtype=pl.Int32).alias("rank")))
    assert len(problems) == 6 and problems[-1] == "15 more schools with ranks not exactly 1..n"


# --- randomized comparison with a plain sort ----------------------------------------------------


def random_stints(rng: random.Random, sid: int, school: int, as_of) -> list[tuple]:
    """0-3 stints around the as-of date: open, left before it (or on it), left and re-entered, entering
    after it; plus now and then a stint at another school, which never counts here."""
    out = []
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        enter = as_of + timedelta(days=rng.choice([-200, -60, -30, -1, 0, 1, 20]))
        leave = rng.choice([None, None, enter + timedelta(days=rng.randint(0, 90)), as_of, as_of - timedelta(days=1)])
        out.append((sid, school, enter, leave if leave is None or leave >= enter else enter))
    if rng.random() < 0.2:
        out.append((sid, school + 1, as_of - timedelta(days=10), None))
    return out


def random_district(
    rng: random.Random, schools: int
) -> tuple[pl.DataFrame, pl.DataFrame, list[tuple], dict[tuple[int, int], bool]]:
    """(summary, risks, stints, is_enrolled by (school, student)) for a random district."""
    rows, risk_rows, stint_rows, enrolled_at = [], {}, [], {}
    for school in rng.sample(range(1, 10_000, 2), schools):  # odd codes: school + 1 is never ranked
        n = rng.randint(1, 25)
        for sid in rng.sample(range(1, 400), n):  # small id space: students shared between schools
            enrolled = rng.choice([0, rng.randint(1, 30), rng.randint(31, 180)])
            absent = rng.choice([0, rng.randint(0, enrolled), enrolled // 10, (enrolled + 9) // 10])
            rate = absent / enrolled if enrolled else None
            rows.append({"student_id": sid, "school": school, "rate": rate, "absent": absent, "enrolled": enrolled})
            stint_rows += random_stints(rng, sid, school, AS_OF)
            if sid not in risk_rows and rng.random() < 0.8:
                ela = rng.choice([None, *PLACEMENT_BY_RISK.values(), "3 or More Grade Levels Below"])
                math = rng.choice([None, *PLACEMENT_BY_RISK.values(), "Mid or Above Grade Level"])
                worst = max((RISK_ORDER[RISK_BY_RELATIVE_PLACEMENT[p]] for p in (ela, math) if p), default=0)
                overall = {v: k for k, v in RISK_ORDER.items()}[worst]
                risk_rows[sid] = (sid, ela, math, rng.choice([overall, None]) if worst == 0 else overall)
    for row in rows:
        key = (row["school"], row["student_id"])
        enrolled_at[key] = reference_enrollment(stint_rows, row["student_id"], row["school"], AS_OF)[0]
    return summary(rows), risks(list(risk_rows.values())), stint_rows, enrolled_at


def contract_key(row: dict) -> tuple:
    """The contract order (§4.4) as a plain sort key: enrolled first, tier, risk, rate (null last), id."""
    rate = row["absence_rate"]
    return (
        not row.get("is_enrolled", True),
        -TIER_ORDER[row["attendance_tier"]],
        -RISK_ORDER[row["overall_risk"] or "UNKNOWN"],
        rate is None,
        -(rate or 0.0),
        row["student_id"],
    )


def expected_orders(
    s: pl.DataFrame, r: pl.DataFrame, key, enrolled_at: dict[tuple[int, int], bool] | None = None
) -> dict[int, list[int]]:
    """Per school, the student ids sorted by ``key``; without ``enrolled_at`` every student is enrolled."""
    risk_by_id = {row["student_id"]: row["overall_risk"] for row in r.iter_rows(named=True)}
    by_school: dict[int, list[dict]] = {}
    for row in s.iter_rows(named=True):
        row["overall_risk"] = risk_by_id.get(row["student_id"])
        row["is_enrolled"] = True if enrolled_at is None else enrolled_at[(row["school_code"], row["student_id"])]
        by_school.setdefault(row["school_code"], []).append(row)
    return {school: [row["student_id"] for row in sorted(rows, key=key)] for school, rows in by_school.items()}


def actual_orders(ranking: pl.DataFrame) -> dict[int, list[int]]:
    grouped = ranking.group_by("school_code").agg(pl.col("student_id").sort_by("rank"))
    return dict(grouped.iter_rows())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_schools_match_a_plain_sort_by_the_contract_key(seed):
    """Without enrollment stints every student counts as enrolled: the order is tier, risk, rate, id."""
    rng = random.Random(seed)
    s, r, _, _ = random_district(rng, schools=150)
    ranking = intervention_ranking(
        s.sample(fraction=1.0, shuffle=True, seed=seed), r, school_year=YEAR, computed_at=NOW
    )
    assert ranking.height == s.height
    assert ranking.get_column("is_enrolled").all()
    assert actual_orders(ranking) == expected_orders(s, r, contract_key)
    assert ranking_problems(ranking) == []
    # Ranks are 1..n in row order within each school, and the score never rises.
    assert ranking.select((pl.col("rank") == pl.int_range(1, pl.len() + 1).over("school_code")).all()).item()


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_random_schools_with_stints_match_a_plain_sort_enrolled_first(seed):
    """With stints, some students left (or never had a stint there): the plain key is (not is_enrolled,
    tier desc, risk desc, rate desc nulls last, student_id), and each row's is_enrolled, days_enrolled and
    the start of its reasons follow the stints written plainly."""
    rng = random.Random(seed)
    s, r, stint_rows, enrolled_at = random_district(rng, schools=150)
    assert 0 < sum(enrolled_at.values()) < len(enrolled_at)  # both kinds in every seed
    ranking = intervention_ranking(
        s.sample(fraction=1.0, shuffle=True, seed=seed),
        r,
        school_year=YEAR,
        enrollment=stints(rng.sample(stint_rows, len(stint_rows))),  # stint order does not matter
        computed_at=NOW,
    )
    assert ranking.height == s.height
    assert actual_orders(ranking) == expected_orders(s, r, contract_key, enrolled_at)
    assert ranking_problems(ranking) == []  # the default weights keep the score monotone in rank
    days = {(row["school_code"], row["student_id"]): row["days_enrolled"] for row in s.iter_rows(named=True)}
    for row in ranking.iter_rows(named=True):
        key = (row["school_code"], row["student_id"])
        enrolled, left_on = reference_enrollment(stint_rows, row["student_id"], row["school_code"], AS_OF)
        assert (row["is_enrolled"], row["days_enrolled"]) == (enrolled, days[key])
        prefix = enrollment_prefix(enrolled, left_on, AS_OF)
        if prefix is None:
            assert "left on" not in row["reasons"] and "not enrolled" not in row["reasons"]
        else:
            assert row["reasons"].startswith(prefix)


@pytest.mark.parametrize("seed", [4, 5])
def test_random_schools_with_custom_weights_order_by_score_then_contract_key(seed):
    rng = random.Random(seed)
    weights = PriorityWeights(
        enrolled=rng.uniform(0, 50), tier=rng.uniform(0, 50), risk=rng.uniform(0, 50), absence_rate=rng.uniform(0, 200)
    )
    s, r, stint_rows, enrolled_at = random_district(rng, schools=150)
    ranking = intervention_ranking(
        s, r, school_year=YEAR, enrollment=stints(stint_rows), weights=weights, computed_at=NOW
    )
    score = {(row["school_code"], row["student_id"]): row["priority_score"] for row in ranking.iter_rows(named=True)}
    risk_by_id = dict(r.select("student_id", "overall_risk").iter_rows())
    for row in s.iter_rows(named=True):  # the formula, by hand
        rate = min(max(row["absence_rate"] or 0.0, 0.0), 1.0)
        level = RISK_ORDER[risk_by_id.get(row["student_id"]) or "UNKNOWN"]
        enrolled = enrolled_at[(row["school_code"], row["student_id"])]
        assert score[(row["school_code"], row["student_id"])] == pytest.approx(
            enrolled * weights.enrolled
            + TIER_ORDER[row["attendance_tier"]] * weights.tier
            + level * weights.risk
            + rate * weights.absence_rate
        )

    def key(row: dict) -> tuple:
        return (-score[(row["school_code"], row["student_id"])], *contract_key(row))

    assert actual_orders(ranking) == expected_orders(s, r, key, enrolled_at)
    assert ranking_problems(ranking) == []
