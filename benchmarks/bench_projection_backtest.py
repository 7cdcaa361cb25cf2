"""Benchmark: back-test of the end-of-year chronic absence projection (contract §4.7), and its speed.

    python benchmarks/bench_projection_backtest.py [--students 20000] [--years 2021-2024] [--seed N]
        [--timing-students 50000] [--repeats 3] [--per-year]

1. Generates complete school years (``aptool_demo.attendance_years``: steady, moderate, chronic, worsening after
   winter break and improving students; late enrollers, transfers, withdrawals; holidays and breaks; seeded).
2. For each year and cut-off (Nov 1, Jan 15, Mar 15) projects from the data as of the cut-off with every method
   of ``aptool_assets.rules.projection.METHODS`` and compares with who was chronically absent on June 30, side
   by side with the naive "chronically absent today" flag (``projection_backtest.py`` beside this script says
   exactly what is counted). Prints the table per year and cut-off, then the years aggregated.
3. Times ``chronic_absence_projection`` (default and contract methods) on one generated year of
   ``--timing-students`` students as of Jan 15, best of ``--repeats``, inputs generated before the clock starts.

Exits non-zero when, at any cut-off with the years aggregated, the default method does not beat the naive flag
(more recall, precision at least as high: contract §4.7), or the default projection of the timing year takes more
than 3 s. Per-year verdicts are printed on every row; with ``--per-year`` a miss in a single year fails too
(at 20,000 students a year one year's margin can be within sampling noise, see the printed verdicts).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from projection_backtest import CUTOFFS, NAIVE, backtest, cutoff_date, with_verdicts

from aptool_assets.rules.projection import CONTRACT_METHOD, DEFAULT_METHOD, METHODS, chronic_absence_projection
from aptool_demo.attendance_years import generate_year, generate_years

MAX_SECONDS = 3.0


def _years(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def _rule_name(rule: str) -> str:
    return rule + (" (default)" if rule == DEFAULT_METHOD else " (contract)" if rule == CONTRACT_METHOD else "")


def print_table(table: pl.DataFrame) -> None:
    header = (
        f"{'year':<6}{'cut-off':<8}{'rule':<21}{'enrolled':>9}{'chronic':>9}{'flagged':>9}{'hits':>7}"
        f"{'precision':>11}{'recall':>8}  vs naive"
    )
    print(header)
    print("-" * len(header))
    previous = None
    for row in table.iter_rows(named=True):
        group = (row["school_year"], row["cutoff"])
        if previous is not None and group != previous:
            print()
        previous = group
        verdict = "" if row["beats_naive"] is None else "beats" if row["beats_naive"] else "MISS"
        year = "all" if row["school_year"] is None else str(row["school_year"])
        print(
            f"{year:<6}{row['cutoff']:<8}{_rule_name(row['rule']):<21}{row['enrolled']:>9,}{row['chronic_at_end']:>9,}"
            f"{row['flagged']:>9,}{row['hits']:>7,}{row['precision']:>11.4f}{row['recall']:>8.4f}  {verdict}"
        )


def time_projection(students: int, school_year: int, seed: int, repeats: int) -> dict[str, tuple[float, int]]:
    """Best time of each of the default and the contract method, and the rows projected."""
    year = generate_year(school_year, n_students=students, seed=seed)
    as_of = cutoff_date(school_year, 1, 15)
    out = {}
    for method in dict.fromkeys([DEFAULT_METHOD, CONTRACT_METHOD]):
        times, rows = [], 0
        for _ in range(repeats):
            started = time.perf_counter()
            rows = chronic_absence_projection(
                calendar=year.calendar,
                enrollment=year.enrollment,
                attendance_days=year.attendance_days,
                school_year=school_year,
                as_of_date=as_of,
                method=method,
            ).height
            times.append(time.perf_counter() - started)
        out[method] = (min(times), rows)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=20_000, help="students per generated year")
    parser.add_argument("--years", type=_years, default=_years("2021-2024"), help="school years, e.g. 2021-2024")
    parser.add_argument("--schools", type=int, default=6)
    parser.add_argument("--seed", type=int, default=20240901)
    parser.add_argument("--timing-students", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each method")
    parser.add_argument("--per-year", action="store_true", help="fail on a miss in any single year too")
    args = parser.parse_args()

    started = time.perf_counter()
    years = generate_years(args.years, n_students=args.students, n_schools=args.schools, seed=args.seed)
    generated_in = time.perf_counter() - started
    started = time.perf_counter()
    table = with_verdicts(backtest(years, list(METHODS)))
    tested_in = time.perf_counter() - started

    print(
        f"years         {args.years[0]}-{args.years[-1]}: {len(years)} × {args.students:,} students, "
        f"{args.schools} schools, seed {args.seed} "
        f"(generated in {generated_in:.1f} s, back-tested in {tested_in:.1f} s)"
    )
    print("population    (student, school) enrolled on the cut-off date; chronic = chronically absent on June 30")
    print(f"methods       {', '.join(_rule_name(m) for m in METHODS)}; naive = chronically absent on the cut-off date")
    print()
    print_table(table)
    print()

    timing = time_projection(args.timing_students, args.years[-1], args.seed, args.repeats)
    threads = os.environ.get("POLARS_MAX_THREADS", "all")
    for method, (seconds, rows) in timing.items():
        print(
            f"timing        {_rule_name(method)}: {seconds:.3f} s for {rows:,} enrolled students as of "
            f"{cutoff_date(args.years[-1], 1, 15)} (best of {args.repeats}; {args.timing_students:,} generated, "
            f"POLARS_MAX_THREADS={threads}, {os.cpu_count()} CPUs)"
        )

    default = table.filter(pl.col("rule") == DEFAULT_METHOD)
    aggregated_misses = default.filter(pl.col("school_year").is_null() & ~pl.col("beats_naive"))
    year_misses = default.filter(pl.col("school_year").is_not_null() & ~pl.col("beats_naive"))
    per_year_cells = default.filter(pl.col("school_year").is_not_null()).height
    print(
        f"verdict       {DEFAULT_METHOD} beats {NAIVE} in {per_year_cells - year_misses.height} of {per_year_cells} "
        f"year × cut-off cells and at {len(CUTOFFS) - aggregated_misses.height} of {len(CUTOFFS)} cut-offs aggregated"
    )

    failures = [
        f"{DEFAULT_METHOD} does not beat the naive flag on {c} (all years)" for c in aggregated_misses["cutoff"]
    ]
    if args.per_year:
        failures += [
            f"{DEFAULT_METHOD} does not beat the naive flag on {c} {y}"
            for y, c in year_misses.select("school_year", "cutoff").iter_rows()
        ]
    if timing[DEFAULT_METHOD][0] > MAX_SECONDS:
        failures.append(f"the projection took {timing[DEFAULT_METHOD][0]:.2f} s > {MAX_SECONDS} s")
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
