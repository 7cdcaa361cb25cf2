"""Who the simulated Aeries knows: the synthetic district's students with their stints, staff, and the
awkward enrollment cases of reference §10.11 (a mid-year transfer, a withdrawal, a pre-enrolled ``*``
record, a late enrollee) that trip clients up. Draws come from the caller's ``rng`` in a fixed order.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

from aptool_demo.calendars import build_calendar, first_school_day, instructional_days
from aptool_demo.district import SCHOOLS, SyntheticDistrict
from aptool_demo.records import PERIOD_ATTENDANCE_SCHOOL, enrollment_row, staff_record, student_record
from aptool_demo.sim_district import SimDistrict


def add_students(sim: SimDistrict, district: SyntheticDistrict, rng: random.Random) -> None:
    """A record and this year's stint per student; last year's closed stint if they were at the school then."""
    year = sim.school_year
    first_day, prev_first = first_school_day(year), first_school_day(year - 1)
    prev_last = instructional_days(build_calendar(year - 1, 0, elementary=False, period_school=False))[-1]
    numbers: dict[int, int] = {}
    lows = {code: low for code, _n, low, _h in SCHOOLS}
    for row in district.students.sort("student_id").iter_rows(named=True):
        code, grade = row["school_code"], row["grade"]
        numbers[code] = numbers.get(code, 0) + 1
        years_here = grade - lows[code]
        record = student_record(
            rng,
            row["student_id"],
            code,
            numbers[code],
            grade,
            row["first_name"],
            row["last_name"],
            year,
            school_enter=first_school_day(year - years_here),
            district_enter=first_school_day(year - max(grade, 0) + rng.choice([0, 0, 0, 1, 2])) if grade > 0 else None,
        )
        sim.students.append(record)
        if years_here > 0:  # last year's stint, closed at the year-end rollover
            prior = enrollment_row(record, str(year - 1), prev_first, prev_last, "")
            prior["Grade"] = grade - 1
            sim.enrollment.append(prior)
        sim.enrollment.append(enrollment_row(record, str(year), first_day, None, ""))


def add_staff(sim: SimDistrict, rng: random.Random) -> None:
    """A principal and three teachers per school."""
    firsts = ["Maria", "James", "Linda", "Robert", "Patricia", "David", "Susan", "Carlos"]
    lasts = ["Nguyen", "Smith", "Ramirez", "Johnson", "Kim", "Brown", "Okafor", "Silva"]
    for code, _name, _low, _high in SCHOOLS:
        for n in range(1, 5):
            title = "Principal" if n == 1 else "Teacher"
            sim.staff.append(staff_record(code * 1000 + n, code, rng.choice(firsts), rng.choice(lasts), title, rng))


class _Picker:
    """Chooses each awkward case's student at random, never the same student twice."""

    def __init__(self, sim: SimDistrict, rng: random.Random):
        self._rng = rng
        self._by_school = {code: [r for r in sim.students if r["SchoolCode"] == code] for code, *_ in SCHOOLS}
        self._taken: set[int] = set()

    def pick(self, code: int, grade: int | None = None) -> dict | None:
        """A student at ``code`` (of ``grade`` when there is one); None in a district too small for it."""
        free = [r for r in self._by_school[code] if r["StudentID"] not in self._taken]
        pool = [r for r in free if grade is None or r["Grade"] == grade] or free
        if not pool:
            return None
        chosen = self._rng.choice(pool)
        self._taken.add(chosen["StudentID"])
        return chosen


def add_awkward_cases(sim: SimDistrict, rng: random.Random, through: date) -> None:
    """Reference §10.11: a mid-year transfer, a withdrawal, a pre-enrolled ``*`` record, a late enrollee."""
    days = _milestones(sim, through)
    picker = _Picker(sim, rng)
    elementary = [code for code, *_ in SCHOOLS if code != PERIOD_ATTENDANCE_SCHOOL]
    _mid_year_transfer(sim, picker.pick(elementary[0]), elementary[0], elementary[1], days)
    _left_the_district(sim, picker.pick(PERIOD_ATTENDANCE_SCHOOL), days)
    _pre_enrolled_for_next_year(sim, picker.pick(elementary[0], grade=5), days)
    _late_enrollee(sim, picker.pick(elementary[1]), days)


def _milestones(sim: SimDistrict, through: date) -> list[date]:
    """Instructional days the scripted events fall on: within the days entered so far when there are enough."""
    # An elementary calendar: its school days are school days at every school (it only adds a "+" day).
    days = instructional_days(sim.calendars[SCHOOLS[0][0]])
    elapsed = [d for d in days if d <= through]
    return elapsed if len(elapsed) >= 40 else days


def _at(day: date, hour: int) -> datetime:
    return datetime.combine(day, datetime.min.time()) + timedelta(hours=hour)


def _mid_year_transfer(
    sim: SimDistrict, mover: dict | None, from_school: int, to_school: int, days: list[date]
) -> None:
    """Between the two elementary schools: two student records, two enrollment rows."""
    if not mover:
        return
    moved_on = days[int(len(days) * 0.45)]
    last_there = max(d for d in days if d < moved_on)
    sim.withdraw(mover["StudentID"], from_school, last_there, "T", exit_reason_code="T160", at=_at(last_there, 15))
    sim.enroll(mover["StudentID"], to_school, mover["Grade"], moved_on, at=_at(moved_on, 8))


def _left_the_district(sim: SimDistrict, leaver: dict | None, days: list[date]) -> None:
    """A middle-school student who left the district mid-year."""
    if not leaver:
        return
    left_on = days[int(len(days) * 0.6)]
    sim.withdraw(
        leaver["StudentID"], PERIOD_ATTENDANCE_SCHOOL, left_on, "T", exit_reason_code="T200", at=_at(left_on, 16)
    )


def _pre_enrolled_for_next_year(sim: SimDistrict, rising: dict | None, days: list[date]) -> None:
    """A fifth grader pre-enrolled at the middle school for next year (InactiveStatusCode ``*``)."""
    if not rising:
        return
    numbers = [r["StudentNumber"] for r in sim.students if r["SchoolCode"] == PERIOD_ATTENDANCE_SCHOOL]
    pre = student_record(
        random.Random(rising["StudentID"]),
        rising["StudentID"],
        PERIOD_ATTENDANCE_SCHOOL,
        max(numbers, default=0) + 1,
        rising["Grade"] + 1,
        rising["FirstName"],
        rising["LastName"],
        sim.school_year,
        school_enter=first_school_day(sim.school_year + 1),
    )
    pre.update({k: rising[k] for k in ("StateStudentID", "Birthdate", "Gender", "DistrictEnterDate", "FamilyKey")})
    pre["InactiveStatusCode"] = "*"
    sim.students.append(pre)
    sim.record_change("student", pre, _at(days[int(len(days) * 0.75)], 10))


def _late_enrollee(sim: SimDistrict, late: dict | None, days: list[date]) -> None:
    """A student who enrolled three weeks into the year (no stint last year)."""
    if late is None:
        return
    late_day = days[min(14, len(days) - 1)]
    late.update({"SchoolEnterDate": late_day, "DistrictEnterDate": late_day})
    current = str(sim.school_year)
    sim.enrollment = [r for r in sim.enrollment if r["StudentID"] != late["StudentID"] or r["AcademicYear"] == current]
    for row in sim.enrollment:
        if row["StudentID"] == late["StudentID"]:
            row["EnterDate"] = late_day
    sim.record_change("student", late, _at(late_day, 8))
    sim.record_change("enrollment", late, _at(late_day, 8))
