"""How many Aeries requests a full school year of attendance costs, against the loopback simulator.

The platform pulls attendance per school and month window (never per student): expect about
schools × months. This runs the attendance asset itself over a whole past year and counts the
requests the simulator received, next to what a per-student pull would have needed.
"""

from __future__ import annotations

import datetime as dt
import sys
import time

import dagster as dg

from aptool_assets import definitions
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.aeries.assets import ABSENCE_CODES_KEY, ATTENDANCE_DAYS_KEY, SCHOOLS_KEY, month_windows
from aptool_assets.sources.aeries.client import AeriesResource
from aptool_assets.sources.aeries.frames import is_real_school_code
from aptool_assets.sources.aeries.schedules import RANGE_END, RANGE_START
from aptool_assets.sources.iready.resources import IReadySFTPResource
from aptool_assets.storage.resources import WarehouseResource
from aptool_demo.district import build_district
from aptool_demo.simulator import build_sim_district, start_simulator

YEAR = 2025
FIRST, LAST = dt.date(YEAR, 7, 1), dt.date(YEAR + 1, 6, 30)


def main() -> int:
    import tempfile

    district = build_district(YEAR, students_per_school=200)
    sim = build_sim_district(district, through=LAST)
    with (
        start_simulator(sim) as running,
        dg.DagsterInstance.ephemeral() as instance,
        tempfile.TemporaryDirectory() as tmp,
    ):
        resources = {
            "aeries": AeriesResource(base_url=running.base_url, cert=running.cert),
            "warehouse": WarehouseResource(database_url=f"duckdb:///{tmp}/bench.duckdb"),
            "platform": PlatformResource(school_year=YEAR),
            "iready_sftp": IReadySFTPResource(),
        }
        all_defs = [*definitions.ASSETS, *definitions.ASSET_CHECKS]
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the figures, not the event log
        dg.materialize(all_defs, selection=[SCHOOLS_KEY], resources=resources, instance=instance, run_config=quiet)
        dg.materialize(
            all_defs,
            selection=[ABSENCE_CODES_KEY],
            partition_key=str(YEAR),
            resources=resources,
            instance=instance,
            run_config=quiet,
        )
        running.reset_stats()
        started = time.perf_counter()
        result = dg.materialize(
            all_defs,
            selection=dg.AssetSelection.assets(ATTENDANCE_DAYS_KEY),
            resources=resources,
            instance=instance,
            run_config=quiet,
            tags={RANGE_START: FIRST.isoformat(), RANGE_END: LAST.isoformat()},
        )
        elapsed = time.perf_counter() - started
        requests = [p for _, p, _ in running.requests if "/attendance" in p.lower()]
        schools = sum(is_real_school_code(s["SchoolCode"], s["InactiveStatusCode"]) for s in sim.schools)
        months = len(month_windows(FIRST, LAST))
        students = len({r["StudentID"] for r in sim.students})
        rows = next(
            e.event_specific_data.materialization.metadata["dagster/row_count"].value
            for e in result.get_asset_materialization_events()
        )
    print(f"full-year attendance pull {FIRST}..{LAST}: {students} students, {schools} schools, {months} month windows")
    print(
        f"  requests: {len(requests)} (schools × months = {schools * months}); a per-student pull would need "
        f"{students * months}"
    )
    print(
        f"  rows published: {rows}; wall time {elapsed:.2f}s "
        f"(run, ranged over {(LAST - FIRST).days + 1} daily partitions)"
    )
    return 0 if len(requests) == schools * months else 1


if __name__ == "__main__":
    sys.exit(main())
