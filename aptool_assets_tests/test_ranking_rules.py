"""Intervention ranking (contract §4.4) on small hand-built frames, one level of the order at a time.

The last tests compare the columnar ranking with a plain Python sort by the contract key on a
few hundred seeded random schools.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from aptool_assets.rules.academic import RISK_BY_RELATIVE_PLACEMENT
from aptool_assets.rules.ranking import (
    DEFAULT_WEIGHTS,
    RANKING_SCHEMA,
    PriorityWeights,
    intervention_ranking,
    priority_score_expr,
    ranking_problems,
)
from aptool_assets.rules.reasons import REASON_COLUMNS, reasons_expr
from aptool_assets.vocabulary import RISK_ORDER, TIER_ORDER

YEAR = 2025
S1, S2 = 101, 202
NOW = datetime(2025, 10, 1, 12, 0, tzinfo=UTC)

SUMMARY_SCHEMA = {
    "school_year": pl.Int32,
    "student_id": pl.Int64,
    "school_code": pl.Int32,
    "absence_rate": pl.Float64,
    "attendance_tier": pl.Utf8,
    "is_chronically_absent": pl.Boolean,
    "truancy_count": pl.Int32,
    "truancy_letter_level": pl.Int32,
    "days_enrolled": pl.Int32,
    "days_absent": pl.Int32,
    "first_name": pl.Utf8,
    "last_name": pl.Utf8,
}
RISK_SCHEMA = {
    "school_year": pl.Int32,
    "student_id": pl.Int64,
    "ela_relative_placement": pl.Utf8,
    "math_relative_placement": pl.Utf8,
    "ela_risk": pl.Utf8,
    "math_risk": pl.Utf8,
    "overall_risk": pl.Utf8,
    "first_name": pl.Utf8,
    "last_name": pl.Utf8,
}
PLACEMENT_BY_RISK = {"HIGH": "2 Grade Levels Below", "MEDIUM": "1 Grade Level Below", "LOW": "Early On Grade Level"}


def tier_of(rate: float | None) -> str:
    if rate is None or rate < 0.05:
        return "satisfactory"
    return "at_risk" if rate < 0.10 else "moderate_chronic" if rate < 0.20 else "severe_chronic"


def summary(rows: list[dict], year: int = YEAR) -> pl.DataFrame:
    """rows: dicts with student_id and optional school/rate/tier/absent/enrolled/truancy/letter."""
    data = []
    for r in rows:
        rate = r.get("rate")
        enrolled = r.get("enrolled", 60 if rate is not None else 0)
        data.append(
            {
                "school_year": r.get("year", year),
                "student_id": r["student_id"],
                "school_code": r.get("school", S1),
                "absence_rate": rate,
                "attendance_tier": r.get("tier", tier_of(rate)),
                "is_chronically_absent": rate is not None and rate >= 0.10 and enrolled >= 31,
                "truancy_count": r.get("truancy", 0),
                "truancy_letter_level": r.get("letter", 0),
                "days_enrolled": enrolled,
                "days_absent": r.get("absent", round((rate or 0) * enrolled)),
                "first_name": "Zebulon",
                "last_name": "Quixote",
            }
        )
    return pl.DataFrame(data, schema=SUMMARY_SCHEMA)


def risks(rows: list[tuple], year: int = YEAR) -> pl.DataFrame:
    """rows: (student_id, overall_risk) or (student_id, ela placement, math placement, overall_risk)."""
    data = []
    for r in rows:
        if len(r) == 2:
            sid, overall = r
            ela = PLACEMENT_BY_RISK.get(overall)
            math = None
        else:
            sid, ela, math, overall = r
        data.append(
            {
                "school_year": year,
                "student_id": sid,
                "ela_relative_placement": ela,
                "math_relative_placement": math,
                "ela_risk": None,
                "math_risk": None,
                "overall_risk": overall,
                "first_name": "Zebulon",
                "last_name": "Quixote",
            }
        )
    return pl.DataFrame(data, schema=RISK_SCHEMA)


def rank(summary_rows: list[dict], risk_rows: list[tuple] = (), **kw) -> pl.DataFrame:
    kw.setdefault("computed_at", NOW)
    return intervention_ranking(summary(summary_rows), risks(list(risk_rows)), school_year=YEAR, **kw)


def order(ranking: pl.DataFrame, school: int = S1) -> list[int]:
    return ranking.filter(pl.col("school_code") == school).sort("rank").get_column("student_id").to_list()


def reasons_of(ranking: pl.DataFrame) -> dict[int, str]:
    return dict(ranking.select("student_id", "reasons").iter_rows())


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
    # A null rate scores like 0 but sorts after a measured 0.
    assert order(ranking) == [3, 4, 2, 1]
    scores = dict(ranking.select("student_id", "priority_score").iter_rows())
    assert scores[1] == scores[2] == 0.0


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


# --- priority score and weights -----------------------------------------------------------------


def test_default_scores_are_monotone_and_follow_the_formula():
    ranking = rank(
        [
            {"student_id": 1, "rate": 0.23},
            {"student_id": 2, "rate": 0.5},
            {"student_id": 3, "rate": None},
            {"student_id": 4, "rate": 1.0},
        ],
        [(1, "HIGH"), (2, "MEDIUM"), (4, "UNKNOWN")],
    )
    scores = dict(ranking.select("student_id", "priority_score").iter_rows())
    assert scores == {1: 3000 + 300 + 0.23 * 99, 2: 3000 + 200 + 0.5 * 99, 3: 0.0, 4: 3000 + 99.0}
    by_rank = ranking.sort("rank").get_column("priority_score").to_list()
    assert by_rank == sorted(by_rank, reverse=True)


def test_score_expr_reads_null_rate_as_zero_clips_the_rate_and_nulls_unknown_values():
    df = pl.DataFrame(
        {
            "attendance_tier": ["at_risk", "at_risk", "at_risk", "satisfactory", "weird"],
            "overall_risk": [None, "LOW", "LOW", "nope", "LOW"],
            "absence_rate": [None, 1.7, float("nan"), 0.0, 0.0],
        }
    )
    assert df.select(priority_score_expr()).to_series().to_list() == [1000.0, 1199.0, 1100.0, None, None]


def test_default_weights_preserve_the_contract_order():
    assert PriorityWeights(1000, 100, 99) == DEFAULT_WEIGHTS
    assert DEFAULT_WEIGHTS.preserves_contract_order()
    # The tightest case: the best of a lower level against the worst of the level above.
    assert DEFAULT_WEIGHTS.tier * 1 > DEFAULT_WEIGHTS.risk * 3 + DEFAULT_WEIGHTS.absence_rate
    assert DEFAULT_WEIGHTS.risk * 1 > DEFAULT_WEIGHTS.absence_rate * 1


@pytest.mark.parametrize(
    "weights",
    [
        PriorityWeights(tier=300, risk=100, absence_rate=1),  # tier = 3·risk: not strictly above
        PriorityWeights(tier=1000, risk=50, absence_rate=50),  # risk = rate
        PriorityWeights(tier=1000, risk=100, absence_rate=0),  # rate ignored
        PriorityWeights(tier=-1000, risk=100, absence_rate=10),
        PriorityWeights(tier=10, risk=1, absence_rate=100),  # rate first
    ],
)
def test_weights_that_break_dominance_are_detected(weights):
    assert not weights.preserves_contract_order()


def test_broken_weights_order_by_score_then_contract_keys():
    weights = PriorityWeights(tier=10, risk=1, absence_rate=100)  # the rate now dominates
    ranking = rank(
        [
            {"student_id": 1, "rate": 0.25},
            {"student_id": 2, "rate": 0.60},
            {"student_id": 3, "rate": 0.06},
            {"student_id": 4, "rate": 0.15},
            {"student_id": 5, "rate": 0.15},
        ],
        [(1, "HIGH"), (3, "HIGH")],
        weights=weights,
    )
    scores = dict(ranking.select("student_id", "priority_score").iter_rows())
    assert scores[2] == pytest.approx(90.0) and scores[1] == pytest.approx(58.0)
    assert order(ranking) == [2, 1, 4, 5, 3]
    by_rank = ranking.sort("rank").get_column("priority_score").to_list()
    assert by_rank == sorted(by_rank, reverse=True)
    assert ranking_problems(ranking) == []


def test_equal_scores_under_custom_weights_fall_back_to_the_contract_keys():
    weights = PriorityWeights(tier=1, risk=1, absence_rate=0)  # at_risk+LOW == satisfactory+MEDIUM
    ranking = rank(
        [{"student_id": 1, "rate": 0.0}, {"student_id": 2, "rate": 0.06}, {"student_id": 3, "rate": 0.07}],
        [(1, "MEDIUM"), (2, "LOW"), (3, "LOW")],
        weights=weights,
    )
    assert ranking.get_column("priority_score").to_list() == [2.0, 2.0, 2.0]
    assert order(ranking) == [3, 2, 1]  # tier, then rate: 3 before 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, DEFAULT_WEIGHTS),
        ("", DEFAULT_WEIGHTS),
        ("   ", DEFAULT_WEIGHTS),
        ("tier=1000,risk=100,absence_rate=99", DEFAULT_WEIGHTS),
        (" tier = 5000 , risk=200 ", PriorityWeights(5000, 200, 99)),
        ("absence_rate=0.5,", PriorityWeights(1000, 100, 0.5)),
        ("risk=1e2,tier=2E3", PriorityWeights(2000, 100, 99)),
    ],
)
def test_weights_from_string(text, expected):
    assert PriorityWeights.from_string(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tier", "'tier' is not name=number"),
        ("tier=", "'tier=' is not name=number"),
        ("=5", "'=5' is not name=number"),
        ("tier=1000;risk=100", "'1000;risk=100' in 'tier=1000;risk=100' is not a number"),
        ("urgency=3", "unknown weight 'urgency'"),
        ("tier=lots", "'lots' in 'tier=lots' is not a number"),
        ("tier=1,tier=2", "'tier' is given twice"),
        ("risk=nan", "'nan' in 'risk=nan' is not a finite number"),
        ("absence_rate=inf", "not a finite number"),
    ],
)
def test_weights_from_string_errors_name_the_bad_part(text, message):
    with pytest.raises(ValueError, match="priority weights") as err:
        PriorityWeights.from_string(text)
    assert message in str(err.value)


def test_weights_round_trip_through_their_string():
    weights = PriorityWeights(tier=2500, risk=120.5, absence_rate=7)
    assert str(weights) == "tier=2500,risk=120.5,absence_rate=7"
    assert PriorityWeights.from_string(str(weights)) == weights
    assert str(DEFAULT_WEIGHTS) == "tier=1000,risk=100,absence_rate=99"
    with pytest.raises(ValueError, match="finite"):
        PriorityWeights(tier=float("inf"))


# --- reasons ------------------------------------------------------------------------------------


def test_reasons_for_representative_students():
    ranking = rank(
        [
            {"student_id": 1, "rate": 14 / 60, "absent": 14, "enrolled": 60, "truancy": 7, "letter": 2},
            {"student_id": 2, "rate": 1 / 58, "absent": 1, "enrolled": 58},
            {"student_id": 3, "rate": 4 / 60, "absent": 4, "enrolled": 60, "truancy": 2},
            {"student_id": 4, "rate": None},
            {"student_id": 5, "rate": 7 / 60, "absent": 7, "enrolled": 60, "truancy": 1, "letter": 1},
            {"student_id": 6, "rate": 29 / 100, "absent": 29, "enrolled": 100},
            {"student_id": 7, "rate": 0.0, "absent": 0, "enrolled": 1},
            {"student_id": 8, "rate": 11 / 111, "absent": 11, "enrolled": 111},
        ],
        [
            (1, "2 Grade Levels Below", "1 Grade Level Below", "HIGH"),
            (3, "Mid or Above Grade Level", "Early On Grade Level", "LOW"),
            (4, None, "3 or More Grade Levels Below", "HIGH"),
            (5, "Early On Grade Level", "2 Grade Levels Below", "HIGH"),
            (6, "Early On Grade Level", None, "LOW"),
            (7, None, None, "MEDIUM"),
        ],
    )
    assert reasons_of(ranking) == {
        1: "severe chronic absence 23% (14 of 60 days); reading 2 grade levels below; "
        "math 1 grade level below; truancy letter 2 (7 days)",
        2: "satisfactory attendance 1% (1 of 58 days); no i-Ready results",
        3: "at-risk attendance 6% (4 of 60 days); reading and math on grade level",
        4: "satisfactory attendance, no enrolled days yet; math 3+ grade levels below; no reading result",
        5: "moderate chronic absence 11% (7 of 60 days); math 2 grade levels below; truancy letter 1 (1 day)",
        6: "severe chronic absence 29% (29 of 100 days); reading on grade level; no math result",
        7: "satisfactory attendance 0% (0 of 1 day); academic risk medium",
        # 9.9% is at_risk: the percent is truncated so it never shows 10%.
        8: "at-risk attendance 9% (11 of 111 days)" + "; no i-Ready results",
    }


def test_reasons_never_read_names():
    assert set(reasons_expr().meta.root_names()) <= set(REASON_COLUMNS)
    assert not {"first_name", "last_name"} & set(REASON_COLUMNS)
    ranking = rank([{"student_id": i, "rate": i / 100} for i in range(30)], [(i, "HIGH") for i in range(0, 30, 2)])
    text = " ".join(ranking.get_column("reasons").to_list())
    assert "Zebulon" not in text and "Quixote" not in text
    assert not {"first_name", "last_name"} & set(ranking.columns)


def test_reasons_expr_works_on_a_bare_frame_and_quotes_an_odd_placement():
    df = pl.DataFrame(
        {
            "attendance_tier": ["at_risk"],
            "absence_rate": [0.07],
            "days_absent": [None],
            "days_enrolled": [None],
            "overall_risk": ["MEDIUM"],
            "ela_relative_placement": ["4 Grade Levels Below"],
            "math_relative_placement": ["Mid or Above Grade Level"],
            "truancy_count": [None],
            "truancy_letter_level": [3],
        },
        schema_overrides={"days_absent": pl.Int32, "days_enrolled": pl.Int32, "truancy_count": pl.Int32},
    )
    assert df.select(reasons_expr()).item() == "at-risk attendance 7%; reading 4 grade levels below; truancy letter 3"


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


def random_district(rng: random.Random, schools: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows, risk_rows = [], {}
    for school in rng.sample(range(1, 10_000), schools):
        n = rng.randint(1, 25)
        for sid in rng.sample(range(1, 400), n):  # small id space: students shared between schools
            enrolled = rng.choice([0, rng.randint(1, 30), rng.randint(31, 180)])
            absent = rng.choice([0, rng.randint(0, enrolled), enrolled // 10, (enrolled + 9) // 10])
            rate = absent / enrolled if enrolled else None
            rows.append({"student_id": sid, "school": school, "rate": rate, "absent": absent, "enrolled": enrolled})
            if sid not in risk_rows and rng.random() < 0.8:
                ela = rng.choice([None, *PLACEMENT_BY_RISK.values(), "3 or More Grade Levels Below"])
                math = rng.choice([None, *PLACEMENT_BY_RISK.values(), "Mid or Above Grade Level"])
                worst = max((RISK_ORDER[RISK_BY_RELATIVE_PLACEMENT[p]] for p in (ela, math) if p), default=0)
                overall = {v: k for k, v in RISK_ORDER.items()}[worst]
                risk_rows[sid] = (sid, ela, math, rng.choice([overall, None]) if worst == 0 else overall)
    return summary(rows), risks(list(risk_rows.values()))


def contract_key(row: dict) -> tuple:
    rate = row["absence_rate"]
    return (
        -TIER_ORDER[row["attendance_tier"]],
        -RISK_ORDER[row["overall_risk"] or "UNKNOWN"],
        rate is None,
        -(rate or 0.0),
        row["student_id"],
    )


def expected_orders(s: pl.DataFrame, r: pl.DataFrame, key) -> dict[int, list[int]]:
    risk_by_id = {row["student_id"]: row["overall_risk"] for row in r.iter_rows(named=True)}
    by_school: dict[int, list[dict]] = {}
    for row in s.iter_rows(named=True):
        row["overall_risk"] = risk_by_id.get(row["student_id"])
        by_school.setdefault(row["school_code"], []).append(row)
    return {school: [row["student_id"] for row in sorted(rows, key=key)] for school, rows in by_school.items()}


def actual_orders(ranking: pl.DataFrame) -> dict[int, list[int]]:
    grouped = ranking.group_by("school_code").agg(pl.col("student_id").sort_by("rank"))
    return dict(grouped.iter_rows())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_schools_match_a_plain_sort_by_the_contract_key(seed):
    rng = random.Random(seed)
    s, r = random_district(rng, schools=150)
    ranking = intervention_ranking(
        s.sample(fraction=1.0, shuffle=True, seed=seed), r, school_year=YEAR, computed_at=NOW
    )
    assert ranking.height == s.height
    assert actual_orders(ranking) == expected_orders(s, r, contract_key)
    assert ranking_problems(ranking) == []
    # Ranks are 1..n in row order within each school, and the score never rises.
    assert ranking.select((pl.col("rank") == pl.int_range(1, pl.len() + 1).over("school_code")).all()).item()


@pytest.mark.parametrize("seed", [4, 5])
def test_random_schools_with_custom_weights_order_by_score_then_contract_key(seed):
    rng = random.Random(seed)
    weights = PriorityWeights(tier=rng.uniform(0, 50), risk=rng.uniform(0, 50), absence_rate=rng.uniform(0, 200))
    s, r = random_district(rng, schools=150)
    ranking = intervention_ranking(s, r, school_year=YEAR, weights=weights, computed_at=NOW)
    score = {(row["school_code"], row["student_id"]): row["priority_score"] for row in ranking.iter_rows(named=True)}
    risk_by_id = dict(r.select("student_id", "overall_risk").iter_rows())
    for row in s.iter_rows(named=True):  # the formula, by hand
        rate = min(max(row["absence_rate"] or 0.0, 0.0), 1.0)
        level = RISK_ORDER[risk_by_id.get(row["student_id"]) or "UNKNOWN"]
        assert score[(row["school_code"], row["student_id"])] == pytest.approx(
            TIER_ORDER[row["attendance_tier"]] * weights.tier + level * weights.risk + rate * weights.absence_rate
        )

    def key(row: dict) -> tuple:
        return (-score[(row["school_code"], row["student_id"])], *contract_key(row))

    assert actual_orders(ranking) == expected_orders(s, r, key)
    assert ranking_problems(ranking) == []
