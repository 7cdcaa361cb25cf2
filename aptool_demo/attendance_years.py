"""Complete school years of daily attendance with realistic dynamics, for back-testing the end-of-year
projection (contract §4.7): who ends the year chronically absent, and could it have been seen in November?

Each year is drawn afresh, deterministic for ``(seed, school_year)``, as the frames the attendance summary
and the projection read: ``calendar`` (school_code, calendar_date, holiday_code), ``enrollment`` stints and
``attendance_days`` in ``categorize_attendance``'s output shape (student_id, school_code, calendar_date,
absence_category, is_truancy_day); plus ``students`` (student_id, profile, enrollment_kind, base_rate), the
hidden truth a test or a back-test may look at. Vectorised with numpy over a students × weekdays grid, so a
50,000-student year takes a few seconds.

**Calendar.** Every school uses the demo calendar (:func:`aptool_demo.calendars.build_calendar`): 180
instructional days from mid-August to early June, Labor Day and the other holidays, Thanksgiving week, a
two-week winter break, a spring break in April, staff-development and minimum days. Even school codes are
elementary (one more closure, a conference day); weekends are not in the calendar.

**Enrollment** (``ENROLLMENT_SHARES``): ``full_year`` 84% — enrolled before the first day, never leave; ``late``
6% — enter on a weekday between Sep 15 and Feb 28; ``transfer`` 6% — leave their first school between Oct 15 and
Apr 15 and enter another school 1–10 days later; ``withdrawn`` 4% — leave between Oct 1 and May 15 and do not
come back. The school is uniform over ``n_schools``; a quarter of the first stints began in an earlier year
(enter date in August of the year before).

**Absence model.** On every instructional day a student is enrolled, they are absent with a daily probability
``p(t) = base × profile_shape(t) × season(t)`` (capped at 0.9), plus whole-day illness episodes:

- ``base`` per student from a Beta distribution with the profile's mean and concentration ``BETA_CONCENTRATION``
  (40: students of one profile still differ a lot).
- Profiles (``PROFILES``: share, mean base rate): ``steady`` 61%, 1.6% — rarely absent all year; ``moderate``
  16%, 3.6% — some drift over the line; ``chronic`` 7%, 13% — absent a lot all year; ``worsening`` 9%, 3.0% —
  fine until winter break, then ``WORSENING_FACTOR`` (5×) from the first day back, reached over a ramp of
  ``WORSENING_RAMP_DAYS`` (10) school days; ``improving`` 7%, 12% — a bad autumn, then from a turning point drawn
  uniformly between Oct 1 and Dec 15 their rate falls to ``IMPROVING_FACTOR`` (0.3×) of it.
- ``season(t)``: ``FLU_FACTOR`` (1.25×) from Dec 1 through Feb 28 (flu season), ``MAY_JUNE_FACTOR`` (1.15×)
  from May 15 (end-of-year drift), else 1.
- Illness episodes: Poisson(``EPISODES_PER_YEAR`` = 0.6) per student of 2–5 consecutive weekdays absent
  (excused), starting on a uniform weekday of the year: the noise that makes a single month misleading.
- Categories of an absence day (``ABSENCE_MIX``): excused 55%, unverified 18%, unexcused 24% (each a truancy
  day), out-of-school suspension 3%. Present days carry a ``tardy`` row with probability 4%; 1% of students
  have a run of 3–8 ``not_enrolled`` weekdays (not enrolled days, not absences).

With these parameters about 14% of the (student, school) rows end the year chronically absent (rate ≥ 10% over
≥ 31 days; 13.9–14.1% per year at the default seed and 5,000 students): about 77% of the ``chronic`` profile, 46%
of ``worsening``, 22% of ``improving``, 10% of ``moderate`` and 2.4% of ``steady``, as in a typical California
district after 2022. The ``worsening`` students are most of the chronic students nobody could have flagged in November.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from aptool_demo.calendars import build_calendar

PROFILES: dict[str, tuple[float, float]] = {
    "steady": (0.61, 0.016),
    "moderate": (0.16, 0.036),
    "chronic": (0.07, 0.130),
    "worsening": (0.09, 0.030),
    "improving": (0.07, 0.120),
}
"""Profile → (share of students, mean daily absence probability before any change)."""

ENROLLMENT_SHARES: dict[str, float] = {"full_year": 0.84, "late": 0.06, "transfer": 0.06, "withdrawn": 0.04}
BETA_CONCENTRATION = 40.0
WORSENING_FACTOR = 5.0
WORSENING_RAMP_DAYS = 10
IMPROVING_FACTOR = 0.3
FLU_FACTOR = 1.25
MAY_JUNE_FACTOR = 1.15
EPISODES_PER_YEAR = 0.6
EPISODE_DAYS = (2, 5)
ABSENCE_MIX: dict[str, float] = {
    "absent_excused": 0.55,
    "absent_unverified": 0.18,
    "absent_unexcused": 0.24,
    "suspension_out_of_school": 0.03,
}
CATEGORIES: tuple[str, ...] = (*ABSENCE_MIX, "tardy", "not_enrolled")
TARDY_RATE = 0.04
NOT_ENROLLED_SHARE = 0.01
MAX_DAILY_PROBABILITY = 0.9

ATTENDANCE_DAYS_COLUMNS = {
    "student_id": pl.Int64,
    "school_code": pl.Int32,
    "calendar_date": pl.Date,
    "absence_category": pl.Utf8,
    "is_truancy_day": pl.Boolean,
}
FIRST_SCHOOL_CODE = 101


@dataclass(frozen=True)
class AttendanceYear:
    """One generated school year: the frames the summary and the projection read, and the hidden profiles."""

    school_year: int
    calendar: pl.DataFrame
    enrollment: pl.DataFrame
    attendance_days: pl.DataFrame
    students: pl.DataFrame


def _calendar(school_year: int, schools: list[int]) -> pl.DataFrame:
    rows = [
        (school, row["CalendarDate"], row["HolidayCode"])
        for school in schools
        for row in build_calendar(school_year, school, elementary=school % 2 == 0, period_school=False)
    ]
    return pl.DataFrame(
        rows, schema={"school_code": pl.Int32, "calendar_date": pl.Date, "holiday_code": pl.Utf8}, orient="row"
    )


def _day_number(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def _between(rng: np.random.Generator, first: date, last: date, size: int) -> np.ndarray:
    """Uniform day numbers in [first, last], moved forward off weekends (1970-01-01 was a Thursday)."""
    days = rng.integers(_day_number(first), _day_number(last) + 1, size)
    weekday = (days + 3) % 7  # 0 = Monday
    return days + np.where(weekday == 5, 2, np.where(weekday == 6, 1, 0))


def _choice(rng: np.random.Generator, shares: dict, size: int) -> np.ndarray:
    names = np.array(list(shares))
    weights = np.array([v[0] if isinstance(v, tuple) else v for v in shares.values()], dtype=float)
    return names[rng.choice(len(names), size=size, p=weights / weights.sum())]


def generate_year(
    school_year: int, *, n_students: int = 5_000, n_schools: int = 6, seed: int = 20240901
) -> AttendanceYear:
    """One complete school year of ``n_students`` students (see the module docstring for the model)."""
    rng = np.random.default_rng([seed, school_year])
    y, n = school_year, school_year + 1
    schools = list(range(FIRST_SCHOOL_CODE, FIRST_SCHOOL_CODE + n_schools))
    calendar = _calendar(school_year, schools)

    # The grid: every weekday from the earliest calendar date to the latest; instructional mask per school.
    first_day = calendar["calendar_date"].min()
    grid = np.arange(_day_number(first_day), _day_number(calendar["calendar_date"].max()) + 1)
    grid = grid[(grid + 3) % 7 < 5]
    school_index = {school: i for i, school in enumerate(schools)}
    instructional = np.zeros((n_schools, grid.size), dtype=bool)
    cal = calendar.filter(pl.col("holiday_code").is_in(["", "%"]))
    rows = np.array([school_index[s] for s in cal["school_code"].to_list()])
    cols = np.searchsorted(grid, cal["calendar_date"].cast(pl.Int32).to_numpy())
    instructional[rows, cols] = True
    back_from_winter = int(grid[np.argmax(instructional[0] & (grid > _day_number(date(y, 12, 31))))])

    # Who: profile, enrollment kind, stints.
    ids = np.arange(1, n_students + 1, dtype=np.int64) + (school_year % 100) * 1_000_000
    profile = _choice(rng, PROFILES, n_students)
    kind = _choice(rng, ENROLLMENT_SHARES, n_students)
    home = rng.integers(0, n_schools, n_students)
    other = (home + rng.integers(1, n_schools, n_students)) % n_schools
    before_first = _day_number(first_day) - rng.integers(1, 15, n_students)
    enter = np.where(rng.random(n_students) < 0.25, _day_number(date(y - 1, 8, 10)), before_first)
    enter = np.where(kind == "late", _between(rng, date(y, 9, 15), date(n, 2, 28), n_students), enter)
    leave = np.full(n_students, -1, dtype=np.int64)  # -1: open
    leave = np.where(kind == "transfer", _between(rng, date(y, 10, 15), date(n, 4, 15), n_students), leave)
    leave = np.where(kind == "withdrawn", _between(rng, date(y, 10, 1), date(n, 5, 15), n_students), leave)
    reenter = leave + rng.integers(1, 11, n_students)  # the transfer's second stint

    # Daily probability: base × profile shape × season.
    means = np.array([PROFILES[p][1] for p in profile])
    base = rng.beta(means * BETA_CONCENTRATION, (1 - means) * BETA_CONCENTRATION)
    shape = np.ones((n_students, grid.size), dtype=np.float32)
    school_days_back = np.cumsum(instructional[0] & (grid >= back_from_winter))  # school days since winter break
    ramp = np.clip(school_days_back / WORSENING_RAMP_DAYS, 0, 1)
    worsening = profile == "worsening"
    shape[worsening] = 1 + (WORSENING_FACTOR - 1) * ramp[None, :]
    improving = profile == "improving"
    turn = _between(rng, date(y, 10, 1), date(y, 12, 15), n_students)
    shape[improving] = np.where(grid[None, :] >= turn[improving, None], IMPROVING_FACTOR, 1.0)
    season = np.ones(grid.size, dtype=np.float32)
    season[(grid >= _day_number(date(y, 12, 1))) & (grid <= _day_number(date(n, 2, 28)))] = FLU_FACTOR
    season[grid >= _day_number(date(n, 5, 15))] = MAY_JUNE_FACTOR
    probability = np.minimum(base[:, None].astype(np.float32) * shape * season[None, :], MAX_DAILY_PROBABILITY)
    absent = rng.random((n_students, grid.size), dtype=np.float32) < probability
    del probability, shape

    # Illness episodes: runs of consecutive weekdays, all excused.
    episodes = rng.poisson(EPISODES_PER_YEAR, n_students)
    who = np.repeat(np.arange(n_students), episodes)
    start = rng.integers(0, grid.size, who.size)
    length = rng.integers(EPISODE_DAYS[0], EPISODE_DAYS[1] + 1, who.size)
    ill = np.zeros((n_students, grid.size + 1), dtype=np.int16)
    np.add.at(ill, (who, start), 1)
    np.add.at(ill, (who, np.minimum(start + length, grid.size)), -1)
    ill = np.cumsum(ill, axis=1)[:, :-1] > 0

    # Not-enrolled runs for a few students (a code flagged IsTemporarilyNotEnrolled).
    tne_students = np.flatnonzero(rng.random(n_students) < NOT_ENROLLED_SHARE)
    tne = np.zeros_like(ill)
    tne_start = rng.integers(0, grid.size - 10, tne_students.size)
    for student, first, days in zip(tne_students, tne_start, rng.integers(3, 9, tne_students.size), strict=True):
        tne[student, first : first + days] = True

    # Where each student is on each weekday, and whether it counts.
    day = grid[None, :]
    open_end = np.iinfo(np.int64).max
    first_end = np.where(leave < 0, open_end, leave)[:, None]
    at_home = (day >= enter[:, None]) & (day <= first_end)
    at_other = (kind == "transfer")[:, None] & (day >= reenter[:, None])
    school = np.where(at_other, other[:, None], home[:, None])
    enrolled = (at_home | at_other) & instructional[school, np.arange(grid.size)[None, :]]

    # Category codes: 0 = no row, 1.. = CATEGORIES (absences first, in ABSENCE_MIX order).
    code = np.zeros((n_students, grid.size), dtype=np.int8)
    absent_day = enrolled & (absent | ill)
    drawn = rng.choice(len(ABSENCE_MIX), size=int(absent_day.sum()), p=np.array(list(ABSENCE_MIX.values())))
    code[absent_day] = drawn.astype(np.int8) + 1
    code[enrolled & ill & ~absent] = CATEGORIES.index("absent_excused") + 1
    tardy = enrolled & ~absent_day & (rng.random((n_students, grid.size), dtype=np.float32) < TARDY_RATE)
    code[tardy] = CATEGORIES.index("tardy") + 1
    code[enrolled & tne] = CATEGORIES.index("not_enrolled") + 1

    student_idx, day_idx = np.nonzero(code)
    categories = np.array(CATEGORIES)[code[student_idx, day_idx] - 1]
    attendance_days = pl.DataFrame(
        {
            "student_id": ids[student_idx],
            "school_code": np.array(schools, dtype=np.int32)[school[student_idx, day_idx]],
            "calendar_date": grid[day_idx].astype("datetime64[D]"),
            "absence_category": categories,
            "is_truancy_day": categories == "absent_unexcused",
        }
    ).cast(ATTENDANCE_DAYS_COLUMNS)

    enrollment = _enrollment(ids, kind, schools, home, other, enter, leave, reenter)
    students = pl.DataFrame({"student_id": ids, "profile": profile, "enrollment_kind": kind, "base_rate": base}).cast(
        {"profile": pl.Utf8, "enrollment_kind": pl.Utf8}
    )
    return AttendanceYear(school_year, calendar, enrollment, attendance_days, students)


def _enrollment(ids, kind, schools, home, other, enter, leave, reenter) -> pl.DataFrame:
    codes = np.array(schools, dtype=np.int32)

    def dates(values: np.ndarray) -> list:
        return [None if v < 0 else date(1970, 1, 1) + timedelta(days=int(v)) for v in values]

    first = pl.DataFrame(
        {"student_id": ids, "school_code": codes[home], "enter_date": dates(enter), "leave_date": dates(leave)}
    )
    moved = kind == "transfer"
    second = pl.DataFrame(
        {
            "student_id": ids[moved],
            "school_code": codes[other[moved]],
            "enter_date": dates(reenter[moved]),
            "leave_date": [None] * int(moved.sum()),
        }
    )
    schema = {"student_id": pl.Int64, "school_code": pl.Int32, "enter_date": pl.Date, "leave_date": pl.Date}
    return pl.concat([first.cast(schema), second.cast(schema)]).sort("student_id", "enter_date")


def generate_years(
    school_years: list[int] | range, *, n_students: int = 5_000, n_schools: int = 6, seed: int = 20240901
) -> list[AttendanceYear]:
    """:func:`generate_year` for each school year (independent draws; each year deterministic by itself)."""
    return [generate_year(year, n_students=n_students, n_schools=n_schools, seed=seed) for year in school_years]
