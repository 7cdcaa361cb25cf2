"""A large district's school years as the warehouse holds them after its pulls, for ``bench_history.py``.

Each year comes from :func:`aptool_demo.attendance_years.generate_year` (complete years with realistic
absence dynamics, enrollment stints, transfers and withdrawals, vectorised: a few seconds for 50,000
students) and is shaped into the rows the Aeries assets would have written for it, through the platform's
own frames and categorisation, so the bulk-loaded warehouse is what the pulls would have left:

- schools: ``n_schools`` real schools (codes from 101; even codes elementary K-5, odd codes secondary 6-12,
  as ``generate_year``'s calendars have it) plus the district (0) and transfer (999) pseudo-schools;
- per year: each school's absence-code table and the district's (``aptool_demo.codes``: school 102 keeps its
  own clashing letters), the calendars, enrollment stints, the roster with demographic codes (the current
  year's in ``aptool.students``/``student_demographics``, a past year's in ``aptool.past_year_students``),
  program records (about 12% special education, 50% free and 10% reduced-price meals, 2% homeless), and the
  coded days (each category written with that school's letter, then categorised by
  ``attendance_day_rows`` as a pull does).

For the current year everything stops at the as-of date: stints that begin later are not there yet, a leave
date after it is still open, and there are no coded days after it. The same year (same seed) is identical in
every warehouse it is loaded into. Only IDs, codes and dates: the names are placeholders.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import polars as pl

from aptool_assets.rules.attendance_cells import attendance_day_rows
from aptool_assets.sources.aeries import frames
from aptool_assets.storage.warehouse import Between, TableSpec, TableWrite, Warehouse
from aptool_assets.tables.aeries import (
    ABSENCE_CODES,
    ATTENDANCE_DAYS,
    ENROLLMENT,
    PAST_YEAR_STUDENTS,
    SCHOOL_CALENDAR,
    SCHOOLS,
    STUDENT_DEMOGRAPHICS,
    STUDENT_PROGRAMS,
    STUDENTS,
)
from aptool_assets.vocabulary import school_year_bounds
from aptool_demo.attendance_years import FIRST_SCHOOL_CODE, generate_year
from aptool_demo.calendars import build_calendar
from aptool_demo.codes import absence_code_table, letters_for
from aptool_demo.records import PROGRAM_DESCRIPTIONS, school_record
from aptool_demo.sim_district import SimDistrict

DISTRICT_CODE, TRANSFER_CODE = 0, 999
MEANING = {
    "absent_excused": "excused",
    "absent_unverified": "unverified",
    "absent_unexcused": "unexcused",
    "suspension_out_of_school": "oss",
    "tardy": "tardy",
    "not_enrolled": "tne",
}
"""``generate_year``'s categories → the code meaning a school enters them with (its letter: ``letters_for``)."""
PROGRAM_SHARES = {"144": 0.12, "181": 0.50, "182": 0.10, "191": 0.02}
RACE_CODES = ["700", "700", "600", "203", "100", "201", "400", "303"]


def as_served(records: list[dict]) -> list[dict]:
    """Records as the simulator serves them (JSON: dates as ``YYYY-MM-DDT00:00:00``), for the frames."""

    def encode(value: object) -> str:
        if isinstance(value, dt.date):
            return value.strftime("%Y-%m-%dT00:00:00")
        raise TypeError(type(value).__name__)

    return json.loads(json.dumps(records, default=encode))


def school_codes(n_schools: int) -> list[int]:
    return list(range(FIRST_SCHOOL_CODE, FIRST_SCHOOL_CODE + n_schools))


def _is_elementary(code: int) -> bool:
    return code % 2 == 0  # as generate_year builds the calendars


def school_records(school_year: int, n_schools: int) -> list[dict]:
    """``/schools`` of the district: the real schools and the two pseudo-schools."""
    real = [
        school_record(school_year, code, f"School {code}", *((0, 5) if _is_elementary(code) else (6, 12)))
        for code in school_codes(n_schools)
    ]
    pseudo = [
        school_record(school_year, DISTRICT_CODE, "District Office", -1, 12, pseudo=True),
        school_record(school_year, TRANSFER_CODE, "Inactive and Transferred Students", -2, 12, pseudo=True),
    ]
    return sorted(real + pseudo, key=lambda s: s["SchoolCode"])


def calendars(school_year: int, n_schools: int) -> dict[int, list[dict]]:
    """Each school's ``/calendar`` (the same calendars ``generate_year`` draws the attendance on)."""
    return {
        code: build_calendar(school_year, code, elementary=_is_elementary(code), period_school=False)
        for code in school_codes(n_schools)
    }


def code_tables(n_schools: int) -> dict[int, list[dict]]:
    """``/AbsenceCodes`` of the district (0) and of each school."""
    return {code: absence_code_table(code, letters_for(code)) for code in [DISTRICT_CODE, *school_codes(n_schools)]}


@dataclass(frozen=True)
class DistrictYear:
    """One school year's rows, by the table they are written to, and the coded days as Aeries holds them."""

    school_year: int
    current: bool
    rows: dict[str, pl.DataFrame]  # table name → rows of the year (the whole table for schools)
    coded: pl.DataFrame  # student_id, school_code, calendar_date, all_day_code: what the simulator serves

    @property
    def attendance_rows(self) -> int:
        return self.rows[ATTENDANCE_DAYS.name].height

    @property
    def students(self) -> int:
        return self.rows[ENROLLMENT.name].get_column("student_id").n_unique()


def generate_district_year(
    school_year: int,
    *,
    n_students: int,
    n_schools: int,
    seed: int,
    through: dt.date | None = None,
    pulled_at: dt.datetime | None = None,
) -> DistrictYear:
    """The year's warehouse rows; ``through`` (the as-of date) makes it the current year, cut there."""
    pulled_at = pulled_at or dt.datetime.now(dt.UTC)
    year = generate_year(school_year, n_students=n_students, n_schools=n_schools, seed=seed)
    rng = np.random.default_rng([seed, school_year, 1])
    cut = through or school_year_bounds(school_year)[1]

    enrollment = year.enrollment.filter(pl.col("enter_date") <= cut).with_columns(
        pl.when(pl.col("leave_date") <= cut).then(pl.col("leave_date")).otherwise(None).alias("leave_date")
    )
    grades = _grades(enrollment, rng)
    enrollment = (
        enrollment.join(grades, on="student_id")
        .with_columns(
            pl.lit(school_year, pl.Int32).alias("academic_year"),
            pl.when(pl.col("leave_date").is_null())
            .then(pl.lit(""))
            .otherwise(pl.lit("T160"))
            .alias("exit_reason_code"),
            pl.lit(pulled_at).alias("source_updated_at"),
        )
        .select(list(ENROLLMENT.columns))
    )
    codes = _code_rows(school_year, n_schools, pulled_at)
    coded = _coded_days(year.attendance_days.filter(pl.col("calendar_date") <= cut))
    raw = coded.with_columns(pl.lit([], dtype=frames.ATTENDANCE_SCHEMA["period_codes"]).alias("period_codes"))
    attendance = attendance_day_rows(raw.select(list(frames.ATTENDANCE_SCHEMA)), codes, pulled_at, "aeries_pull")

    roster = _roster(enrollment, rng, pulled_at)
    rows = {
        ABSENCE_CODES.name: codes,
        SCHOOL_CALENDAR.name: _calendar_rows(school_year, n_schools),
        ENROLLMENT.name: enrollment,
        STUDENT_PROGRAMS.name: _programs(roster, school_year, rng, pulled_at),
        ATTENDANCE_DAYS.name: attendance,
    }
    if through is not None:
        rows[SCHOOLS.name] = _school_rows(school_year, n_schools, pulled_at)
        rows[STUDENTS.name] = roster.select(list(STUDENTS.columns))
        rows[STUDENT_DEMOGRAPHICS.name] = roster.select(list(STUDENT_DEMOGRAPHICS.columns))
    else:
        rows[PAST_YEAR_STUDENTS.name] = roster.with_columns(pl.lit(school_year, pl.Int32).alias("school_year")).select(
            list(PAST_YEAR_STUDENTS.columns)
        )
    return DistrictYear(school_year, through is not None, rows, coded)


def _grades(enrollment: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """A grade per student from their first school: K-5 at an elementary school, 6-12 at a secondary one."""
    first = enrollment.sort("enter_date").group_by("student_id", maintain_order=True).first().sort("student_id")
    elementary = (first.get_column("school_code").to_numpy() % 2) == 0
    grade = np.where(elementary, rng.integers(0, 6, first.height), rng.integers(6, 13, first.height))
    return pl.DataFrame({"student_id": first.get_column("student_id"), "grade": grade.astype(np.int32)})


def _school_rows(school_year: int, n_schools: int, pulled_at: dt.datetime) -> pl.DataFrame:
    df = frames.schools_frame(as_served(school_records(school_year, n_schools)))
    real = frames.is_real_school().alias("is_real_school")
    return df.with_columns(real, pl.lit(pulled_at).alias("source_updated_at"))


def _code_rows(school_year: int, n_schools: int, pulled_at: dt.datetime) -> pl.DataFrame:
    records = [row for table in code_tables(n_schools).values() for row in table]
    return frames.absence_codes_frame(as_served(records)).with_columns(
        pl.lit(school_year, pl.Int32).alias("school_year"), pl.lit(pulled_at).alias("source_updated_at")
    )


def _calendar_rows(school_year: int, n_schools: int) -> pl.DataFrame:
    records = [row for rows in calendars(school_year, n_schools).values() for row in rows]
    first, last = school_year_bounds(school_year)
    return (
        frames.calendar_frame(as_served(records))
        .filter(pl.col("calendar_date").is_between(first, last))
        .with_columns(
            pl.lit(school_year, pl.Int32).alias("school_year"),
            pl.col("holiday_code").is_in(["", "%"]).alias("is_instructional"),
        )
    )


def _coded_days(days: pl.DataFrame) -> pl.DataFrame:
    """Each generated category as the letter its school enters it with (school 102's letters differ)."""
    letters = pl.DataFrame(
        [
            (code, category, letters_for(code)[meaning])
            for code in days.get_column("school_code").unique().to_list()
            for category, meaning in MEANING.items()
        ],
        schema={"school_code": pl.Int32, "absence_category": pl.Utf8, "all_day_code": pl.Utf8},
        orient="row",
    )
    return (
        days.join(letters, on=["school_code", "absence_category"], how="left")
        .select("student_id", "school_code", "calendar_date", "all_day_code")
        .sort("calendar_date", "school_code", "student_id")
    )


def _roster(enrollment: pl.DataFrame, rng: np.random.Generator, pulled_at: dt.datetime) -> pl.DataFrame:
    """One record per student and school (their stints there), with demographic codes and placeholder names."""
    records = (
        enrollment.sort("enter_date")
        .group_by("student_id", "school_code", maintain_order=True)
        .agg(
            pl.col("grade").last(),
            pl.col("enter_date").min().alias("school_enter_date"),
            pl.col("leave_date").last().alias("school_leave_date"),
        )
        .sort("school_code", "student_id")
        .with_columns(
            (pl.int_range(pl.len()).over("school_code") + 1).cast(pl.Int64).alias("student_number"),
            (pl.col("student_id") + 4_000_000_000).cast(pl.Utf8).alias("state_student_id"),
            pl.lit("Student").alias("first_name"),
            pl.col("student_id").cast(pl.Utf8).alias("last_name"),
            pl.when(pl.col("school_leave_date").is_null())
            .then(pl.lit(""))
            .otherwise(pl.lit("T"))
            .alias("inactive_status_code"),
        )
        .with_columns((pl.col("inactive_status_code") == "").alias("is_active"))
    )
    n = records.height
    hispanic = rng.random(n) < 0.45
    fluency = np.where(rng.random(n) < 0.2, "L", np.where(hispanic, rng.choice(["R", "I"], n), "E"))
    return records.with_columns(
        pl.Series("ethnicity_code", np.where(hispanic, "Y", "N")),
        pl.Series("race_code_1", rng.choice(RACE_CODES, n)),
        *(pl.lit(None, pl.Utf8).alias(f"race_code_{i}") for i in range(2, 6)),
        pl.Series("language_fluency_code", fluency),
        pl.Series("parent_ed_level_code", rng.choice(["10", "11", "12", "13", "14", "15"], n)),
        pl.lit(pulled_at).alias("source_updated_at"),
    )


def _programs(roster: pl.DataFrame, school_year: int, rng: np.random.Generator, pulled_at: dt.datetime) -> pl.DataFrame:
    """Program stints open all year for a share of the students (at each school they have a record at)."""
    first = school_year_bounds(school_year)[0]
    parts = []
    for code, share in PROGRAM_SHARES.items():
        chosen = roster.filter(pl.Series(rng.random(roster.height) < share))
        parts.append(
            chosen.select(
                pl.lit(school_year, pl.Int32).alias("school_year"),
                "student_id",
                "school_code",
                pl.lit(code).alias("program_code"),
                pl.lit(PROGRAM_DESCRIPTIONS[code]).alias("program_description"),
                pl.lit(first).alias("start_date"),
                pl.lit(None, pl.Date).alias("end_date"),
                pl.lit(pulled_at).alias("source_updated_at"),
            )
        )
    return pl.concat(parts).select(list(STUDENT_PROGRAMS.columns))


YEAR_SLICES: dict[str, str] = {
    ABSENCE_CODES.name: "school_year",
    SCHOOL_CALENDAR.name: "school_year",
    ENROLLMENT.name: "academic_year",
    STUDENT_PROGRAMS.name: "school_year",
    PAST_YEAR_STUDENTS.name: "school_year",
}
"""The column each year-partitioned table's slice of a year is replaced by."""
TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        SCHOOLS,
        ABSENCE_CODES,
        SCHOOL_CALENDAR,
        ENROLLMENT,
        STUDENT_PROGRAMS,
        ATTENDANCE_DAYS,
        STUDENTS,
        STUDENT_DEMOGRAPHICS,
        PAST_YEAR_STUDENTS,
    )
}


def load_year(wh: Warehouse, year: DistrictYear) -> dict[str, int]:
    """Write the year's rows through the warehouse, each table's slice of the year replaced (one transaction)."""
    first, last = school_year_bounds(year.school_year)
    writes = []
    for name, df in year.rows.items():
        if name in YEAR_SLICES:
            where = {YEAR_SLICES[name]: year.school_year}
        elif name == ATTENDANCE_DAYS.name:
            where = {"calendar_date": Between(first, last)}
        else:
            where = {}  # schools and the current roster: the whole table
        writes.append(TableWrite(TABLES[name], df, where))
    return wh.write(*writes)


def sim_district(year: DistrictYear, n_schools: int, first: dt.date, last: dt.date) -> SimDistrict:
    """The current year as the simulated Aeries holds it for a re-pull of [first, last]: the schools, calendars,
    absence codes and every school's coded days of that window (the roster, enrollment and history are not
    asked for by an attendance pull, and are left out to keep 50,000 student records out of memory)."""
    days = year.coded.filter(pl.col("calendar_date").is_between(first, last))
    attendance: dict[int, dict[int, dict[dt.date, dict]]] = {code: {} for code in school_codes(n_schools)}
    for sid, school, day, letter in days.iter_rows():
        attendance[school].setdefault(sid, {})[day] = {"all_day": letter, "periods": {}}
    return SimDistrict(
        school_year=year.school_year,
        schools=school_records(year.school_year, n_schools),
        students=[],
        enrollment=[],
        calendars=calendars(year.school_year, n_schools),
        absence_codes=code_tables(n_schools),
        attendance=attendance,
        data_changes=[],
    )
