"""``aptool demo``: the whole platform on the synthetic district, with no configuration at all.

Builds the district, writes its i-Ready exports, serves them over local SFTP and its Aeries data from
the simulator, runs every asset into an embedded DuckDB warehouse under ``--home``, prints what was
loaded and computed, and optionally opens the Dagster UI on the same instance. The product's CLI calls
``run_demo`` lazily, so the product itself never depends on this package.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from aptool_assets.definitions import build_resources
from aptool_assets.rules.student_ids import DEFAULT_ID_FIELD
from aptool_assets.runner import run_pipeline
from aptool_assets.settings import Settings
from aptool_assets.storage.warehouse import open_warehouse
from aptool_assets.vocabulary import school_year_bounds
from aptool_demo.district import build_district, write_iready_exports
from aptool_demo.sftp_server import LocalSFTPServer, start_local_sftp_server
from aptool_demo.sim_district import SimDistrict
from aptool_demo.simulator import RunningSimulator, build_sim_district, start_simulator

INSTANCE_YAML = """# Written by `aptool demo`: local storage under this folder.
telemetry:
  enabled: false
"""


def run_demo(
    args: argparse.Namespace, *, open_instance: Callable[[], Any], report_failures: Callable[[Any, bool], int]
) -> int:
    """Run the demo for ``args`` (``home``, ``year``, ``ui``, ``debug``); the exit code of the command.

    ``open_instance`` and ``report_failures`` are the CLI's own, so the demo opens its Dagster instance
    and reports a failed step exactly as ``aptool run`` does.
    """
    home = Path(args.home).resolve()
    sftp_root = home / "sftp"
    if sftp_root.exists():
        shutil.rmtree(sftp_root)
    settings = Settings.from_env({} if args.year is None else {"APTOOL_SCHOOL_YEAR": str(args.year)})
    school_year = settings.school_year
    district = build_district(school_year)
    # Attendance through the as-of date (the whole year for a past year), on the same students.
    through = min(settings.as_of_date, school_year_bounds(school_year)[1])
    sim_district = build_sim_district(district, through=through)
    id_field = getattr(args, "iready_id_field", DEFAULT_ID_FIELD)
    files = write_iready_exports(district, sftp_root, vendor_ids(sim_district, id_field))
    print(
        f"demo: synthetic district with {district.students.height} students in {district.schools.height} schools; "
        f"{len(files)} i-Ready files under {sftp_root}, keyed by {id_field}"
    )

    server = start_local_sftp_server(sftp_root, home / "sftp-server")
    print(f"demo: {server.kind} SFTP server on {server.host}:{server.port}")
    simulator = start_simulator(sim_district)
    print(f"demo: Aeries simulator on {simulator.base_url} (attendance through {through})")
    try:
        env = {**_demo_env(home, server, simulator, through, school_year), "APTOOL_IREADY_ID_FIELD": id_field}
        os.environ.update(env)
        _write_instance_yaml(Path(env["DAGSTER_HOME"]))
        with open_instance() as instance:
            summary = run_pipeline(instance=instance, resources=build_resources())
        print("\nSteps")
        print(summary.table())
        _print_demo_summary(summary, env["APTOOL_DATABASE_URL"])
        if not summary.ok:
            return report_failures(summary, args.debug)
        if args.ui:
            _serve_ui(env)
    finally:
        simulator.stop()
        server.stop()
    return 0


_AERIES_ID_KEYS = {"student_id": "StudentID", "student_number": "StudentNumber", "state_student_id": "StateStudentID"}


def vendor_ids(sim: SimDistrict, id_field: str) -> dict[int, str] | None:
    """StudentID → the identifier a district rostering i-Ready by ``id_field`` puts in the files: the one on the
    student's record at the school the files name (the first school); None for the StudentID itself."""
    if id_field == DEFAULT_ID_FIELD:
        return None
    ids: dict[int, str] = {}
    for record in sim.students:  # a transfer's first record is the one at the school the files name
        ids.setdefault(record["StudentID"], str(record[_AERIES_ID_KEYS[id_field]]))
    return ids


def _demo_env(
    home: Path, server: LocalSFTPServer, simulator: RunningSimulator, through: date, school_year: int
) -> dict[str, str]:
    """The settings that point the platform at the local servers and at state under ``home``."""
    return {
        **server.env(),
        "AERIES_BASE_URL": simulator.base_url,
        "AERIES_CERT": simulator.cert,
        "APTOOL_AS_OF_DATE": through.isoformat(),
        "DAGSTER_HOME": str(home / "dagster"),
        "APTOOL_DATABASE_URL": f"duckdb:///{home / 'warehouse.duckdb'}",
        "APTOOL_LANDING_DIR": str(home / "landing"),
        "APTOOL_SCHOOL_YEAR": str(school_year),
    }


def _write_instance_yaml(dagster_home: Path) -> None:
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text(INSTANCE_YAML)


def _serve_ui(env: dict[str, str]) -> None:
    """``dagster dev`` on the demo's instance until Ctrl-C (the servers stay up meanwhile)."""
    print("demo: starting the Dagster UI on http://127.0.0.1:3000 (Ctrl-C to stop)")
    subprocess.run(
        [sys.executable, "-m", "dagster", "dev", "-m", "aptool_assets.definitions", "-h", "127.0.0.1", "-p", "3000"],
        env={**os.environ, **env},
        check=False,
    )


def _print_demo_summary(summary, warehouse_url: str) -> None:
    wh = open_warehouse(warehouse_url)
    print("\nSummary")
    print(f"  {'partition':<14} {'loaded':>7} {'rejected':>9}")
    for step in summary.steps:
        if step.step == "iready_diagnostic_results" and step.ok:
            meta = step.metadata
            loaded = getattr(meta.get("dagster/row_count"), "value", None)
            rejected = getattr(meta.get("rows_rejected"), "value", None)
            print(f"  {step.partition:<14} {loaded:>7} {rejected:>9}")
    reasons = wh.query(
        "SELECT split_part(reason, ':', 1) AS reason, count(*) AS n FROM aptool.iready_rejected_rows "
        "GROUP BY 1 ORDER BY 1"
    )
    for reason, n in reasons.iter_rows():
        print(f"  rejected: {reason}: {n}")
    tiers = wh.query(
        "SELECT attendance_tier, count(*) AS n, sum(CASE WHEN is_chronically_absent THEN 1 ELSE 0 END) AS chronic "
        f"FROM aptool.student_attendance_summary WHERE school_year = {int(summary.school_year)} GROUP BY 1 ORDER BY 1"
    )
    chronic = sum(c for _, _, c in tiers.iter_rows())
    print(
        f"  attendance {summary.school_year}: "
        + ", ".join(f"{t} {n}" for t, n, _ in tiers.iter_rows())
        + f"; chronically absent {chronic}"
    )
    risk = wh.query(
        "SELECT overall_risk, count(*) AS n FROM aptool.student_academic_risk WHERE school_year = "
        f"{int(summary.school_year)} GROUP BY 1 ORDER BY 1"
    )
    print(f"  academic risk {summary.school_year}: " + ", ".join(f"{r} {n}" for r, n in risk.iter_rows()))
    top = wh.query(
        "SELECT school_code, student_id, reasons FROM aptool.student_intervention_ranking "
        f"WHERE school_year = {int(summary.school_year)} AND rank = 1 ORDER BY school_code"
    )
    for school, student, reasons in top.iter_rows():
        print(f"  school {school}: first for outreach is student {student} ({reasons})")
    _print_outlook(wh, int(summary.school_year))
    _print_dashboard_preview(wh, int(summary.school_year))
    print(f"  warehouse: {warehouse_url}")


def _print_outlook(wh, school_year: int) -> None:
    """Per school: students on track for typical growth (either subject) and students projected to become
    chronically absent by June who are not today."""
    year = int(school_year)
    growth = wh.query(
        "SELECT s.school_code, count(DISTINCT g.student_id) AS n FROM aptool.iready_growth g "
        "JOIN aptool.students s ON s.student_id = g.student_id "
        f"WHERE g.school_year = {year} AND g.growth_status IN ('on_track_typical', 'on_track_stretch') GROUP BY 1"
    )
    heading = wh.query(
        "SELECT p.school_code, count(*) AS n FROM aptool.chronic_absence_projection p "
        "JOIN aptool.student_attendance_summary a ON a.school_year = p.school_year "
        "AND a.student_id = p.student_id AND a.school_code = p.school_code "
        f"WHERE p.school_year = {year} AND p.projected_chronic AND NOT a.is_chronically_absent GROUP BY 1"
    )
    on_track, projected = dict(growth.iter_rows()), dict(heading.iter_rows())
    for school in sorted(set(on_track) | set(projected)):
        print(
            f"  school {school}: {on_track.get(school, 0)} students on track for typical growth; "
            f"{projected.get(school, 0)} projected to become chronically absent by June"
        )


def _print_dashboard_preview(wh, school_year: int) -> None:
    """The district's Chronic Absenteeism Indicator preview: ALL and every group, with suppression shown."""
    rows = wh.query(
        "SELECT student_group, eligible_count, chronic_count, rate_pct, status_level, change_level, n_size_met "
        "FROM aptool.chronic_absenteeism_indicator "
        f"WHERE school_year = {school_year} AND level = 'district' ORDER BY student_group <> 'ALL', student_group"
    )
    if rows.height == 0:
        print("  dashboard preview: no eligible students")
        return
    print(
        f"\nDashboard preview {school_year}-{school_year + 1}: chronic absenteeism, district (* = under 11, suppressed)"
    )
    print(f"  {'group':<6} {'eligible':>8} {'chronic':>8} {'rate':>7}  {'status':<10} {'change':<24} n-size")
    for group, eligible, chronic, rate, status, change, n_size in rows.iter_rows():
        shown_rate = "*" if rate is None else f"{rate:.1f}%"
        print(
            f"  {group:<6} {eligible:>8} {'*' if chronic is None else chronic:>8} {shown_rate:>7}  "
            f"{status or '*':<10} {change or '–':<24} {'yes' if n_size else 'no'}"
        )
