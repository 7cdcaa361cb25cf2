"""i-Ready growth (contract §4.6) against a plain-Python reference: the rule written the obvious way (one loop
per student and subject, exact fractions, Python sets of school days) on seeded random districts with retests,
missing and repeated baseline flags, missing and zero measures, schools without calendars, students without a
school, null student IDs and rows of another year."""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from fractions import Fraction

import polars as pl
import pytest

from aptool_assets.rules.growth import GROWTH_STATUSES, iready_growth

YEAR = 2024
EXACT_HITS: list[tuple] = []


def _tenths_half_up(points: int, measure: int) -> int:
    return math.floor(Fraction(1000 * points, measure) + Fraction(1, 2))


def _pct(points: int, measure: int | None) -> float | None:
    return None if not measure or measure <= 0 else _tenths_half_up(points, measure) / 10


def _reaches(points: int, measure: int | None, share: Fraction) -> bool:
    return measure is not None and measure > 0 and Fraction(points, measure) >= share


def reference(
    diags: list[tuple], cal: list[tuple], students: list[tuple], year: int, exact_hits: list | None = None
) -> list[tuple]:
    """The contract rule written the obvious way: one loop per student and subject, exact fractions.

    Rows whose growth is exactly a measure × share (the boundary) are appended to ``exact_hits``.
    """
    first, last = date(year, 7, 1), date(year + 1, 6, 30)
    school_days: dict[int, list[date]] = {}
    for code, day, holiday in cal:
        if first <= day <= last and (holiday or "").strip() in ("", "%"):
            school_days.setdefault(code, [])
            if day not in school_days[code]:
                school_days[code].append(day)
    home: dict[int, int] = {}
    for sid, code, _entered in sorted(students, key=lambda s: (s[2] is None, -(s[2] or first).toordinal(), s[1])):
        home.setdefault(sid, code)
    groups: dict[tuple, list[tuple[int, tuple]]] = {}
    for i, row in enumerate(diags):
        if row[0] is not None and row[2] == year:
            groups.setdefault((row[0], row[1]), []).append((i, row))
    out = []
    for (sid, subject), rows in sorted(groups.items()):
        flagged = [r for r in rows if r[1][5]] or rows
        _, base = min(flagged, key=lambda r: (r[1][3], -r[1][4], r[0]))
        _, latest = min(rows, key=lambda r: (-r[1][3].toordinal(), -r[1][4], r[0]))
        g = latest[4] - base[4]
        typical, stretch = base[6], base[7]
        code = home.get(sid)
        code = code if code in school_days else (0 if 0 in school_days else None)
        if code is None:
            total = (last - first).days + 1
            elapsed = min(max((latest[3] - first).days + 1, 0), total)
        else:
            total = len(school_days[code])
            elapsed = sum(1 for d in school_days[code] if d <= latest[3])
        share = Fraction(elapsed, total)
        if exact_hits is not None and any(m and m > 0 and Fraction(g, m) == share for m in (typical, stretch)):
            exact_hits.append((sid, subject))
        if (base[3], base[4]) == (latest[3], latest[4]) or not typical or typical <= 0:
            status = "no_progress_data"
        elif _reaches(g, stretch, share):
            status = "on_track_stretch"
        elif _reaches(g, typical, share):
            status = "on_track_typical"
        else:
            status = "below_typical"
        out.append(
            (
                year,
                sid,
                subject,
                base[3],
                base[4],
                latest[3],
                latest[4],
                g,
                typical,
                stretch,
                _pct(g, typical),
                _pct(g, stretch),
                status,
            )
        )
    return out


def random_district(rng: random.Random) -> tuple[list[tuple], list[tuple], list[tuple]]:
    codes = [101, 102, 201]
    cal = []
    for code in [0, *codes]:
        if rng.random() < 0.3:
            continue  # this school (or the district) has no calendar
        # Few school days (every 2-8 weeks), so shares are coarse and growth often lands exactly on a boundary.
        day = date(YEAR, 8, 10) + timedelta(days=rng.randint(0, 20))
        while day < date(YEAR + 1, 6, 5):
            cal.append((code, day, rng.choice(["", "", "", "", "%", "#", "H", None])))
            if rng.random() < 0.1:
                cal.append((code, day, ""))  # a repeated calendar row counts once
            day += timedelta(days=rng.choice([14, 28, 42, 56]))
    students, diags = [], []
    for sid in range(1, 81):
        for _ in range(rng.choice([0, 1, 1, 2])):
            entered = rng.choice([None, date(YEAR, 8, 1) + timedelta(days=rng.randint(0, 100))])
            students.append((sid, rng.choice([*codes, 999]), entered))
        for subject in ("ela", "math"):
            n = rng.choice([0, 1, 2, 2, 3, 3, 4])
            first_score = rng.randint(400, 500)
            days = [date(YEAR, 8, 15) + timedelta(days=rng.randint(0, 290)) for _ in range(n)]
            if n >= 2 and rng.random() < 0.3:
                days[1] = days[0]  # a same-day retest
            for day in days:
                score = first_score + rng.randint(-10, 40)
                typical = rng.choice([None, 0, *[5, 6, 8, 10, 12, 15, 20, 24, 30] * 3])
                stretch = rng.choice([None, 0, typical, (typical or 10) * 2, 45])
                row = (
                    sid,
                    subject,
                    rng.choice([YEAR, YEAR, YEAR, YEAR - 1]),
                    day,
                    score,
                    rng.random() < 0.4,
                    typical,
                    stretch,
                )
                diags.append(row)
                if rng.random() < 0.05:
                    diags.append(row)  # the same diagnostic delivered twice
        if rng.random() < 0.1:
            diags.append((None, "ela", YEAR, date(YEAR, 9, 1), 500, True, 20, 40))
    return diags, cal, students


@pytest.mark.parametrize("seed", range(8))
def test_growth_equals_the_reference_on_random_districts(seed):
    rng = random.Random(seed)
    diags, cal, students = random_district(rng)
    frame = pl.DataFrame(
        diags,
        schema=[
            "student_id",
            "subject",
            "academic_year",
            "completion_date",
            "overall_scale_score",
            "is_baseline",
            "annual_typical_growth_measure",
            "annual_stretch_growth_measure",
        ],
        orient="row",
    )
    cal_frame = pl.DataFrame(cal, schema=["school_code", "calendar_date", "holiday_code"], orient="row")
    student_frame = pl.DataFrame(students, schema=["student_id", "school_code", "school_enter_date"], orient="row")
    out = iready_growth(frame, cal_frame, student_frame, school_year=YEAR)
    expected = reference(diags, cal, students, YEAR, EXACT_HITS)
    assert out.rows() == expected
    assert set(out.get_column("growth_status")) == set(GROWTH_STATUSES)


def test_the_random_districts_reach_the_boundaries():
    """The generated districts land exactly on a boundary (growth = measure × share) many times, so the
    comparisons above test the boundaries (computed here on its own: test order is random)."""
    hits: list = []
    for seed in range(8):
        diags, cal, students = random_district(random.Random(seed))
        reference(diags, cal, students, YEAR, hits)
    assert len(hits) >= 10
