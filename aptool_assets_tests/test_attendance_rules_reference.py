"""Attendance rules (contract §4.1): the fast implementation against a slow reference written plainly
below (one Python set entry per enrolled day) on a few hundred seeded random districts."""

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
from aptool_assets_tests.attendance_helpers import YEAR, attendance_frame, enrollment_frame

# --- property: fast == slow reference on random districts ------------------------------------

FULL_DAY = {"absent_unverified", "absent_excused", "absent_unexcused", "suspension_out_of_school"}
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


def reference_day(school, all_day, periods, codes):
    """(category, is_truancy_day) of one attendance row (periods: list of codes), per contract §4.1."""
    code = _clean(all_day)
    period_codes = [c for c in map(_clean, periods or []) if c]
    if code is None:
        category = "partial" if period_codes else None
    elif (school, code) not in codes:
        category = None
    else:
        type_code, ada, suspension, partial_truant, tne = codes[(school, code)]
        if tne:
            category = "not_enrolled"
        elif suspension:
            category = "suspension_in_school" if ada else "suspension_out_of_school"
        else:
            category = TYPE_CATEGORY.get(type_code)
    truant = False
    if code is not None and (school, code) in codes:
        type_code, _, _, partial_truant, _ = codes[(school, code)]
        truant = type_code == 3 or partial_truant
    for c in period_codes:
        if (school, c) in codes:
            type_code, _, _, partial_truant, _ = codes[(school, c)]
            truant = truant or type_code == 3 or partial_truant
    return category, truant and category != "not_enrolled"


def reference_summary(calendar, enrollment, attendance, codes, school_year, as_of):
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
        coded[(sid, sc, d)] = reference_day(sc, all_day, periods, codes)
    out = {}
    for sid, sc in roster:
        days = {d for d in enrolled[(sid, sc)] if coded.get((sid, sc, d), (None,))[0] != "not_enrolled"}
        cats = [coded[(sid, sc, d)] for d in days if (sid, sc, d) in coded]

        def n(category, cats=cats):
            return sum(1 for c, _ in cats if c == category)

        absent = sum(1 for c, _ in cats if c in FULL_DAY)
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
        truancy = sum(1 for _, t in cats if t)
        out[(sid, sc)] = {
            "school_year": school_year,
            "student_id": sid,
            "school_code": sc,
            "as_of_date": as_of,
            "days_enrolled": len(days),
            "days_absent": absent,
            "days_excused": n("absent_excused"),
            "days_unexcused": n("absent_unexcused"),
            "days_unverified": n("absent_unverified"),
            "days_suspension_out_of_school": n("suspension_out_of_school"),
            "days_suspension_in_school": n("suspension_in_school"),
            "absence_rate": rate,
            "is_chronically_absent": rate is not None and rate >= 0.10 and len(days) >= 31,
            "attendance_tier": tier,
            "truancy_count": truancy,
            "truancy_letter_level": 3 if truancy >= 9 else 2 if truancy >= 6 else 1 if truancy >= 3 else 0,
        }
    return out


def random_district(rng: random.Random):
    """A tiny district that hits the edges: year boundaries, holidays, overlaps, unknown codes."""
    schools = rng.sample([11, 22, 33], rng.randint(1, 3))
    window = (date(2025, 6, 10), date(2026, 7, 20))
    span = (window[1] - window[0]).days

    def any_day():
        return window[0] + timedelta(days=rng.randrange(span))

    pool = sorted({any_day() for _ in range(rng.choice([30, 60, 150]))} | {date(2025, 7, 1), date(2026, 6, 30)})
    holiday_codes = ["", "", "", "", "%", "#", "@", "+", "$", None, " "]
    calendar = [(sc, d, rng.choice(holiday_codes)) for sc in schools for d in pool if rng.random() < 0.85]

    letters = "ABCDEFGH"
    codes = {}
    for sc in schools:
        for letter in letters:
            if rng.random() < 0.8:
                codes[(sc, letter)] = (
                    rng.choice([1, 2, 3, 3, 4, 5, 6, 7, 8, 9]),
                    rng.random() < 0.5,
                    rng.random() < 0.15,
                    rng.random() < 0.2,
                    rng.random() < 0.1,
                )
    code_rows = [(sc, c, *v) for (sc, c), v in codes.items()]

    def near_pool_day():
        d = rng.choice(pool)
        return d + timedelta(days=rng.choice([0, 0, 0, -1, 1]))

    enrollment = []
    students = list(range(1, rng.randint(2, 9)))
    for sid in students:
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
            sc = rng.choice(schools)
            enter = near_pool_day()
            leave = None if rng.random() < 0.4 else near_pool_day()
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

    attendance = []
    for sid in students + [99]:  # 99 has codes but no enrollment
        for _ in range(rng.randint(0, len(pool) // 3 + 10)):
            sc, day = inside_a_stint(sid)
            all_day = rng.choice([None, "", " ", "Z", *letters, *letters, *letters])
            periods = rng.choice([None, [], [rng.choice(["", "Z", *letters]) for _ in range(rng.randint(1, 4))]])
            if all_day is None and not periods and rng.random() < 0.7:
                periods = [rng.choice(letters)]
            attendance.append((sid, sc, day, all_day, periods))
    as_of = rng.choice([*pool, date(2026, 9, 1), date(2025, 6, 20)])
    return calendar, enrollment, attendance, codes, code_rows, as_of


@pytest.mark.parametrize("seed", range(4))
def test_fast_summary_equals_reference_on_random_districts(seed):
    rng = random.Random(seed)
    for _ in range(75):  # 4 x 75 = 300 districts
        calendar, enrollment, attendance, codes, code_rows, as_of = random_district(rng)
        att = attendance_frame(attendance)
        code_frame = pl.DataFrame(code_rows, schema=ABSENCE_CODES_SCHEMA, orient="row")

        categorized = categorize_attendance(att, code_frame)
        expected_days = [reference_day(sc, a, p, codes) for _, sc, _, a, p in attendance]
        assert list(zip(categorized["absence_category"], categorized["is_truancy_day"], strict=True)) == expected_days
        assert categorized["is_full_day_absence"].to_list() == [c in FULL_DAY for c, _ in expected_days]

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
        expected = reference_summary(calendar, enrollment, attendance, codes, YEAR, as_of)
        assert got == expected
