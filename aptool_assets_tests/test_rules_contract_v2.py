"""The contract's second version of the attendance and ranking rules (§3, §4.1, §4.4), boundary by boundary
on hand-built frames: codes the school's table lacks come from the district-wide table (SchoolCode 0),
per-school-year code tables, codes in no table counted as unverified absences, suspension codes that never
count toward truancy, and students who left ranked after every enrolled student with "left on ..." first
in their reasons. The randomized comparisons with plain references are in test_attendance_rules_reference.py
and test_ranking_rules_order.py."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from aptool_assets.rules.attendance import DISTRICT_SCHOOL_CODE, categorize_attendance, student_attendance_summary
from aptool_assets.rules.enrollment import enrollment_on
from aptool_assets.rules.ranking import DEFAULT_WEIGHTS, PriorityWeights, intervention_ranking, ranking_problems
from aptool_assets_tests import ranking_helpers as rh
from aptool_assets_tests.attendance_helpers import (
    FIRST_DAY,
    S1,
    S2,
    YEAR,
    attendance_frame,
    calendar_frame,
    codes_frame,
    enrollment_frame,
    summarize,
    weekdays,
)

DISTRICT = DISTRICT_SCHOOL_CODE
# (code, type_code, counts_for_ada, is_suspension, is_partial_day_truant, is_temporarily_not_enrolled)
UNEXCUSED = ("U", 3, False, False, False, False)
TARDY_TRUANT = ("B", 5, True, False, True, False)  # tardy 30+ minutes: partial-day truant, not a suspension


def categories(att: pl.DataFrame, codes: pl.DataFrame) -> list[tuple]:
    """(absence_category, is_full_day_absence, is_truancy_day, unknown_code) per attendance row."""
    out = categorize_attendance(att, codes)
    return out.select("absence_category", "is_full_day_absence", "is_truancy_day", "unknown_code").rows()


# --- the district-wide table (SchoolCode 0) ---------------------------------------------------------


def test_issue_example_a_suspension_under_a_district_only_code_makes_two_of_ten_severe_chronic():
    """One real absence and one suspension whose code only the district table defines, 10 enrolled days
    (20 school days on the calendar, the as-of date the 10th): 2/10 → severe_chronic. Before, the code was
    unknown and dropped: 1/10 → moderate_chronic. The suspension has TypeCode 3 and still is no truancy."""
    days = weekdays(20)
    codes = pl.concat(
        [
            codes_frame(S1, [UNEXCUSED]),
            codes_frame(DISTRICT, [("K", 3, False, True, False, False)]),  # out-of-school suspension
        ]
    )
    att = attendance_frame([(1, S1, days[2], "U", None), (1, S1, days[5], "K", None), (1, S1, days[15], "K", None)])
    assert categories(att, codes)[:2] == [
        ("absent_unexcused", True, True, None),
        ("suspension_out_of_school", True, False, None),
    ]
    row = summarize(
        calendar=calendar_frame(S1, days),
        enrollment=enrollment_frame([(1, S1, FIRST_DAY, None)]),
        attendance=att,
        codes=codes,
        as_of=days[9],
    )[(1, S1)]
    assert (row["days_enrolled"], row["days_absent"], row["absence_rate"]) == (10, 2, 0.2)
    assert (row["days_unexcused"], row["days_suspension_out_of_school"], row["days_unverified"]) == (1, 1, 0)
    assert row["attendance_tier"] == "severe_chronic"
    assert row["truancy_count"] == 1


def test_a_school_code_overrides_the_district_meaning_of_the_same_letter():
    """S1 defines X and A itself; S2 has a table without them, so it inherits the district's meaning.
    The school's row replaces the district's whole definition, flags included, all-day and per period."""
    codes = pl.concat(
        [
            codes_frame(DISTRICT, [("X", 2, False, True, False, False), ("A", 2, False, False, False, False)]),
            codes_frame(S1, [("X", 3, False, False, False, False), ("A", 1, False, False, False, False)]),
            codes_frame(S2, [("T", 5, True, False, False, False)]),
        ]
    )
    att = attendance_frame(
        [
            (1, S1, FIRST_DAY, "X", None),
            (1, S1, FIRST_DAY, "A", None),
            (1, S1, FIRST_DAY, None, ["X"]),
            (2, S2, FIRST_DAY, "X", None),
            (2, S2, FIRST_DAY, "A", None),
            (2, S2, FIRST_DAY, None, ["X", "T"]),
        ]
    )
    assert categories(att, codes) == [
        ("absent_unexcused", True, True, None),  # S1: X is unexcused
        ("absent_unverified", True, False, None),
        ("partial", False, True, None),  # a cut period at S1
        ("suspension_out_of_school", True, False, None),  # S2: the district's X is a suspension
        ("absent_excused", True, False, None),
        ("partial", False, False, None),
    ]


def test_a_district_code_on_a_school_without_any_table():
    codes = codes_frame(DISTRICT, [UNEXCUSED])
    assert categories(attendance_frame([(1, S2, FIRST_DAY, "U", None)]), codes) == [
        ("absent_unexcused", True, True, None)
    ]


# --- per-school-year code tables --------------------------------------------------------------------


def year_codes() -> pl.DataFrame:
    """2024: X excused at S1, Y unverified district-wide. 2025: X unexcused at S1, no Y. 2026: nothing."""
    return pl.concat(
        [
            codes_frame(S1, [("X", 2, False, False, False, False)], year=2024),
            codes_frame(DISTRICT, [("Y", 1, False, False, False, False)], year=2024),
            codes_frame(S1, [("X", 3, False, False, False, False)], year=2025),
        ]
    )


def test_the_same_letter_means_what_its_school_years_table_says():
    att = attendance_frame(
        [
            (1, S1, date(2025, 6, 30), "X", None),  # school year 2024
            (1, S1, date(2025, 7, 1), "X", None),  # school year 2025
            (1, S1, date(2026, 6, 30), "X", None),  # still 2025
            (1, S1, date(2025, 6, 30), "Y", None),
            (1, S1, date(2025, 5, 1), None, ["X"]),
            (1, S1, date(2025, 9, 1), None, ["X"]),
        ]
    )
    assert categories(att, year_codes()) == [
        ("absent_excused", True, False, None),
        ("absent_unexcused", True, True, None),
        ("absent_unexcused", True, True, None),
        ("absent_unverified", True, False, None),  # the district's 2024 table
        ("partial", False, False, None),  # an excused period in 2024
        ("partial", False, True, None),  # an unexcused period in 2025
    ]


def test_a_code_missing_from_its_years_tables_is_unknown_code():
    """Y exists only in 2024's table and X only until 2025: a 2025 Y, or any code of 2026 (a year without
    any table), is ``unknown_code``; another year's definition is never borrowed."""
    att = attendance_frame(
        [
            (1, S1, date(2025, 9, 1), "Y", None),
            (1, S1, date(2026, 7, 1), "X", None),
            (1, S1, date(2026, 7, 1), None, ["X"]),
        ]
    )
    assert categories(att, year_codes()) == [
        ("unknown_code", True, False, "Y"),
        ("unknown_code", True, False, "X"),
        ("partial", False, False, "X"),
    ]
    days = weekdays(20)
    row = summarize(
        calendar=calendar_frame(S1, days),
        enrollment=enrollment_frame([(1, S1, FIRST_DAY, None)]),
        attendance=attendance_frame(
            [(1, S1, days[0], "X", None), (1, S1, days[1], "X", None), (1, S1, days[2], "Y", None)]
        ),
        codes=year_codes(),
    )[(1, S1)]
    assert (row["days_unexcused"], row["days_unverified"], row["days_absent"], row["truancy_count"]) == (2, 1, 3, 2)


# --- codes in no table ------------------------------------------------------------------------------


def test_an_unknown_code_is_a_full_day_unverified_absence_but_never_truancy():
    days = weekdays(31)
    att = attendance_frame(
        [
            (1, S1, days[0], "Q", None),
            (1, S1, days[1], "Q", None),
            (1, S1, days[2], " Q ", None),  # trimmed like every code
            (1, S1, days[3], "Q", ["U"]),  # the unexcused period still counts
            (1, S1, days[4], "E", ["Q"]),  # an unknown period: the day stays excused
            (1, S1, days[5], None, ["R", "Q", "T"]),  # the smallest unknown period code is named
        ]
    )
    codes = codes_frame(S1)
    assert categories(att, codes) == [
        ("unknown_code", True, False, "Q"),
        ("unknown_code", True, False, "Q"),
        ("unknown_code", True, False, "Q"),
        ("unknown_code", True, True, "Q"),
        ("absent_excused", True, False, "Q"),
        ("partial", False, False, "Q"),
    ]
    row = summarize(
        calendar=calendar_frame(S1, days), enrollment=enrollment_frame([(1, S1, FIRST_DAY, None)]), attendance=att
    )[(1, S1)]
    assert (row["days_unverified"], row["days_excused"], row["days_absent"], row["days_enrolled"]) == (4, 1, 5, 31)
    assert (row["truancy_count"], row["is_chronically_absent"], row["attendance_tier"]) == (1, True, "moderate_chronic")


# --- suspension codes never count toward truancy ----------------------------------------------------


def test_a_suspension_code_with_typecode_3_is_never_truancy_but_other_codes_still_are():
    codes = codes_frame(
        S1,
        [
            ("S3", 3, False, True, False, False),  # out-of-school suspension, TypeCode 3
            ("I3", 3, True, True, False, False),  # in-school suspension, TypeCode 3
            ("E", 2, False, False, False, False),
            UNEXCUSED,
            TARDY_TRUANT,
        ],
    )
    rows = [
        ("S3", None, "suspension_out_of_school", False),
        ("I3", None, "suspension_in_school", False),
        (None, ["S3"], "partial", False),
        (None, ["I3", "S3"], "partial", False),
        ("E", ["S3"], "absent_excused", False),
        ("U", None, "absent_unexcused", True),  # an unexcused non-suspension code still counts
        (None, ["U"], "partial", True),
        (None, ["B"], "partial", True),  # partial-day truant flag on a non-suspension period code
        ("S3", ["B"], "suspension_out_of_school", True),  # the suspension adds nothing, the B period counts
    ]
    days = weekdays(40)
    att = attendance_frame([(1, S1, days[i], code, periods) for i, (code, periods, _, _) in enumerate(rows)])
    out = categorize_attendance(att, codes)
    assert out["absence_category"].to_list() == [r[2] for r in rows]
    assert out["is_truancy_day"].to_list() == [r[3] for r in rows]
    row = summarize(
        calendar=calendar_frame(S1, days),
        enrollment=enrollment_frame([(1, S1, FIRST_DAY, None)]),
        attendance=att,
        codes=codes,
    )[(1, S1)]
    assert (row["truancy_count"], row["truancy_letter_level"]) == (4, 1)
    assert (row["days_suspension_out_of_school"], row["days_suspension_in_school"]) == (2, 1)


def test_a_suspension_code_flagged_partial_day_truant_is_no_truancy_either():
    """The implementation reads §4.1 as "a suspension never counts", the IsPartialDayTruant flag included."""
    codes = codes_frame(S1, [("SP", 2, False, True, True, False), ("IP", 6, True, True, True, False)])
    att = attendance_frame(
        [(1, S1, FIRST_DAY, "SP", None), (1, S1, FIRST_DAY, "IP", None), (1, S1, FIRST_DAY, None, ["SP", "IP"])]
    )
    assert categorize_attendance(att, codes)["is_truancy_day"].to_list() == [False, False, False]


# --- ranking: who left ranks last ------------------------------------------------------------------


def test_a_student_who_left_after_30_days_with_4_absences_ranks_below_every_enrolled_student():
    days = weekdays(60)
    enrollment = enrollment_frame(
        [(1, S1, FIRST_DAY, days[29]), (2, S1, FIRST_DAY, None), (3, S1, FIRST_DAY, None), (4, S1, FIRST_DAY, None)]
    )
    absences = (
        [(1, days[i], "U") for i in (3, 8, 12, 20)] + [(3, days[5], "U")] + [(4, days[i], "A") for i in (1, 2, 3)]
    )
    summary = student_attendance_summary(
        calendar=calendar_frame(S1, days),
        enrollment=enrollment,
        attendance=attendance_frame([(sid, S1, d, code, None) for sid, d, code in absences]),
        absence_codes=codes_frame(S1),
        school_year=YEAR,
        as_of_date=days[59],
    )
    risk = rh.risks([(1, "2 Grade Levels Below", None, "HIGH")])
    ranking = intervention_ranking(summary, risk, school_year=YEAR, enrollment=enrollment, computed_at=rh.NOW)
    assert rh.order(ranking) == [4, 3, 2, 1]  # 13% and HIGH risk, yet after a 0% student
    left = ranking.filter(pl.col("student_id") == 1).row(0, named=True)
    assert (left["is_enrolled"], left["days_enrolled"], left["attendance_tier"]) == (False, 30, "moderate_chronic")
    assert left["days_enrolled"] == summary.filter(pl.col("student_id") == 1).item(0, "days_enrolled")
    assert left["reasons"] == (
        f"left on {days[29].isoformat()}; moderate chronic absence 13% (4 of 30 days); reading 2 grade levels below; "
        "no math result; truancy letter 1 (4 days)"
    )
    enrolled = ranking.filter(pl.col("is_enrolled"))
    assert enrolled.height == 3 and enrolled.get_column("priority_score").min() > left["priority_score"]
    assert ranking_problems(ranking) == []


def stint_ranking(stint_rows: list[tuple], n: int) -> pl.DataFrame:
    """Students 1..n at S1, all severe chronic (the same rate), ranked with ``stint_rows``."""
    rows = [{"student_id": sid, "rate": 0.25, "absent": 15, "enrolled": 60} for sid in range(1, n + 1)]
    return rh.rank(rows, enrollment=rh.stints(stint_rows))


def facts(ranking: pl.DataFrame) -> dict[int, tuple]:
    return {r["student_id"]: (r["is_enrolled"], r["reasons"].split(";")[0]) for r in ranking.iter_rows(named=True)}


def test_leave_date_on_the_as_of_date_counts_as_enrolled():
    as_of = rh.AS_OF
    ranking = stint_ranking(
        [(1, S1, as_of - timedelta(30), as_of), (2, S1, as_of - timedelta(30), as_of - timedelta(1))], 2
    )
    assert facts(ranking) == {
        1: (True, "severe chronic absence 25% (15 of 60 days)"),
        2: (False, f"left on {(as_of - timedelta(1)).isoformat()}"),
    }
    assert rh.order(ranking) == [1, 2]


def test_a_student_who_left_and_came_back_is_enrolled():
    """Two stints: left, re-entered before the as-of date (enrolled, no "left on"); re-entering only after
    it leaves the student not enrolled, with the earlier leave date."""
    as_of = rh.AS_OF
    stint_rows = [
        (2, S1, as_of - timedelta(100), as_of - timedelta(50)),
        (2, S1, as_of - timedelta(20), None),
        (1, S1, as_of - timedelta(100), as_of - timedelta(50)),
        (1, S1, as_of + timedelta(5), None),
    ]
    ranking = stint_ranking(stint_rows, 2)
    assert facts(ranking) == {
        1: (False, f"left on {(as_of - timedelta(50)).isoformat()}"),
        2: (True, "severe chronic absence 25% (15 of 60 days)"),
    }
    assert rh.order(ranking) == [2, 1]


def test_a_student_without_a_stint_at_the_school_is_not_enrolled_there():
    """No stint at all, a stint only at another school, or one that starts after the as-of date: not
    enrolled, and no leave date to name, so the reasons say "not enrolled on <as-of date>"."""
    as_of = rh.AS_OF
    stint_rows = [(2, S2, as_of - timedelta(30), None), (3, S1, as_of + timedelta(1), None), (4, S1, as_of, None)]
    ranking = stint_ranking(stint_rows, 4)
    not_enrolled = (False, f"not enrolled on {as_of.isoformat()}")
    assert facts(ranking) == {
        1: not_enrolled,
        2: not_enrolled,
        3: not_enrolled,
        4: (True, "severe chronic absence 25% (15 of 60 days)"),
    }
    assert rh.order(ranking) == [4, 1, 2, 3]
    assert ranking.get_column("days_enrolled").to_list() == [60] * 4  # the summary's, whatever the stints


def test_ranking_with_enrollment_needs_the_summarys_as_of_date():
    with pytest.raises(ValueError, match=r"lacks columns \['as_of_date'\]"):
        intervention_ranking(
            rh.summary([{"student_id": 1, "rate": 0.1}]).drop("as_of_date"),
            rh.risks([]),
            school_year=YEAR,
            enrollment=rh.stints([]),
        )


def test_enrollment_on_directly():
    as_of = date(2025, 10, 1)
    enrollment = enrollment_frame(
        [
            (1, S1, date(2025, 8, 1), None),  # open
            (2, S1, date(2025, 8, 1), date(2025, 9, 1)),  # left
            (2, S1, date(2025, 9, 10), date(2025, 9, 20)),  # came back, left again: the latest leave
            (3, S1, date(2025, 8, 1), as_of),  # leave date inclusive
            (4, S2, date(2025, 8, 1), None),  # another school only
            (5, S1, date(2025, 10, 2), None),  # enters the day after
            (6, S1, date(2025, 8, 1), date(2025, 9, 1)),
            (6, S1, date(2025, 9, 15), None),  # re-entered: enrolled, no leave date shown
        ]
    )
    students = pl.DataFrame(
        {
            "student_id": [6, 5, 4, 3, 2, 1, 2, 7],
            "school_code": [S1] * 8,
            "as_of_date": [as_of] * 6 + [date(2025, 9, 15), as_of],
        }
    )
    out = enrollment_on(enrollment, students)
    assert out.columns == ["student_id", "school_code", "as_of_date", "is_enrolled", "left_on"]
    assert out.dtypes == [pl.Int64, pl.Int32, pl.Date, pl.Boolean, pl.Date]
    assert out.select("student_id", "is_enrolled", "left_on").rows() == [
        (6, True, None),
        (5, False, None),
        (4, False, None),
        (3, True, None),
        (2, False, date(2025, 9, 20)),
        (1, True, None),
        (2, True, None),  # the same student on another as-of date: inside the second stint
        (7, False, None),  # no stint at all
    ]


# --- priority score with the new default weights ----------------------------------------------------


def test_priority_score_is_monotone_with_rank_with_the_new_default_weights():
    """Students who left (severe, HIGH risk among them) score below every enrolled student, and the score
    never rises as the rank goes down."""
    as_of = rh.AS_OF
    students = [
        (1.0, "HIGH", False),
        (0.9, "MEDIUM", False),
        (0.0, "UNKNOWN", True),
        (None, "LOW", True),
        (0.3, "HIGH", True),
        (0.06, "LOW", True),
        (0.12, "UNKNOWN", False),
        (None, "HIGH", False),
        (0.04, "MEDIUM", True),
    ]
    rows, risk_rows, stint_rows = [], [], []
    for sid, (rate, risk, stays) in enumerate(students, start=1):
        rows.append({"student_id": sid, "rate": rate})
        risk_rows.append((sid, risk))
        stint_rows.append((sid, S1, as_of - timedelta(60), None if stays else as_of - timedelta(sid)))
    ranking = rh.rank(rows, risk_rows, enrollment=rh.stints(stint_rows))
    by_rank = ranking.sort("rank")
    assert rh.order(ranking) == [5, 6, 9, 4, 3, 1, 2, 7, 8]
    scores = by_rank.get_column("priority_score").to_list()
    assert scores == sorted(scores, reverse=True)
    assert by_rank.get_column("is_enrolled").to_list() == [True] * 5 + [False] * 4
    assert min(scores[:5]) > max(scores[5:])
    assert ranking_problems(ranking) == []


def test_the_enrolled_weight_must_outweigh_every_other_level_together():
    assert str(DEFAULT_WEIGHTS) == "enrolled=10000,tier=1000,risk=100,absence_rate=99"
    assert PriorityWeights(enrolled=3400).preserves_contract_order()
    assert not PriorityWeights(enrolled=3399).preserves_contract_order()  # = 3·1000 + 3·100 + 99


def test_with_an_enrolled_weight_of_zero_enrollment_still_breaks_score_ties():
    """Custom weights that ignore leaving: the score comes first, then the contract keys, enrolled first."""
    as_of = rh.AS_OF
    stint_rows = [(1, S1, as_of - timedelta(60), as_of - timedelta(1)), (2, S1, as_of - timedelta(60), None)]
    rows = [{"student_id": sid, "rate": 0.25} for sid in (1, 2)] + [{"student_id": 3, "rate": 0.5}]
    ranking = rh.rank(rows, enrollment=rh.stints(stint_rows), weights=PriorityWeights(enrolled=0))
    scores = dict(ranking.select("student_id", "priority_score").iter_rows())
    assert scores[1] == scores[2] < scores[3]
    assert rh.order(ranking) == [3, 2, 1]  # 3 has no stint: not enrolled, but the highest score
