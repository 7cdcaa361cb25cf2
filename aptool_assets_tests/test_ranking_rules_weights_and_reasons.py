"""Intervention ranking (contract §4.4): the priority score and its weights (the defaults, weights that
break the contract order, parsing them from a string) and the plain-language reasons of each student.

Without enrollment stints every student counts as enrolled, so each score below carries the enrolled
weight; the ranking with stints (students who left) is in test_rules_contract_v2.py."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from aptool_assets.rules.ranking import DEFAULT_WEIGHTS, PriorityWeights, priority_score_expr, ranking_problems
from aptool_assets.rules.reasons import REASON_COLUMNS, reasons_expr
from aptool_assets_tests.ranking_helpers import order, rank, reasons_of

# --- priority score and weights -----------------------------------------------------------------


def test_default_scores_are_monotone_and_follow_the_formula():
    """enrolled · 1 + tier · TIER_ORDER + risk · RISK_ORDER + absence_rate · rate, defaults 10000/1000/100/99."""
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
    assert scores == {
        1: 10000 + 3000 + 300 + 0.23 * 99,
        2: 10000 + 3000 + 200 + 0.5 * 99,
        3: 10000.0,
        4: 10000 + 3000 + 99.0,
    }
    by_rank = ranking.sort("rank").get_column("priority_score").to_list()
    assert by_rank == sorted(by_rank, reverse=True)


def test_score_expr_reads_null_rate_as_zero_clips_the_rate_and_nulls_unknown_values():
    """The expression now also reads is_enrolled (contract §4.4 change): a student who left loses the
    enrolled weight; the other levels score as before."""
    df = pl.DataFrame(
        {
            "is_enrolled": [True, True, False, True, True, False],
            "attendance_tier": ["at_risk", "at_risk", "at_risk", "satisfactory", "weird", "severe_chronic"],
            "overall_risk": [None, "LOW", "LOW", "nope", "LOW", "HIGH"],
            "absence_rate": [None, 1.7, float("nan"), 0.0, 0.0, 1.0],
        }
    )
    assert df.select(priority_score_expr()).to_series().to_list() == [11000.0, 11199.0, 1100.0, None, None, 3399.0]
    assert "is_enrolled" in priority_score_expr().meta.root_names()


def test_default_weights_preserve_the_contract_order():
    """The defaults gained ``enrolled`` (first field, contract §4.4 change): 10000, 1000, 100, 99."""
    assert PriorityWeights(10000, 1000, 100, 99) == DEFAULT_WEIGHTS
    assert PriorityWeights(tier=1000, risk=100, absence_rate=99) == DEFAULT_WEIGHTS
    assert DEFAULT_WEIGHTS.preserves_contract_order()
    # The tightest case: the best of a lower level against the worst of the level above.
    assert (
        DEFAULT_WEIGHTS.enrolled * 1
        > DEFAULT_WEIGHTS.tier * 3 + DEFAULT_WEIGHTS.risk * 3 + DEFAULT_WEIGHTS.absence_rate
    )
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
        PriorityWeights(enrolled=3399),  # enrolled = 3·tier + 3·risk + rate: not strictly above
        PriorityWeights(enrolled=0),  # leaving ignored
        PriorityWeights(enrolled=-10000),  # who left first
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
    # Every student counts as enrolled here, so each score carries the default enrolled weight.
    assert scores[2] == pytest.approx(10090.0) and scores[1] == pytest.approx(10058.0)
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
    assert ranking.get_column("priority_score").to_list() == [10002.0, 10002.0, 10002.0]  # + enrolled weight
    assert order(ranking) == [3, 2, 1]  # tier, then rate: 3 before 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, DEFAULT_WEIGHTS),
        ("", DEFAULT_WEIGHTS),
        ("   ", DEFAULT_WEIGHTS),
        ("tier=1000,risk=100,absence_rate=99", DEFAULT_WEIGHTS),
        ("enrolled=10000,tier=1000,risk=100,absence_rate=99", DEFAULT_WEIGHTS),
        (" tier = 5000 , risk=200 ", PriorityWeights(tier=5000, risk=200)),
        ("absence_rate=0.5,", PriorityWeights(absence_rate=0.5)),
        ("risk=1e2,tier=2E3", PriorityWeights(tier=2000, risk=100)),
        ("enrolled=20000", PriorityWeights(20000, 1000, 100, 99)),
        ("absence_rate=1,enrolled=0", PriorityWeights(enrolled=0, absence_rate=1)),
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
        ("enrolled=yes", "'yes' in 'enrolled=yes' is not a number"),
        ("risk=nan", "'nan' in 'risk=nan' is not a finite number"),
        ("absence_rate=inf", "not a finite number"),
    ],
)
def test_weights_from_string_errors_name_the_bad_part(text, message):
    with pytest.raises(ValueError, match="priority weights") as err:
        PriorityWeights.from_string(text)
    assert message in str(err.value)


def test_weights_round_trip_through_their_string_which_now_starts_with_enrolled():
    """Contract §4.4 change: the string form leads with the enrolled weight."""
    weights = PriorityWeights(tier=2500, risk=120.5, absence_rate=7)
    assert str(weights) == "enrolled=10000,tier=2500,risk=120.5,absence_rate=7"
    assert PriorityWeights.from_string(str(weights)) == weights
    assert str(DEFAULT_WEIGHTS) == "enrolled=10000,tier=1000,risk=100,absence_rate=99"
    assert PriorityWeights.from_string(str(PriorityWeights(enrolled=4e4))) == PriorityWeights(enrolled=40000)
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


def test_reasons_expr_on_a_bare_frame_needs_the_enrollment_columns_and_quotes_an_odd_placement():
    """Contract §4.4 change: reasons now start with the enrollment, so a bare frame needs is_enrolled,
    left_on and as_of_date besides the old columns (without them the expression cannot run)."""
    df = pl.DataFrame(
        {
            "attendance_tier": ["at_risk"] * 5,
            "absence_rate": [0.07] * 5,
            "days_absent": [None] * 5,
            "days_enrolled": [None] * 5,
            "overall_risk": ["MEDIUM"] * 5,
            "ela_relative_placement": ["4 Grade Levels Below"] * 5,
            "math_relative_placement": ["Mid or Above Grade Level"] * 5,
            "truancy_count": [None] * 5,
            "truancy_letter_level": [3] * 5,
        },
        schema_overrides={"days_absent": pl.Int32, "days_enrolled": pl.Int32, "truancy_count": pl.Int32},
    )
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        df.select(reasons_expr())
    rest = "at-risk attendance 7%; reading 4 grade levels below; truancy letter 3"
    enrollment = pl.DataFrame(
        {
            "is_enrolled": [True, None, False, False, False],
            "left_on": [None, None, date(2025, 9, 30), None, None],
            "as_of_date": [date(2025, 10, 1)] * 3 + [date(2025, 10, 2), None],
        }
    )
    assert pl.concat([df, enrollment], how="horizontal").select(reasons_expr()).to_series().to_list() == [
        rest,
        rest,  # a null is_enrolled says nothing about leaving
        "left on 2025-09-30; " + rest,
        "not enrolled on 2025-10-02; " + rest,
        "not enrolled; " + rest,
    ]
