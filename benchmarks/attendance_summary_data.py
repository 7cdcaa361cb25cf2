"""The data side of bench_attendance_summary.py: a seeded synthetic 50,000-student district as raw
Aeries-shaped frames (``generate``) and the pandas baseline of the same rules (``pandas_summary``).

Imported by the benchmark script, which puts the repository on sys.path first (run as
``python benchmarks/bench_attendance_summary.py``, this directory is on sys.path already).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import polars as pl

from aptool_assets.rules.attendance import (
    ABSENCE_CODES_SCHEMA,
    ATTENDANCE_SCHEMA,
    PERIOD_CODES_DTYPE,
    SUMMARY_SCHEMA,
)
from aptool_assets.rules.enrollment import CALENDAR_SCHEMA, ENROLLMENT_SCHEMA

SCHOOL_YEAR = 2025
YEAR_START, YEAR_END = date(2025, 7, 1), date(2026, 6, 30)
N_PERIODS = 6

# --- synthetic district ------------------------------------------------------------------------

# (letter, type_code, counts_for_ada, is_suspension, is_partial_day_truant, is_tne, weight in codes)
BASE_CODES = [
    ("A", 1, False, False, False, False, 0.14),  # unverified
    ("E", 2, False, False, False, False, 0.16),  # excused
    ("I", 2, False, False, False, False, 0.16),  # illness
    ("D", 2, False, False, False, False, 0.06),  # doctor's note
    ("U", 3, False, False, False, False, 0.10),  # unexcused
    ("T", 5, True, False, False, False, 0.16),  # tardy
    ("L", 9, True, False, True, False, 0.05),  # tardy > 30 min, partial-day truant
    ("X", 8, True, False, False, False, 0.04),  # excused tardy
    ("P", 6, True, False, False, False, 0.03),  # present (activity)
    ("V", 4, True, False, False, False, 0.02),  # verified not absent
    ("S", 2, False, True, False, False, 0.03),  # out-of-school suspension
    ("N", 6, True, True, False, False, 0.02),  # in-school suspension
    ("G", 2, False, False, False, True, 0.02),  # temporarily not enrolled
    ("Q", 2, False, False, False, False, 0.01),  # a letter some schools never defined
]
PERIOD_ONLY_CODES = np.array(["T", "L", "U", "X"])
PERIOD_ONLY_WEIGHTS = np.array([0.55, 0.2, 0.2, 0.05])


def make_calendar(rng: np.random.Generator, schools: np.ndarray) -> pl.DataFrame:
    """Every date of the year per school: 180 instructional days, the rest coded as not in session."""
    all_days = np.arange(np.datetime64(YEAR_START), np.datetime64(YEAR_END) + 1)
    weekday = (all_days.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    frames = []
    for school in schools:
        first = np.datetime64("2025-08-11") + rng.integers(0, 10)
        codes = np.full(all_days.size, "@", dtype=object)
        candidates = np.flatnonzero((weekday < 5) & (all_days >= first))
        holidays = rng.choice(candidates[:200], size=22, replace=False)
        codes[holidays] = rng.choice(["#", "#", "#", "$", "+", "@"], size=holidays.size)
        school_days = np.setdiff1d(candidates, holidays)[:180]
        codes[school_days] = np.where(rng.random(school_days.size) < 0.08, "%", "")
        frames.append(
            pl.DataFrame(
                {
                    "school_code": np.full(all_days.size, school, dtype=np.int32),
                    "calendar_date": all_days,
                    "holiday_code": codes.astype(str),
                }
            )
        )
    return pl.concat(frames).cast(CALENDAR_SCHEMA)


def make_codes(rng: np.random.Generator, schools: np.ndarray) -> pl.DataFrame:
    """The base table per school, with local differences: the same letter may mean another thing."""
    rows = []
    for i, school in enumerate(schools):
        for letter, type_code, ada, suspension, truant, tne, _ in BASE_CODES:
            if letter == "Q" and i % 4 == 0:
                continue  # unknown at a quarter of the schools
            if letter == "S" and i % 3 == 1:
                ada = True  # here S is in-school suspension
            if letter == "X" and i % 5 == 2:
                type_code = 3  # here X is unexcused
            rows.append((int(school), letter, type_code, ada, suspension, truant, tne))
    return pl.DataFrame(rows, schema=ABSENCE_CODES_SCHEMA, orient="row")


def make_enrollment(rng: np.random.Generator, n_students: int, schools: np.ndarray) -> pl.DataFrame:
    """One stint per student, plus transfers (two schools), withdrawals, late entries, duplicates."""
    ids = np.arange(1_000_001, 1_000_001 + n_students, dtype=np.int64)
    weights = rng.dirichlet(np.full(schools.size, 5.0))
    home = rng.choice(schools, size=n_students, p=weights)
    day = np.datetime64("2025-08-01")
    enter = np.where(rng.random(n_students) < 0.25, np.datetime64("2024-08-12"), day)  # open since last year
    late = rng.random(n_students) < 0.07
    enter = np.where(late, day + rng.integers(20, 250, n_students), enter)
    leave = np.full(n_students, np.datetime64("NaT"), dtype="datetime64[D]")
    kind = rng.random(n_students)
    withdrawn = (kind < 0.05) & ~late
    leave[withdrawn] = day + rng.integers(40, 300, withdrawn.sum())
    transfer = (kind >= 0.05) & (kind < 0.13) & ~late
    move = day + rng.integers(60, 250, n_students)
    leave[transfer] = move[transfer]
    stints = pl.DataFrame({"student_id": ids, "school_code": home, "enter_date": enter, "leave_date": leave})

    new_school = (home + 1 + rng.integers(0, schools.size - 1, n_students) - schools[0]) % schools.size + schools[0]
    moved = pl.DataFrame(
        {
            "student_id": ids,
            "school_code": new_school,
            "enter_date": move + rng.integers(1, 6, n_students),
            "leave_date": np.full(n_students, np.datetime64("NaT"), dtype="datetime64[D]"),
        }
    )
    duplicate = rng.random(n_students) < 0.01  # a re-entered stint overlapping the open one
    again = stints.filter(pl.Series(duplicate)).with_columns(
        (pl.col("enter_date") + pl.duration(days=30)).alias("enter_date")
    )
    return pl.concat([stints, moved.filter(pl.Series(transfer)), again], how="vertical_relaxed").cast(ENROLLMENT_SCHEMA)


def make_attendance(rng: np.random.Generator, calendar, enrollment, codes, period_schools) -> pl.DataFrame:
    """Sparse coded days: a per-student propensity (Beta, mean ≈ 6.5 %) drawn per enrolled day."""
    # Every enrolled school day of every stint, in a fixed order (so the draws are seeded):
    # each stint is a contiguous run in the (school, date)-sorted list of school days.
    school_days = (
        calendar.filter(pl.col("holiday_code").is_in(["", "%"]))
        .select("school_code", "calendar_date")
        .sort("school_code", "calendar_date")
    )
    day_key = school_days["school_code"].cast(pl.Int64) * 100_000 + school_days["calendar_date"].cast(pl.Int64)
    stint_key = enrollment["school_code"].cast(pl.Int64) * 100_000
    first = day_key.search_sorted(stint_key + enrollment["enter_date"].cast(pl.Int64), side="left")
    last = day_key.search_sorted(
        stint_key + enrollment["leave_date"].fill_null(date(2099, 1, 1)).cast(pl.Int64), side="right"
    )
    enrolled = (
        enrollment.select("student_id", "school_code")
        .with_columns(pl.int_ranges(first.cast(pl.Int64), last.cast(pl.Int64)).alias("i"))
        .explode("i")
        .drop_nulls("i")
    )
    enrolled = enrolled.with_columns(school_days["calendar_date"].gather(enrolled["i"])).drop("i")
    propensity = pl.DataFrame({"student_id": enrollment["student_id"].unique().sort()})
    propensity = propensity.with_columns(pl.Series("p", rng.beta(1.3, 18.7, propensity.height)))
    enrolled = enrolled.join(propensity, on="student_id", maintain_order="left")
    coded = enrolled.filter(pl.Series(rng.random(enrolled.height)) < pl.col("p")).drop("p")

    # A few codes where they must be ignored: weekends and days outside the stints.
    noise = enrolled.drop("p").gather(rng.integers(0, enrolled.height, 2_000))
    shift = pl.Series("shift", rng.integers(-60, 300, noise.height))
    noise = noise.with_columns(pl.col("calendar_date") + pl.duration(days=shift))
    # Overlapping stints draw a day twice; one coded row per student-day, as Aeries sends.
    coded = pl.concat([coded, noise]).unique(["student_id", "school_code", "calendar_date"], maintain_order=True)

    n = coded.height
    is_period_school = coded["school_code"].is_in(list(period_schools)).to_numpy()
    period_only = is_period_school & (rng.random(n) < 0.35)
    letters = np.array([c[0] for c in BASE_CODES])
    weights = np.array([c[-1] for c in BASE_CODES])
    all_day = np.where(period_only, None, rng.choice(letters, size=n, p=weights / weights.sum()))
    coded = coded.with_columns(pl.Series("all_day_code", all_day, dtype=pl.Utf8)).with_row_index("_row")

    # Classes: six identical codes with an all-day code at period schools, 1-3 periods otherwise.
    full = coded.filter(pl.Series(is_period_school & ~period_only)).select(
        "_row", "school_code", pl.col("all_day_code").alias("code"), pl.lit(N_PERIODS).alias("n")
    )
    partial = coded.filter(pl.Series(period_only)).select("_row", "school_code")
    partial = partial.with_columns(
        pl.Series("code", rng.choice(PERIOD_ONLY_CODES, size=partial.height, p=PERIOD_ONLY_WEIGHTS)),
        pl.Series("n", rng.integers(1, 4, partial.height)),
    )
    periods = (
        pl.concat([full, partial], how="vertical_relaxed")
        .with_columns(pl.int_ranges(0, "n").alias("i"))
        .explode("i")
        .with_columns(
            (pl.col("i") + 1).cast(pl.Utf8).alias("period"),
            (pl.col("school_code").cast(pl.Int64) * 1000 + pl.col("i") * 10).alias("section_number"),
        )
        .group_by("_row")
        .agg(pl.struct("period", "section_number", "code").alias("period_codes"))
    )
    return (
        coded.join(periods, on="_row", how="left")
        .sort("school_code", "student_id", "calendar_date")
        .select(list(ATTENDANCE_SCHEMA))
        .cast({"period_codes": PERIOD_CODES_DTYPE, "school_code": pl.Int32, "student_id": pl.Int64})
    )


def generate(n_students: int, n_schools: int, seed: int) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    schools = np.arange(101, 101 + n_schools, dtype=np.int32)
    calendar = make_calendar(rng, schools)
    codes = make_codes(rng, schools)
    enrollment = make_enrollment(rng, n_students, schools)
    period_schools = schools[: n_schools // 3]  # secondary schools take period attendance
    attendance = make_attendance(rng, calendar, enrollment, codes, period_schools)
    return {"calendar": calendar, "enrollment": enrollment, "attendance": attendance, "absence_codes": codes}


# --- the pandas baseline -------------------------------------------------------------------------

FULL_DAY = ["absent_unverified", "absent_excused", "absent_unexcused", "suspension_out_of_school"]
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
KEY = ["student_id", "school_code"]
DAY = ["student_id", "school_code", "calendar_date"]


def pandas_summary(calendar, enrollment, attendance, absence_codes, school_year, as_of_date) -> pd.DataFrame:
    """Contract §4.1 the obvious pandas way: every enrolled day as a row, then merge and groupby."""
    year_start = pd.Timestamp(school_year, 7, 1)
    as_of = min(pd.Timestamp(as_of_date), pd.Timestamp(school_year + 1, 6, 30))

    holiday = calendar["holiday_code"].fillna("").str.strip()
    school_days = calendar.loc[holiday.isin(["", "%"]), ["school_code", "calendar_date"]].drop_duplicates()

    codes = absence_codes.copy()
    codes["code"] = codes["code"].fillna("").str.strip()
    codes = codes[codes["code"] != ""].drop_duplicates(["school_code", "code"])
    for flag in ["counts_for_ada", "is_suspension", "is_partial_day_truant", "is_temporarily_not_enrolled"]:
        codes[flag] = codes[flag].eq(True)  # null → False; .eq(True) also reads the NaN of a left merge
    codes["truant"] = codes["is_partial_day_truant"] | (codes["type_code"] == 3)

    # Categorize the coded days.
    att = attendance.copy()
    att["row"] = np.arange(len(att))
    att["code"] = att["all_day_code"].fillna("").str.strip()
    att = att.merge(codes, on=["school_code", "code"], how="left")
    periods = att[["row", "school_code", "period_codes"]].explode("period_codes").dropna(subset=["period_codes"])
    periods["code"] = [(p["code"] or "").strip() for p in periods["period_codes"]]
    periods = periods[periods["code"] != ""].merge(
        codes[["school_code", "code", "truant"]], on=["school_code", "code"], how="left"
    )
    periods["truant"] = periods["truant"].eq(True)
    period_truant = periods.groupby("row")["truant"].any()
    has_code = att["code"] != ""
    known = att["type_code"].notna()
    suspension = att["is_suspension"].eq(True)
    ada = att["counts_for_ada"].eq(True)
    tne = att["is_temporarily_not_enrolled"].eq(True)
    att["category"] = np.select(
        [~has_code & att["row"].isin(periods["row"]), ~has_code | ~known, tne, suspension & ~ada, suspension],
        [
            pd.Series("partial", index=att.index),
            pd.Series(None, index=att.index, dtype=object),
            "not_enrolled",
            "suspension_out_of_school",
            "suspension_in_school",
        ],
        default=att["type_code"].map(TYPE_CATEGORY),
    )
    all_day_truant = known & att["truant"].eq(True)
    att["truancy"] = (all_day_truant | att["row"].map(period_truant).eq(True)) & (att["category"] != "not_enrolled")
    att = att.drop_duplicates(DAY, keep="last")[[*DAY, "category", "truancy"]]

    # Explode enrolled days.
    stints = enrollment[
        (enrollment["enter_date"] <= as_of)
        & (enrollment["leave_date"].isna() | (enrollment["leave_date"] >= year_start))
    ]
    roster = stints[KEY].drop_duplicates()
    stints = stints.assign(
        start=stints["enter_date"].clip(lower=year_start), end=stints["leave_date"].fillna(as_of).clip(upper=as_of)
    )
    days = stints[[*KEY, "start", "end"]].merge(school_days, on="school_code")
    days = days[(days["calendar_date"] >= days["start"]) & (days["calendar_date"] <= days["end"])]
    days = days[DAY].drop_duplicates()

    days = days.merge(att, on=DAY, how="left")
    days = days[days["category"] != "not_enrolled"]
    category = days["category"]
    per_student = (
        days.assign(
            absent=category.isin(FULL_DAY),
            excused=category == "absent_excused",
            unexcused=category == "absent_unexcused",
            unverified=category == "absent_unverified",
            oss=category == "suspension_out_of_school",
            iss=category == "suspension_in_school",
            truant=days["truancy"].eq(True),
        )
        .groupby(KEY)
        .agg(
            days_enrolled=("calendar_date", "size"),
            days_absent=("absent", "sum"),
            days_excused=("excused", "sum"),
            days_unexcused=("unexcused", "sum"),
            days_unverified=("unverified", "sum"),
            days_suspension_out_of_school=("oss", "sum"),
            days_suspension_in_school=("iss", "sum"),
            truancy_count=("truant", "sum"),
        )
        .reset_index()
    )

    out = roster.merge(per_student, on=KEY, how="left")
    counts = [c for c in per_student.columns if c not in KEY]
    out[counts] = out[counts].fillna(0).astype("int32")
    out["absence_rate"] = (out["days_absent"] / out["days_enrolled"]).where(out["days_enrolled"] > 0)
    out["is_chronically_absent"] = (out["days_absent"] * 10 >= out["days_enrolled"]) & (out["days_enrolled"] >= 31)
    rate = out["absence_rate"]
    out["attendance_tier"] = np.select(
        [rate >= 0.20, rate >= 0.10, rate >= 0.05],
        ["severe_chronic", "moderate_chronic", "at_risk"],
        default="satisfactory",
    )
    truancy = out["truancy_count"]
    out["truancy_letter_level"] = np.select([truancy >= 9, truancy >= 6, truancy >= 3], [3, 2, 1], default=0)
    out["school_year"] = school_year
    out["as_of_date"] = as_of
    return out[list(SUMMARY_SCHEMA)].sort_values(KEY).reset_index(drop=True)
