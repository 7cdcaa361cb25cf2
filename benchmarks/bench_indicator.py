"""Benchmark: student groups for two school years + the Chronic Absenteeism Indicator for a 50,000-student,
60-school district.

    python benchmarks/bench_indicator.py [--students 50000] [--schools 60] [--repeats 3]

1. Generates a seeded synthetic district (``indicator_data.generate``): demographics records (one per
   student and school, CALPADS race codes, some with two races, Hispanic ethnicity for about 45%), program
   records with open and closed date ranges, and per-student-per-school rows with grades -1..12 for this
   year (through the as-of date) and last year, 10% of students at a second school each year.
2. Times, best of ``--repeats``: ``student_groups`` for both years, joined to both years' rows, then
   ``chronic_absenteeism_indicator`` (school and district levels, every group, suppression, change);
   and once the pandas baseline of the same rules (``indicator_data.pandas_pipeline``). Inputs are loaded
   (and converted to pandas for the baseline) before the clock starts.
3. Checks both give identical frames, prints the figures and exits non-zero when the polars pipeline takes
   more than 2 s or the results differ.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indicator_data import AS_OF, NOW, PRIOR_AS_OF, SCHOOL_YEAR, generate, pandas_pipeline, to_polars

from aptool_assets.rules.indicator import chronic_absenteeism_indicator
from aptool_assets.rules.student_groups import student_groups

MAX_SECONDS = 2.0
GROUP_COLUMNS = ["school_year", "source_updated_at"]  # of student_groups, not part of the indicator's input


def polars_pipeline(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Both years' groups, joined to both years' rows, then the indicator."""
    years = {}
    for name, year, as_of in (("current", SCHOOL_YEAR, AS_OF), ("prior", SCHOOL_YEAR - 1, PRIOR_AS_OF)):
        groups = student_groups(frames["demographics"], frames["programs"], school_year=year, as_of_date=as_of)
        years[name] = frames[name].join(groups.drop(GROUP_COLUMNS), on="student_id", how="left")
    return chronic_absenteeism_indicator(
        years["current"], years["prior"], school_year=SCHOOL_YEAR, as_of_date=AS_OF, computed_at=NOW
    )


def timed(run, frames, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run(frames)
        times.append(time.perf_counter() - started)
    return times, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=50_000)
    parser.add_argument("--schools", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20260302)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the polars pipeline")
    parser.add_argument("--pandas-repeats", type=int, default=1, help="timed runs of the pandas baseline")
    args = parser.parse_args()

    started = time.perf_counter()
    frames = generate(args.students, args.schools, args.seed)
    generated_in = time.perf_counter() - started
    pandas_frames = {name: frame.to_pandas() for name, frame in frames.items()}

    fast_times, ours = timed(polars_pipeline, frames, args.repeats)
    slow_times, baseline = timed(pandas_pipeline, pandas_frames, args.pandas_repeats)
    baseline = to_polars(baseline)
    identical = ours.equals(baseline)
    best_fast, best_slow = min(fast_times), min(slow_times)

    current, prior = frames["current"], frames["prior"]
    two_schools = current.group_by("student_id").len().filter(pl.col("len") > 1).height
    suppressed = ours["chronic_count"].null_count()
    district = ours.filter((pl.col("level") == "district") & (pl.col("student_group") == "ALL")).row(0, named=True)
    print(
        f"district      {args.students:,} students, {args.schools} schools, seed {args.seed} "
        f"(generated in {generated_in:.1f} s)"
    )
    print(
        f"input rows    demographics {frames['demographics'].height:,}  programs {frames['programs'].height:,}  "
        f"{SCHOOL_YEAR} {current.height:,} ({two_schools:,} students at two schools)  "
        f"{SCHOOL_YEAR - 1} {prior.height:,}"
    )
    print(
        f"indicator     {ours.height:,} rows, {suppressed:,} suppressed; district: {district['chronic_count']:,} of "
        f"{district['eligible_count']:,} eligible chronically absent "
        f"({district['rate_pct']}%, {district['status_level']}; "
        f"last year {district['prior_rate_pct']}%, {district['change_level']})"
    )
    print(
        f"polars        best {best_fast:.3f} s of {len(fast_times)} ({', '.join(f'{t:.3f}' for t in fast_times)}), "
        f"{pl.thread_pool_size()} threads, target ≤ {MAX_SECONDS:.1f} s"
    )
    print(f"pandas        best {best_slow:.3f} s of {len(slow_times)} ({', '.join(f'{t:.3f}' for t in slow_times)})")
    print(f"ratio         pandas / polars = {best_slow / best_fast:.1f}x")
    print(f"results       {'identical' if identical else 'DIFFERENT'} (polars vs pandas, all columns)")

    failures = []
    if not identical:
        failures.append("results differ")
    if best_fast > MAX_SECONDS:
        failures.append(f"polars took {best_fast:.2f} s > {MAX_SECONDS} s")
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
