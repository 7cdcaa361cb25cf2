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
   The district generator and the baseline live in ``attendance_summary_data.py`` beside this script.
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
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attendance_summary_data import SCHOOL_YEAR, YEAR_END, generate, pandas_summary

from aptool_assets.rules.attendance import SUMMARY_SCHEMA, student_attendance_summary

AS_OF = YEAR_END
MAX_SECONDS = 5.0
MIN_SPEEDUP = 5.0
INPUTS = ("calendar", "enrollment", "attendance", "absence_codes")


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
