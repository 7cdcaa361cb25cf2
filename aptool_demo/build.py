"""Builds what the Aeries simulator serves from the synthetic district: the same students, as Aeries holds them.

Schools (with the pseudo-schools 0 and 999 and a closed one), calendars, absence codes, students and
staff, the awkward enrollment cases, attendance entered up to a date, the nightly history job, the
back-dated corrections that came after it, and the demographic codes and program records the student
groups need (from generators of their own, so the attendance stays as it was). Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import date, datetime
from zoneinfo import ZoneInfo

from aptool_demo.attendance import back_dated_corrections, generate_attendance
from aptool_demo.calendars import build_calendar
from aptool_demo.codes import absence_code_table, letters_for
from aptool_demo.district import SCHOOLS, SyntheticDistrict, past_year_district
from aptool_demo.population import add_awkward_cases, add_staff, add_students
from aptool_demo.records import PERIOD_ATTENDANCE_SCHOOL, school_record
from aptool_demo.sim_district import LOCAL_TIMEZONE, SimDistrict
from aptool_demo.student_groups import add_demographics, add_programs

DISTRICT_NAME = "Demo Unified School District"
# Pseudo-schools: the district (0) and inactive and transferred students (999); 103 is a closed school.
_DISTRICT_CODE, _TRANSFER_CODE, _CLOSED_CODE = 0, 999, 103


def build_sim_district(district: SyntheticDistrict, *, seed: int = 7, through: date | None = None) -> SimDistrict:
    """The demo district as Aeries would hold it, with attendance entered up to ``through``.

    ``through`` defaults to today (district time), capped at the last calendar day. The nightly history
    job has run through ``through``; the back-dated corrections in ``corrections`` came after it, so the
    history summaries lag them until the next ``run_nightly_history_job``.
    """
    rng = random.Random(seed)
    year = district.school_year
    calendars = _calendars(year)
    last_day = max(row["CalendarDate"] for rows in calendars.values() for row in rows)
    if through is None:
        through = datetime.now(ZoneInfo(LOCAL_TIMEZONE)).date()
    through = min(through, last_day)

    codes = [code for code, *_ in SCHOOLS]
    sim = SimDistrict(
        school_year=year,
        schools=_schools(year),
        students=[],
        enrollment=[],
        calendars=calendars,
        absence_codes={
            code: absence_code_table(code, letters_for(code))
            for code in [_DISTRICT_CODE, *codes, _CLOSED_CODE, _TRANSFER_CODE]
        },
        attendance={code: {} for code in codes},
        data_changes=[],
    )
    add_students(sim, district, rng)
    add_staff(sim, rng)
    add_awkward_cases(sim, rng, through)
    generate_attendance(sim, rng, through)
    sim.run_nightly_history_job(through)
    back_dated_corrections(sim, through)
    # Last, from generators seeded apart from ``rng``: the attendance above does not depend on them.
    add_demographics(sim, seed)
    add_programs(sim, seed, through)
    return sim


def build_past_sim_districts(
    district: SyntheticDistrict, years: Iterable[int], *, seed: int = 7
) -> dict[int, SimDistrict]:
    """Past school years of ``district`` as Aeries holds them, one database each (start year → district),
    for ``start_simulator(..., past_years=...)``: each year's roster (``district.past_year_district``: the
    students then, those who have left since included), with its whole year of attendance entered and the
    nightly history job run through its last day. Deterministic for ``seed`` and the year."""
    past = {}
    for year in sorted(set(years)):
        calendars = _calendars(year)
        last_day = max(row["CalendarDate"] for rows in calendars.values() for row in rows)
        back = district.school_year - year
        past[year] = build_sim_district(past_year_district(district, year), seed=seed + back, through=last_day)
    return past


def _calendars(year: int) -> dict[int, list[dict]]:
    """One calendar per school (the period school's carries its periods) and the district's own."""
    calendars: dict[int, list[dict]] = {}
    for code, *_ in SCHOOLS:
        period_school = code == PERIOD_ATTENDANCE_SCHOOL
        calendars[code] = build_calendar(year, code, elementary=not period_school, period_school=period_school)
    calendars[_DISTRICT_CODE] = build_calendar(year, _DISTRICT_CODE, elementary=False, period_school=False)
    return calendars


def _schools(year: int) -> list[dict]:
    """The real schools, the two pseudo-schools and a closed school, by SchoolCode."""
    schools = [
        school_record(year, _DISTRICT_CODE, DISTRICT_NAME, -1, 12, pseudo=True),
        *(
            school_record(year, code, name, low, high, period=code == PERIOD_ATTENDANCE_SCHOOL)
            for code, name, low, high in SCHOOLS
        ),
        school_record(year, _CLOSED_CODE, "Oak Grove Elementary School", 0, 5, inactive="I"),
        school_record(year, _TRANSFER_CODE, "Inactive and Transferred Students", -2, 12, pseudo=True),
    ]
    return sorted(schools, key=lambda s: s["SchoolCode"])
