"""Attendance rules (contract §4.1): the fast implementation against a slow reference written plainly
below (one Python set entry per enrolled day) on a few hundred seeded random districts: per-school code
tables over a district-wide table (SchoolCode 0), per-school-year tables, codes in no table, suspension
codes of every TypeCode, and students who left before the as-of date (also ranked, contract §4.4)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, timedelta

import polars as pl
import pytest

from aptool_assets.rules.attendance import (
    ABSENCE_CODES_SCHEMA,
    SUMMARY_SCHEMA,
    categorize_attendance,
    student_attendance_summary,
)
from aptool_assets.rules.enrollment import CALENDAR_SCHEMA
from aptool_assets.rules.ranking import intervention_ranking
from aptool_assets_tests.attendance_helpers import YEAR, attendance_frame, enrollment_frame
from aptool_assets_tests.ranking_helpers import NOW, enrollment_prefix, reference_enrollment, risks

# --- property: fast == slow reference on random districts ------------------------------------

DISTRICT = 0  # Aeries' district pseudo-school: its table holds the district-wide definitions
FULL_DAY = {"absent_unverified", "absent_excused", "absent_unexcused", "suspension_out_of_school", "unknown_code"}
TIER_RANK = {"severe_chronic": 0, "moderate_chronic": 1, "at_risk": 2, "satisfactory": 3}
TYPE_CATEGORY = {
    1: "absent_unverified",
    2: "absent_excused",
    3: "absent_unexcused",
    4: "present",
    6: "present",
    5: "tardy",
    8: "tardy",
    9: "tardy",
}


def _clean(code):
    code = (code or "").strip()
    return code or None


def school_year_of(day):
    """July–June: 2025-07-01 .. 2026-06-30 is school year 2025."""
    return day.year if day.month >= 7 else day.year - 1


def lookup(codes, school, day, code, by_year):
    """The code's definition (type_code, ada, suspension, partial_truant, tne) with None flags read as
    False: the school's own table, else the district's, each of the date's school year when the tables
    are kept per year; None when neither table has it."""
    year = school_year_of(day) if by_year else None
    for table in (school, DISTRICT):
        if (year, table, code) in codes:
            type_code, *flags = codes[(year, table, code)]
            return (type_code, *(bool(f) for f in flags))
    return None


def reference_day(school, day, all_day, periods, codes, by_year):
    """(category, is_truancy_day, unknown_code) of one attendance row (periods: list of codes), per §4.1."""
    code = _clean(all_day)
    period_codes = [c for c in map(_clean, periods or []) if c]
    found = lookup(codes, school, day, code, by_year) if code else None
    if code is None:
        category = "partial" if period_codes else None
    elif found is None:
        category = "unknown_code"  # counted as an unverified absence, never dropped
    else:
        type_code, ada, suspension, _, tne = found
        if tne:
            category = "not_enrolled"
        elif suspension:
            category = "suspension_in_school" if ada else "suspension_out_of_school"
        else:
            category = TYPE_CATEGORY.get(type_code)
    truant = False
    for c in ([code] if found else []) + period_codes:
        definition = lookup(codes, school, day, c, by_year)
        if definition is not None:
            type_code, _, suspension, partial_truant, _ = definition
            truant = truant or (not suspension and (type_code == 3 or partial_truant))  # a suspension never
    unknown_periods = [c for c in period_codes if lookup(codes, school, day, c, by_year) is None]
    unknown = code if code and found is None else min(unknown_periods, default=None)
    return category, truant and category != "not_enrolled", unknown


def reference_summary(calendar, enrollment, attendance, codes, by_year, school_year, as_of):
    """Explode every enrolled day into a set, then count: slow and obviously right."""
    year_start, year_end = date(school_year, 7, 1), date(school_year + 1, 6, 30)
    as_of = min(as_of, year_end)
    school_days = {(sc, d) for sc, d, holiday in calendar if (holiday or "").strip() in ("", "%")}
    roster, enrolled = set(), defaultdict(set)
    for sid, sc, enter, leave in enrollment:
        if enter > as_of or (leave is not None and leave < year_start):
            continue
        roster.add((sid, sc))
        day, last = max(enter, year_start), min(leave or as_of, as_of)
        while day <= last:
            if (sc, day) in school_days:
                enrolled[(sid, sc)].add(day)
            day += timedelta(days=1)
    coded = {}
    for sid, sc, d, all_day, periods in attendance:  # the last row for a day wins
        coded[(sid, sc, d)] = reference_day(sc, d, all_day, periods, codes, by_year)
    out = {}
    for sid, sc in roster:
        days = {d for d in enrolled[(sid, sc)] if coded.get((sid, sc, d), (None,))[0] != "not_enrolled"}
        cats = [coded[(sid, sc, d)] for d in days if (sid, sc, d) in coded]

        def n(*categories, cats=cats):
            return sum(1 for c, _, _ in cats if c in categories)

        absent = n(*FULL_DAY)
        rate = absent / len(days) if days else None
        tier = (
            "satisfactory"
            if rate is None or rate < 0.05
            else "at_risk"
            if rate < 0.10
            else "moderate_chronic"
            if rate < 0.20
            else "severe_chronic"
        )
        truancy = sum(1 for _, t, _ in cats if t)
        out[(sid, sc)] = {
            "school_year": school_year,
            "student_id": sid,
            "school_code": sc,
            "as_of_date": as_of,
            "days_enrolled": len(days),
            "days_absent": absent,
            "days_excused": n("absent_excused"),
            "days_unexcused": n("absent_unexcused"),
            "days_unverified": n("absent_unverified", "unknown_code"),
            "days_suspension_out_of_school": n("suspension_out_of_school"),
            "days_suspension_in_school": n("suspension_in_school"),
            "absence_rate": rate,
            "is_chronically_absent": rate is not None and rate >= 0.10 and len(days) >= 31,
            "attendance_tier": tier,
            "truancy_count": truancy,
            "truancy_letter_level": 3 if truancy >= 9 else 2 if truancy >= 6 else 1 if truancy >= 3 else 0,
        }
    return out


SCHOOL_LETTERS = "ABCDEFGH"
DISTRICT_LETTERS = "ABCJKLM"  # A-C also at the schools (the school's row wins), J-M only the district's
UNKNOWN_LETTERS = "ZY"  # in no table
SUSPENSION_CODES = [("I" if ada else "O") + str(tc) for tc in range(1, 10) for ada in (False, True)]


def random_district(rng: random.Random):
    """A tiny district that hits the edges: year boundaries, holidays, overlaps, codes only the district
    defines or no table defines, suspension codes of every TypeCode, per-year tables, students who left."""
    schools = rng.sample([11, 22, 33], rng.randint(1, 3))
    window = (date(2025, 6, 10), date(2026, 7, 20))
    span = (window[1] - window[0]).days

    def any_day():
        return window[0] + timedelta(days=rng.randrange(span))

    pool = sorted({any_day() for _ in range(rng.choice([30, 60, 150]))} | {date(2025, 7, 1), date(2026, 6, 30)})
    holiday_codes = ["", "", "", "", "%", "#", "@", "+", "$", None, " "]
    calendar = [(sc, d, rng.choice(holiday_codes)) for sc in schools for d in pool if rng.random() < 0.85]
    as_of = rng.choice([*pool, date(2026, 9, 1), date(2025, 6, 20)])

    def flag(p):
        return None if rng.random() < 0.05 else rng.random() < p  # a null flag reads as False

    def definition():
        type_code = rng.choice([1, 2, 3, 3, 4, 5, 6, 7, 8, 9, None])
        return (type_code, flag(0.5), flag(0.15), flag(0.2), flag(0.1))

    # One table for every date (None), or tables per school year: the window spans 2024, 2025 and 2026.
    by_year = rng.random() < 0.4
    years = rng.choice([[2025], [2024, 2025], [2024, 2025, 2026], [2025, 2026]]) if by_year else [None]
    codes = {}
    for year in years:
        for sc in schools:
            for letter in SCHOOL_LETTERS:
                if rng.random() < 0.8:
                    codes[(year, sc, letter)] = definition()
        for letter in DISTRICT_LETTERS:
            if rng.random() < 0.8:
                codes[(year, DISTRICT, letter)] = definition()
        for code in SUSPENSION_CODES:  # suspension codes of every TypeCode, in school (I) and out (O)
            ada, type_code = code[0] == "I", int(code[1])
            tables = {"district": [DISTRICT], "schools": schools, "both": [DISTRICT, *schools]}[
                rng.choice(["district", "schools", "both"])
            ]
            for table in tables:
                if rng.random() < 0.8:
                    codes[(year, table, code)] = (type_code, ada, True, flag(0.3), flag(0.05))
    code_rows = [(sc, c, *v, *([year] if by_year else [])) for (year, sc, c), v in codes.items()]

    def near_pool_day():
        d = rng.choice(pool)
        return d + timedelta(days=rng.choice([0, 0, 0, -1, 1]))

    enrollment = []
    students = list(range(1, rng.randint(2, 9)))
    for sid in students:
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
            sc = rng.choice(schools)
            kind = rng.random()
            if kind < 0.3:  # left before the as-of date (or on it)
                leave = as_of - timedelta(days=rng.choice([0, 1, 1, 2, 7, 30, 90]))
                enter = leave - timedelta(days=rng.randint(0, 150))
            else:
                enter = near_pool_day()
                leave = None if kind < 0.6 else near_pool_day()
            enrollment.append((sid, sc, enter, leave))

    def inside_a_stint(sid):
        """Mostly a day of one of the student's stints, so the codes land on enrolled days."""
        stints = [(sc, enter, leave) for s, sc, enter, leave in enrollment if s == sid]
        if stints and rng.random() < 0.7:
            sc, enter, leave = rng.choice(stints)
            days = [d for d in pool if enter <= d <= (leave or window[1])]
            if days:
                return sc, rng.choice(days)
        return rng.choice(schools + [44]), near_pool_day()

    letters = [*SCHOOL_LETTERS, *SCHOOL_LETTERS, *DISTRICT_LETTERS, *UNKNOWN_LETTERS, *SUSPENSION_CODES]
    attendance = []
    for sid in students + [99]:  # 99 has codes but no enrollment
        for _ in range(rng.randint(0, len(pool) // 3 + 10)):
            sc, day = inside_a_stint(sid)
            all_day = rng.choice([None, "", " ", *letters])
            periods = rng.choice([None, [], [rng.choice(["", *letters]) for _ in range(rng.randint(1, 4))]])
            if all_day is None and not periods and rng.random() < 0.7:
                periods = [rng.choice(letters)]
            attendance.append((sid, sc, day, all_day, periods))
    return calendar, enrollment, attendance, codes, code_rows, by_year, as_of


def reference_order(expected: dict, enrollment: list[tuple]) -> dict[int, list[int]]:
    """Per school, the contract order (§4.4) by a plain sort: enrolled on the as-of date first, then tier,
    then risk (all UNKNOWN here), then rate (higher first, null last), then student_id."""
    by_school = defaultdict(list)
    for (sid, sc), row in expected.items():
        enrolled, _ = reference_enrollment(enrollment, sid, sc, row["as_of_date"])
        rate = row["absence_rate"]
        by_school[sc].append((not enrolled, TIER_RANK[row["attendance_tier"]], rate is None, -(rate or 0.0), sid))
    return {sc: [key[-1] for key in sorted(keys)] for sc, keys in by_school.items()}


@pytest.mark.parametrize("seed", range(4))
def test_fast_summary_equals_reference_on_random_districts(seed):
    rng = random.Random(seed)
    for _ in range(75):  # 4 x 75 = 300 districts
        calendar, enrollment, attendance, codes, code_rows, by_year, as_of = random_district(rng)
        att = attendance_frame(attendance)
        schema = ABSENCE_CODES_SCHEMA | ({"school_year": pl.Int32} if by_year else {})
        code_frame = pl.DataFrame(code_rows, schema=schema, orient="row")

        categorized = categorize_attendance(att, code_frame)
        expected_days = [reference_day(sc, d, a, p, codes, by_year) for _, sc, d, a, p in attendance]
        got_days = zip(
            categorized["absence_category"], categorized["is_truancy_day"], categorized["unknown_code"], strict=True
        )
        assert list(got_days) == expected_days
        assert categorized["is_full_day_absence"].to_list() == [c in FULL_DAY for c, _, _ in expected_days]

        fast = student_attendance_summary(
            calendar=pl.DataFrame(calendar, schema=CALENDAR_SCHEMA, orient="row"),
            enrollment=enrollment_frame(enrollment),
            attendance=att,
            absence_codes=code_frame,
            school_year=YEAR,
            as_of_date=as_of,
        )
        assert fast.schema == pl.Schema(SUMMARY_SCHEMA)
        got = {(r["student_id"], r["school_code"]): r for r in fast.iter_rows(named=True)}
        assert fast.height == len(got)
        expected = reference_summary(calendar, enrollment, attendance, codes, by_year, YEAR, as_of)
        assert got == expected

        # The same summary ranked with the same stints: who left ranks last, with "left on ..." first.
        ranking = intervention_ranking(
            fast, risks([]), school_year=YEAR, enrollment=enrollment_frame(enrollment), computed_at=NOW
        )
        orders = ranking.group_by("school_code").agg(pl.col("student_id").sort_by("rank"))
        assert dict(orders.iter_rows()) == reference_order(expected, enrollment)
        for row in ranking.iter_rows(named=True):
            summary_row = expected[(row["student_id"], row["school_code"])]
            enrolled, left_on = reference_enrollment(
                enrollment, row["student_id"], row["school_code"], summary_row["as_of_date"]
            )
            assert (row["is_enrolled"], row["days_enrolled"]) == (enrolled, summary_row["days_enrolled"])
            prefix = enrollment_prefix(enrolled, left_on, summary_row["as_of_date"])
            if prefix is None:
                assert "left on" not in row["reasons"] and "not enrolled" not in row["reasons"]
            else:
                assert row["reasons"].startswith(prefix)
