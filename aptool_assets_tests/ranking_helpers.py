"""Helpers for the intervention-ranking tests: hand-built attendance-summary and academic-risk frames
(every student named Zebulon Quixote, a name that must never reach the reasons), the ranking of them,
and the order and reasons it gives."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl

from aptool_assets.rules.enrollment import ENROLLMENT_SCHEMA
from aptool_assets.rules.ranking import intervention_ranking

YEAR = 2025
S1, S2 = 101, 202
NOW = datetime(2025, 10, 1, 12, 0, tzinfo=UTC)
AS_OF = date(2025, 10, 1)

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
    "as_of_date": pl.Date,
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
    """rows: dicts with student_id and optional school/rate/tier/absent/enrolled/truancy/letter/as_of."""
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
                "as_of_date": r.get("as_of", AS_OF),
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


def stints(rows: list[tuple]) -> pl.DataFrame:
    """An enrollment frame; rows: (student_id, school_code, enter_date, leave_date or None)."""
    return pl.DataFrame(rows, schema=ENROLLMENT_SCHEMA, orient="row")


def reference_enrollment(rows: list[tuple], student_id: int, school: int, as_of: date) -> tuple[bool, date | None]:
    """(is_enrolled, left_on) written plainly (contract §4.4): enrolled when a stint at that school
    includes the as-of date (leave date inclusive, open while None); left_on, for a student not enrolled,
    the latest leave date before the as-of date."""
    mine = [(enter, leave) for sid, sc, enter, leave in rows if (sid, sc) == (student_id, school)]
    enrolled = any(enter is not None and enter <= as_of and (leave is None or leave >= as_of) for enter, leave in mine)
    left = [leave for _, leave in mine if leave is not None and leave < as_of]
    return enrolled, (max(left) if left and not enrolled else None)


def enrollment_prefix(enrolled: bool, left_on: date | None, as_of: date) -> str | None:
    """How ``reasons`` must start for a student who is not enrolled; None for an enrolled one."""
    if enrolled:
        return None
    return f"left on {left_on.isoformat()}; " if left_on else f"not enrolled on {as_of.isoformat()}; "
