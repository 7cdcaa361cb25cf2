"""Benchmark: raw Aeries-shaped rows → ``student_attendance_summary`` for a 50,000-student district.

    python benchmarks/bench_attendance_summary.py [--students 50000] [--schools 30] [--repeats 3]

1. Generates a seeded synthetic district (vectorised numpy/polars): per-school calendars with
   180 instructional days plus weekends, holidays and minimum days; enrollment with transfers,
   withdrawals, late entries and duplicated (overlapping) stints; per-school absence-code
   tables where some letters mean different things at different schools; sparse negative
   attendance (≈6-7 % of enrolled student-days coded, period-only rows at secondary schools,
   a few codes on weekends or outside the stints). Written to Parquet in a temp directory.
2. Runs, each in its own subprocess so memory can be measured per implementation:
   (a) ``aptool_assets.rules.attendance.student_attendance_summary``, best of ``--repeats``;
   (b) a straightforward pandas implementation of the same rules (explode every enrolled
       student-day, merge the codes, groupby) — the baseline.
   Inputs are loaded (and converted to pandas for (b)) before the clock starts.
3. Checks (a) and (b) produce identical frames, prints the figures and exits non-zero when
   (a) takes more than 5 s, (a) is less than 5x faster than (b), or the results differ.

Memory: ``tracemalloc`` does not see polars' (Rust) allocations, and ``ru_maxrss`` of a
fork+exec'd worker starts at the parent's high-water mark, so each worker reads its RSS
(VmRSS) just before the timed runs, resets the kernel's high-water mark (clear_refs) and reads
VmHWM afterwards (see ``PeakRss``). "Extra" = peak − RSS before: what the computation needed
on top of its loaded inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aptool_assets.rules.attendance import (
    ABSENCE_CODES_SCHEMA,
    ATTENDANCE_SCHEMA,
    PERIOD_CODES_DTYPE,
    SUMMARY_SCHEMA,
    student_attendance_summary,
)
from aptool_assets.rules.enrollment import CALENDAR_SCHEMA, ENROLLMENT_SCHEMA

SCHOOL_YEAR = 2025
YEAR_START, YEAR_END = date(2025, 7, 1), date(2026, 6, 30)
AS_OF = YEAR_END
MAX_SECONDS = 5.0
MIN_SPEEDUP = 5.0
N_PERIODS = 6
INPUTS = ("calendar", "enrollment", "attendance", "absence_codes")

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


# --- workers (one subprocess per implementation) ------------------------------------------------


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakRss:
    """Peak RSS of this process over a block, on top of what it held at the start.

    Linux can reset the high-water mark (``echo 5 > /proc/self/clear_refs``), after which
    VmHWM is the peak of the block alone. Without that (old kernel, locked-down /proc) a thread
    samples VmRSS every 2 ms, which can miss a very short spike. ``ru_maxrss`` is no good
    here: after fork+exec it still carries the parent's high-water mark.
    """

    def __enter__(self) -> PeakRss:
        import threading

        self.before_mb = _status_mb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM after resetting it via /proc/self/clear_refs"
            self._thread = None
        except OSError:
            self.method = "VmRSS sampled every 2 ms"
            self._sampled, self._stop = self.before_mb, threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._sampled = max(self._sampled, _status_mb("VmRSS"))

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            self.peak_mb = _status_mb("VmHWM")
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._sampled, _status_mb("VmRSS"))


def worker(kind: str, data_dir: Path, repeats: int) -> None:
    frames = {name: pl.read_parquet(data_dir / f"{name}.parquet") for name in INPUTS}
    if kind == "pandas":
        frames = {name: frame.to_pandas() for name, frame in frames.items()}
        run = pandas_summary
    else:
        run = student_attendance_summary
    times, result = [], None
    with PeakRss() as memory:
        for _ in range(repeats):
            started = time.perf_counter()
            result = run(**frames, school_year=SCHOOL_YEAR, as_of_date=AS_OF)
            times.append(time.perf_counter() - started)
    if kind == "pandas":
        result = pl.from_pandas(result).with_columns(pl.col("as_of_date").cast(pl.Date)).cast(SUMMARY_SCHEMA)
    result.write_parquet(data_dir / f"result_{kind}.parquet")
    print(
        json.dumps(
            {"times": times, "rss_before_mb": memory.before_mb, "peak_mb": memory.peak_mb, "method": memory.method}
        )
    )


def run_worker(kind: str, data_dir: Path, repeats: int) -> dict:
    env = {**os.environ}
    env.setdefault("POLARS_MAX_THREADS", "2")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--data", str(data_dir), "--repeats", str(repeats)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{kind} worker failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=50_000)
    parser.add_argument("--schools", type=int, default=30)
    parser.add_argument("--seed", type=int, default=20250901)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the polars implementation")
    parser.add_argument("--pandas-repeats", type=int, default=1, help="timed runs of the pandas baseline")
    parser.add_argument("--worker", choices=["polars", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.repeats)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_attendance_") as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        frames = generate(args.students, args.schools, args.seed)
        for name, frame in frames.items():
            frame.write_parquet(data_dir / f"{name}.parquet")
        generated_in = time.perf_counter() - started

        fast = run_worker("polars", data_dir, args.repeats)
        slow = run_worker("pandas", data_dir, args.pandas_repeats)
        ours = pl.read_parquet(data_dir / "result_polars.parquet")
        baseline = pl.read_parquet(data_dir / "result_pandas.parquet")
        identical = ours.equals(baseline)

    attendance = frames["attendance"]
    period_rows = attendance.filter(pl.col("period_codes").list.len() > 0).height
    period_only = attendance.filter(pl.col("all_day_code").is_null()).height
    student_days = int(ours["days_enrolled"].sum())
    best_fast, best_slow = min(fast["times"]), min(slow["times"])
    speedup = best_slow / best_fast
    threads = os.environ.get("POLARS_MAX_THREADS", "2")

    print(
        f"district      {args.students:,} students, {args.schools} schools, seed {args.seed} "
        f"(generated in {generated_in:.1f} s)"
    )
    print(
        f"input rows    calendar {frames['calendar'].height:,}  enrollment {frames['enrollment'].height:,}  "
        f"codes {frames['absence_codes'].height:,}  attendance {attendance.height:,} "
        f"({period_rows:,} with period codes, {period_only:,} period-only)"
    )
    print(f"student-days  {student_days:,} enrolled (coded: {attendance.height / student_days:.1%})")
    print(
        f"summary rows  {ours.height:,} (chronic {ours['is_chronically_absent'].sum():,}, "
        f"truancy letter ≥1 {(ours['truancy_letter_level'] > 0).sum():,})"
    )
    print(
        f"polars        best {best_fast:.3f} s of {len(fast['times'])} "
        f"({', '.join(f'{t:.3f}' for t in fast['times'])}), POLARS_MAX_THREADS={threads}, {os.cpu_count()} CPUs"
    )
    print(
        f"pandas        best {best_slow:.3f} s of {len(slow['times'])} ({', '.join(f'{t:.3f}' for t in slow['times'])})"
    )
    print(f"speed-up      {speedup:.1f}x")
    for name, m in (("polars", fast), ("pandas", slow)):
        print(
            f"memory {name:<7}peak RSS {m['peak_mb']:,.0f} MB with inputs loaded ({m['rss_before_mb']:,.0f} MB "
            f"before the runs) → {m['peak_mb'] - m['rss_before_mb']:,.0f} MB extra"
        )
    print(f"memory method {fast['method']}; each implementation in its own subprocess")
    print(f"results       {'identical' if identical else 'DIFFERENT'} (polars vs pandas, all columns)")

    failures = []
    if not identical:
        failures.append("results differ")
    if best_fast > MAX_SECONDS:
        failures.append(f"polars took {best_fast:.2f} s > {MAX_SECONDS} s")
    if speedup < MIN_SPEEDUP:
        failures.append(f"speed-up {speedup:.1f}x < {MIN_SPEEDUP}x")
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
