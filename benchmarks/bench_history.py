"""Benchmark: five years of history without five times the work (issue 16).

    python benchmarks/bench_history.py [--schools 60] [--students 50000] [--years 5] [--repeats 5]
        [--database-url postgresql://postgres@127.0.0.1:5432/test]

Two districts of the same size (``--schools`` schools, about ``--students`` students a year): one whose
warehouse and Dagster instance hold only the current school year, one holding the current year and the
four before it (``--years``). The current year is the year in progress (today, district time) as of its
latest school day so far; its data is identical in both. History is bulk-loaded through the warehouse
(``history_data.py`` beside this script: the rows the pulls would have written) with a materialization
recorded for every partition (each day, each source table per year); the derived tables of every year
are computed by their own assets, oldest year first. Then the automation's cursor is set (a first
evaluation, which must request nothing): a steady state.

The measured run, the same for both districts (``--repeats`` rounds, the districts alternating):

(a) the daily re-pull: ``aptool/attendance_days`` over the last 14 school days (``recent_window_start``,
    as the schedule computes it), one ranged run with the attendance job's checks, against the loopback
    Aeries simulator serving the current year (every school's coded days of the window);
(b) the recompute the automation asks for: ``dg.evaluate_automation_conditions`` with the cursor, then
    exactly the requested asset partitions, one run per partition key (what the automation sensor
    launches), their checks included. They must all be the current year's, and a further evaluation
    must request nothing.

Reading it: per district the median wall seconds of (a), (b) and their total, and the CPU seconds of the
total (less sensitive to a busy machine); "ratio" is many-year / one-year, target at most 1.2 on the
median wall totals (the work follows the year touched, not the years held). The per-round ratios show the
spread; per-step seconds show where any difference goes (a run's remaining time is Dagster's own). Peak
memory is this process's ``ru_maxrss`` over the whole run (generation, both warehouses, the simulator,
every run: Dagster runs in process). Exit status 1 when the ratio misses the target, a run fails, or
the recompute touches another year; 0 with a note from July 1 until the year in progress has had 14
school days (there is no window to re-pull yet).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)  # the figures, not Dagster's API notices
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from history_data import calendars, generate_district_year, load_year, sim_district  # noqa: E402

from aptool_assets.definitions import build_definitions  # noqa: E402
from aptool_assets.metrics.assets import INTERVENTION_RANKING_KEY, STUDENT_ATTENDANCE_SUMMARY_KEY  # noqa: E402
from aptool_assets.metrics.dashboard import INDICATOR_KEY, STUDENT_GROUPS_KEY  # noqa: E402
from aptool_assets.metrics.outlook import PROJECTION_KEY  # noqa: E402
from aptool_assets.partitions import FIRST_SCHOOL_YEAR  # noqa: E402
from aptool_assets.resilience.policy import aeries_policy  # noqa: E402
from aptool_assets.resources import PlatformResource  # noqa: E402
from aptool_assets.settings import DEFAULT_TIMEZONE  # noqa: E402
from aptool_assets.sources.aeries.assets import (  # noqa: E402
    ABSENCE_CODES_KEY,
    ATTENDANCE_DAYS_KEY,
    CALENDAR_KEY,
    ENROLLMENT_KEY,
    SCHOOLS_KEY,
    STUDENT_PROGRAMS_KEY,
    STUDENTS_KEY,
)
from aptool_assets.sources.aeries.client import AeriesResource  # noqa: E402
from aptool_assets.sources.aeries.schedules import RANGE_END, RANGE_START, recent_window_start  # noqa: E402
from aptool_assets.storage.resources import WarehouseResource  # noqa: E402
from aptool_assets.storage.warehouse import open_warehouse  # noqa: E402
from aptool_assets.tables.aeries import SCHOOL_CALENDAR  # noqa: E402
from aptool_assets.vocabulary import school_year_bounds, school_year_of  # noqa: E402
from aptool_demo.simulator import start_simulator  # noqa: E402

TARGET_RATIO = 1.2
RECENT_SCHOOL_DAYS = 14
YEAR_SOURCES = (ABSENCE_CODES_KEY, CALENDAR_KEY, ENROLLMENT_KEY, STUDENTS_KEY, STUDENT_PROGRAMS_KEY)
DERIVED = (STUDENT_ATTENDANCE_SUMMARY_KEY, PROJECTION_KEY, STUDENT_GROUPS_KEY, INTERVENTION_RANKING_KEY, INDICATOR_KEY)
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}  # the figures, not the event log


def _mb(kilobytes: int) -> str:
    return f"{kilobytes / 1024:,.0f} MB"


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Round:
    pull_s: float
    requests: int
    rows: int
    evaluate_s: float
    recompute_s: float
    requested: dict[str, list[str]]  # partition key → asset keys
    steps: dict[str, float]  # "(a) "/"(b) " + step key → seconds, in the pull and the recompute runs
    settled: int  # asset partitions a further evaluation requests (0: steady again)
    cpu_s: float  # CPU seconds of (a) + (b): this process's threads and its finished children

    @property
    def total_s(self) -> float:
        return self.pull_s + self.evaluate_s + self.recompute_s


@dataclass
class District:
    """One warehouse and its Dagster instance, holding ``years``; the same definitions and simulator."""

    label: str
    years: list[int]
    database_url: str
    instance: dg.DagsterInstance
    defs: dg.Definitions
    resources: dict
    cursor: object = None
    setup: dict[str, float] = field(default_factory=dict)
    rounds: list[Round] = field(default_factory=list)

    @property
    def assets(self) -> list:
        return [*self.defs.assets, *self.defs.asset_checks]

    def materialize(self, keys, *, partition_key=None, tags=None) -> dg.ExecuteInJobResult:
        result = dg.materialize(
            self.assets,
            selection=dg.AssetSelection.assets(*keys),
            partition_key=partition_key,
            resources=self.resources,
            instance=self.instance,
            run_config=QUIET,
            tags=tags,
            raise_on_error=False,
        )
        if not result.success:
            failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            raise RuntimeError(f"{self.label}: run of {[k.to_user_string() for k in keys]} failed at {failed}")
        return result

    def record_sources(self, year: int, through: dt.date) -> int:
        """A materialization for every partition the pulls would have written: each day to ``through``, and
        the year's source tables; the schools once. Returns how many were recorded."""
        report = self.instance.report_runless_asset_event
        first = school_year_bounds(year)[0]
        days = (through - first).days + 1
        for offset in range(days):
            report(dg.AssetMaterialization(ATTENDANCE_DAYS_KEY, partition=(first + dt.timedelta(offset)).isoformat()))
        for key in YEAR_SOURCES:
            report(dg.AssetMaterialization(key, partition=str(year)))
        report(dg.AssetMaterialization(SCHOOLS_KEY))
        return days + len(YEAR_SOURCES) + 1

    def add_setup(self, what: str, started: float) -> None:
        self.setup[what] = self.setup.get(what, 0.0) + time.perf_counter() - started

    def evaluate(self) -> dg.EvaluateAutomationConditionsResult:
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return result


def requested_by_partition(result: dg.EvaluateAutomationConditionsResult) -> dict[str, list[str]]:
    """Partition key → the asset keys an evaluation requested for it."""
    by_partition: dict[str, list[str]] = defaultdict(list)
    for key in sorted({r.key for r in result.results if isinstance(r.key, dg.AssetKey)}):
        for partition in sorted(result.get_requested_partitions(key)):
            by_partition[str(partition)].append(key.to_user_string())
    return dict(sorted(by_partition.items()))


def _step_seconds(result: dg.ExecuteInJobResult, prefix: str) -> dict[str, float]:
    """Seconds each step of a run took (the asset's or the check's own work, without the run's overhead)."""
    return {
        prefix + event.step_key.removeprefix("aptool__"): event.event_specific_data.duration_ms / 1000
        for event in result.all_events
        if event.event_type_value == "STEP_SUCCESS"
    }


def steady_state_round(district: District, sim, window: tuple[dt.date, dt.date]) -> Round:
    """(a) the re-pull of the window, (b) the evaluation and the runs it asks for; then one more evaluation,
    untimed, which must find nothing left to do."""
    first, last = window
    sim.reset_stats()
    cpu_started = _cpu_s()
    started = time.perf_counter()
    pulled = district.materialize(
        [ATTENDANCE_DAYS_KEY], tags={RANGE_START: first.isoformat(), RANGE_END: last.isoformat()}
    )
    pull_s = time.perf_counter() - started
    steps = _step_seconds(pulled, "(a) ")
    requests = len(sim.requests)
    rows = next(
        e.event_specific_data.materialization.metadata["dagster/row_count"].value
        for e in pulled.get_asset_materialization_events()
    )

    started = time.perf_counter()
    evaluation = district.evaluate()
    evaluate_s = time.perf_counter() - started
    requested = requested_by_partition(evaluation)
    started = time.perf_counter()
    for partition, keys in requested.items():
        result = district.materialize([dg.AssetKey.from_user_string(k) for k in keys], partition_key=partition)
        steps |= _step_seconds(result, "(b) ")
    recompute_s = time.perf_counter() - started
    cpu_s = _cpu_s() - cpu_started
    settled = district.evaluate().total_requested
    return Round(pull_s, requests, rows, evaluate_s, recompute_s, requested, steps, settled, cpu_s)


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def as_of_for(current: int, today: dt.date) -> tuple[dt.date, int]:
    """The latest school day to today of the year in progress, and how many school days it has had."""
    rows = [row for school in calendars(current, 2).values() for row in school]  # an elementary and a secondary
    days = sorted({row["CalendarDate"] for row in rows if row["HolidayCode"] in ("", "%")})
    elapsed = [d for d in days if d <= today]
    return (elapsed[-1] if elapsed else today), len(elapsed)


def make_databases(admin_url: str | None, tmp: Path) -> tuple[dict[str, str], Callable[[], None]]:
    """Two warehouse URLs (one-year, five-year): DuckDB files in ``tmp``, or two throwaway PostgreSQL databases
    created through ``admin_url`` and dropped by the returned cleanup."""
    if not admin_url:
        return {name: f"duckdb:///{tmp / f'{name}.duckdb'}" for name in ("one", "many")}, lambda: None
    import psycopg

    suffix = uuid.uuid4().hex[:8]
    names = {name: f"aptool_bench_history_{name}_{suffix}" for name in ("one", "many")}
    with psycopg.connect(admin_url, autocommit=True) as con:
        for db in names.values():
            con.execute(f"CREATE DATABASE {db}")

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as con:
            for db in names.values():
                con.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    base = admin_url.rsplit("/", 1)[0]
    return {name: f"{base}/{db}" for name, db in names.items()}, drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schools", type=int, default=60)
    parser.add_argument("--students", type=int, default=50_000, help="students a year (each year draws its own)")
    parser.add_argument("--years", type=int, default=5, help="school years the larger district holds")
    parser.add_argument("--repeats", type=int, default=5, help="measured rounds per district (medians reported)")
    parser.add_argument("--seed", type=int, default=20240901)
    parser.add_argument("--database-url", help="PostgreSQL admin URL: two throwaway databases instead of DuckDB")
    args = parser.parse_args()
    script_started = time.perf_counter()

    timezone = DEFAULT_TIMEZONE
    today = dt.datetime.now(ZoneInfo(timezone)).date()
    current = school_year_of(today)
    as_of, school_days = as_of_for(current, today)
    years = list(range(current - args.years + 1, current + 1))
    if years[0] < FIRST_SCHOOL_YEAR:
        parser.error(f"--years {args.years}: school-year partitions start with {FIRST_SCHOOL_YEAR}")
    if school_days < RECENT_SCHOOL_DAYS:
        print(
            f"school year {current}-{current + 1} has had {school_days} school days by {today}: fewer than the "
            f"{RECENT_SCHOOL_DAYS} a steady-state re-pull covers; run this during the school year (not measured)"
        )
        return 0

    platform = PlatformResource(timezone=timezone, school_year=current, as_of_date=as_of.isoformat())
    defs = build_definitions(platform)
    backend = "PostgreSQL" if args.database_url else "DuckDB"
    print(
        f"history benchmark: {args.schools} schools, {args.students:,} students a year, {backend} warehouses; "
        f"school year {current}-{str(current + 1)[-2:]} (in progress) as of {as_of}, its latest school day"
    )
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aptool-history-")))
        os.environ["APTOOL_BREAKER_PATH"] = str(tmp / "breakers.sqlite")  # the Aeries breaker's state, thrown away
        urls, drop_databases = make_databases(args.database_url, tmp)
        stack.callback(drop_databases)

        # The current year once (both districts hold the same), served by the simulator for its re-pulls.
        started = time.perf_counter()
        this_year = generate_district_year(
            current, n_students=args.students, n_schools=args.schools, seed=args.seed, through=as_of
        )
        generated_s = time.perf_counter() - started
        window = (recent_window_start(this_year.rows[SCHOOL_CALENDAR.name], as_of, RECENT_SCHOOL_DAYS), as_of)
        sim = stack.enter_context(start_simulator(sim_district(this_year, args.schools, *window)))
        aeries = AeriesResource(base_url=sim.base_url, cert=sim.cert, database_year=current, resilience=aeries_policy())

        districts: dict[str, District] = {}
        for name, held in (("one", [current]), ("many", years)):
            home = tmp / f"dagster-{name}"
            home.mkdir()
            instance = stack.enter_context(
                dg.DagsterInstance.local_temp(str(home), overrides={"telemetry": {"enabled": False}})
            )
            label = f"{len(held)}-year ({held[0]}-{held[-1]})" if len(held) > 1 else f"1-year ({current})"
            resources = {
                **defs.resources,
                "aeries": aeries,
                "warehouse": WarehouseResource(database_url=urls[name]),
                "platform": platform,
            }
            districts[name] = District(label, held, urls[name], instance, defs, resources)

        # History: each year generated, then loaded into the districts that hold it (oldest first).
        coded_days: dict[str, int] = defaultdict(int)
        for year in years:
            if year == current:
                data = this_year
            else:
                started = time.perf_counter()
                data = generate_district_year(year, n_students=args.students, n_schools=args.schools, seed=args.seed)
                generated_s += time.perf_counter() - started
            for name, district in districts.items():
                if year not in district.years:
                    continue
                started = time.perf_counter()
                load_year(open_warehouse(district.database_url), data)
                district.add_setup("load_s", started)
                started = time.perf_counter()
                district.record_sources(year, min(as_of, school_year_bounds(year)[1]))
                district.add_setup("record_s", started)
                coded_days[name] += data.attendance_rows
            del data
        for district in districts.values():
            started = time.perf_counter()
            for year in district.years:  # oldest first: a year's indicator compares with the one before
                district.materialize(DERIVED, partition_key=str(year))
            district.add_setup("derived_s", started)
            first = district.evaluate()  # the cursor: from here on, only what changes counts
            if first.total_requested:
                raise RuntimeError(f"{district.label}: the first evaluation requested {first.total_requested}")
        print(
            f"  data: {len(years)} years generated in {generated_s:.1f} s; the current year has "
            f"{this_year.students:,} students and {this_year.attendance_rows:,} coded days"
        )
        for name, district in districts.items():
            s = district.setup
            print(
                f"  {district.label:<20} {coded_days[name]:>10,} coded days loaded in {s['load_s']:.1f} s, "
                f"source materializations recorded in {s['record_s']:.1f} s, derived tables in {s['derived_s']:.1f} s"
            )
        print(
            f"  re-pulled window: the last {RECENT_SCHOOL_DAYS} school days, {window[0]}..{window[1]} "
            f"({(window[1] - window[0]).days + 1} daily partitions); RSS after setup {_mb(_rss_kb())}"
        )

        # The measured rounds, the districts alternating (a busy machine slows both alike).
        for r in range(args.repeats):
            for district in districts.values():
                done = steady_state_round(district, sim, window)
                district.rounds.append(done)
                print(
                    f"  round {r + 1} {district.label:<20} (a) {done.pull_s:6.2f} s  (b) evaluate "
                    f"{done.evaluate_s:5.2f} s + recompute {done.recompute_s:6.2f} s  = {done.total_s:6.2f} s"
                )
    return report(districts["one"], districts["many"], current, args.repeats, script_started)


def report(one: District, many: District, current: int, repeats: int, script_started: float) -> int:
    def median(d: District, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in d.rounds)

    header = f"steady-state run, median of {repeats} (seconds)"
    print(f"\n{header:<37} {'1-year':>10} {f'{len(many.years)}-year':>10} {'ratio':>7}")
    for label, attr in (
        ("(a) re-pull 14 school days", "pull_s"),
        ("(b) evaluate automation", "evaluate_s"),
        ("    recompute what it requested", "recompute_s"),
        ("(a) + (b), wall", "total_s"),
        ("(a) + (b), CPU (threads included)", "cpu_s"),
    ):
        a, b = median(one, attr), median(many, attr)
        print(f"  {label:<35} {a:>9.2f}s {b:>9.2f}s {b / a:>7.2f}")
    ratio = median(many, "total_s") / median(one, "total_s")
    per_round = sorted(b.total_s / a.total_s for a, b in zip(one.rounds, many.rounds, strict=True))
    last_one, last_many = one.rounds[-1], many.rounds[-1]
    print(
        f"  ratio per round: {', '.join(f'{x:.2f}' for x in per_round)} (sorted); Aeries requests per pull "
        f"{last_one.requests} / {last_many.requests}; coded days re-published {last_one.rows:,} / {last_many.rows:,}"
    )
    print("  steps of the last round, seconds (a run's remaining time is Dagster's own: start, events, logs):")
    for step in sorted(set(last_one.steps) | set(last_many.steps)):
        a, b = last_one.steps.get(step, 0.0), last_many.steps.get(step, 0.0)
        print(f"    {step:<62} {a:>6.2f} {b:>6.2f}")

    failures = []
    recomputed = set()
    for d in (one, many):
        for r in d.rounds:
            recomputed |= {(partition, key) for partition, keys in r.requested.items() for key in keys}
            if others := sorted(p for p in r.requested if p != str(current)):
                failures.append(f"{d.label} recomputed other school years: {others}")
            if STUDENT_ATTENDANCE_SUMMARY_KEY.to_user_string() not in r.requested.get(str(current), []):
                failures.append(f"{d.label}: the automation did not ask for the attendance summary after the pull")
            if r.settled:
                failures.append(f"{d.label}: a further evaluation still requested {r.settled} partition(s)")
    alike = len({tuple((p, tuple(k)) for p, k in r.requested.items()) for d in (one, many) for r in d.rounds}) == 1
    print(
        "  recomputed: "
        + ", ".join(f"{key} {partition}" for partition, key in sorted(recomputed))
        + f"; the same in every round of both districts: {'yes' if alike else 'NO'}; "
        + f"only the current year ({current}): {'yes' if all(p == str(current) for p, _ in recomputed) else 'NO'}"
    )

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        f"peak memory, whole run: {_mb(own)} (ru_maxrss of this process). The only child processes are Dagster's "
        f"compute-log capture (tail -F and a small watcher per step); their ru_maxrss ({_mb(children)}) is this "
        "process's, inherited at fork, not memory of their own"
    )
    print(f"total script time: {time.perf_counter() - script_started:.0f} s")
    print(f"ratio {len(many.years)}-year / 1-year: {ratio:.2f} (target ≤ {TARGET_RATIO})")
    if ratio > TARGET_RATIO:
        failures.append(f"the {len(many.years)}-year district costs {ratio:.2f}× the 1-year one (> {TARGET_RATIO})")
    if failures:
        print("FAIL: " + "; ".join(dict.fromkeys(failures)))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
