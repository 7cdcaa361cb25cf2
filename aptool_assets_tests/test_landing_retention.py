"""The landing area's retention: files older than APTOOL_LANDING_RETENTION_DAYS are pruned nightly, except the
files each partition's published results came from; what was pruned is in the run's metadata."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from aptool_assets import definitions
from aptool_assets.partitions import year_subject_key
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.iready.assets import DIAGNOSTIC_RESULTS_KEY
from aptool_assets.sources.iready.jobs import iready_landing_retention_job
from aptool_assets.sources.iready.retention import current_selection, prune_landing_area
from aptool_assets.sources.iready.schedules import build_iready_schedules
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import TableWrite, open_warehouse
from aptool_assets.tables.iready import LANDED_FILES
from aptool_assets_tests.conftest import evaluate_schedule
from aptool_assets_tests.iready_helpers import diagnostics, write_file
from aptool_assets_tests.test_iready_pipeline import ELA, YEAR, iready_env  # noqa: F401 - a fixture used below

UTC = dt.UTC
NOW = dt.datetime.now(UTC).replace(microsecond=0)  # the job prunes against the real clock
OLD = NOW - dt.timedelta(days=40)
RECENT = NOW - dt.timedelta(days=2)


def put(path: Path, content: bytes, when: dt.datetime) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def row(path: Path, sha: str, status: str, run_id: str, landed_at: dt.datetime, year=2025, subject="ela") -> dict:
    return {
        "school_year": year,
        "subject": subject,
        "region": "r",
        "remote_path": f"/exports/{year}/{subject}/{path.name}/{run_id}",
        "size_bytes": 1,
        "remote_mtime": landed_at,
        "sha256": sha,
        "local_path": str(path),
        "status": status,
        "detail": "",
        "landed_at": landed_at,
        "run_id": run_id,
    }


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=LANDED_FILES.polars_schema)


@pytest.fixture
def area(tmp_path: Path) -> dict:
    """A landing area 40 days into the vendor's nightly rewrites, and its trail in aptool.iready_landed_files."""
    landing = tmp_path / "landing"
    ela = landing / "iready" / "2025" / "ela"
    files = {
        "older_selection": put(ela / f"{'a' * 64}.csv", b"a" * 100, OLD),  # selected by an earlier run
        "current": put(ela / f"{'b' * 64}.csv", b"b" * 200, OLD),  # the published version's source
        "stale": put(ela / f"{'c' * 64}.csv", b"c" * 300, OLD),
        "partial": put(ela / ".tmp1234.part", b"p" * 50, OLD),  # a download that died
        "recent": put(ela / f"{'d' * 64}.csv", b"d" * 400, RECENT),
        "quarantined": put(landing / "quarantine" / "iready" / f"{'c' * 64}.csv", b"c" * 300, OLD),
        "reason": put(landing / "quarantine" / "iready" / f"{'c' * 64}.csv.reason.txt", b"r" * 10, OLD),
        "quarantined_recent": put(landing / "quarantine" / "iready" / f"{'e' * 64}.csv", b"e" * 30, RECENT),
        "operator_note": put(landing / "README.txt", b"n", OLD),  # not the platform's: never touched
        "elsewhere": put(tmp_path / "elsewhere" / "keep.csv", b"k", OLD),
    }
    (ela / "link.csv").symlink_to(files["elsewhere"])  # a symlink is neither removed nor followed
    landed = frame(
        [
            row(files["older_selection"], "a" * 64, "selected", "run-1", OLD),
            row(files["current"], "b" * 64, "selected", "run-2", OLD + dt.timedelta(days=1)),
            row(files["stale"], "c" * 64, "stale", "run-2", OLD + dt.timedelta(days=1)),
            row(files["recent"], "d" * 64, "stale", "run-3", RECENT),  # the latest run selected nothing
        ]
    )
    return {"landing": landing, "files": files, "landed": landed}


def surviving(files: dict[str, Path]) -> set[str]:
    return {name for name, path in files.items() if path.exists()}


def test_expired_files_go_and_the_published_versions_source_stays(area) -> None:
    report = prune_landing_area(area["landing"], area["landed"], 30, now=NOW)
    assert surviving(area["files"]) == {"current", "recent", "quarantined_recent", "operator_note", "elsewhere"}
    assert (area["landing"] / "iready/2025/ela/link.csv").is_symlink()
    assert (report.landed.files_pruned, report.landed.bytes_pruned) == (3, 100 + 300 + 50)
    assert (report.quarantine.files_pruned, report.quarantine.bytes_pruned) == (2, 300 + 10)
    assert (report.landed.kept_current, report.landed.kept_recent, report.quarantine.kept_recent) == (1, 1, 1)
    meta = report.metadata()
    assert meta["landed_files_pruned"] == 3 and meta["quarantine_bytes_pruned"] == 310
    assert meta["files_not_removed"] == 0 and meta["cutoff"] == (NOW - dt.timedelta(days=30)).isoformat()


def test_a_longer_retention_keeps_more(area) -> None:
    report = prune_landing_area(area["landing"], area["landed"], 45, now=NOW)
    assert report.landed.files_pruned == report.quarantine.files_pruned == 0
    assert surviving(area["files"]) == set(area["files"])


def test_dry_run_counts_without_removing(area) -> None:
    report = prune_landing_area(area["landing"], area["landed"], 30, now=NOW, dry_run=True)
    assert (report.landed.files_pruned, report.quarantine.files_pruned) == (3, 2)
    assert surviving(area["files"]) == set(area["files"])


def test_current_selection_is_each_partitions_latest_run_that_selected_any(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    landed = frame(
        [
            row(p, "1", "selected", "r1", OLD),
            row(p, "2", "selected", "r2", OLD + dt.timedelta(days=1)),  # two regions in one run: both current
            row(p, "3", "selected", "r2", OLD + dt.timedelta(days=1)),
            row(p, "4", "unreadable", "r3", RECENT),  # a failed landing changes nothing published
            row(p, "5", "selected", "r1", OLD, subject="math"),
            row(p, "6", "selected", "r0", OLD - dt.timedelta(days=9), year=2024),
        ]
    )
    assert sorted(current_selection(landed).get_column("sha256").to_list()) == ["2", "3", "5", "6"]


def test_the_current_file_is_recognised_by_content_after_the_landing_dir_moved(area, tmp_path: Path) -> None:
    moved = tmp_path / "new-landing"
    area["landing"].rename(moved)  # the trail still names the old absolute paths
    report = prune_landing_area(moved, area["landed"], 30, now=NOW)
    assert (moved / "iready/2025/ela" / f"{'b' * 64}.csv").exists()
    assert report.landed.kept_current == 1 and report.landed.files_pruned == 3


def test_retention_must_be_at_least_a_day(area) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        prune_landing_area(area["landing"], area["landed"], 0, now=NOW)


def _run_job(landing: Path, warehouse_url: str, days: int = 30, **config) -> dg.ExecuteInJobResult:
    with dg.instance_for_test() as instance:
        return iready_landing_retention_job.execute_in_process(
            instance=instance,
            resources={
                "warehouse": WarehouseResource(database_url=warehouse_url),
                "platform": PlatformResource(landing_dir=str(landing), landing_retention_days=days),
            },
            run_config={"ops": {"prune_landing_area": {"config": config}}} if config else None,
            raise_on_error=False,
        )


def _output_metadata(result: dg.ExecuteInJobResult) -> dict:
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in output.event_specific_data.metadata.items()}


def test_the_job_reads_the_trail_prunes_and_records_counts_and_bytes(area, tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    open_warehouse(url).write(TableWrite(LANDED_FILES, area["landed"]))

    dry = _run_job(area["landing"], url, dry_run=True)
    assert dry.success and _output_metadata(dry)["landed_files_pruned"] == 3
    assert surviving(area["files"]) == set(area["files"])

    result = _run_job(area["landing"], url)
    assert result.success
    meta = _output_metadata(result)
    assert (meta["landed_files_pruned"], meta["landed_bytes_pruned"]) == (3, 450)
    assert (meta["quarantine_files_pruned"], meta["quarantine_bytes_pruned"]) == (2, 310)
    assert meta["landed_files_kept_current"] == 1 and meta["dry_run"] is False
    assert surviving(area["files"]) == {"current", "recent", "quarantined_recent", "operator_note", "elsewhere"}


def test_a_file_that_cannot_be_removed_fails_the_run_after_pruning_the_rest(
    area, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    open_warehouse(url).write(TableWrite(LANDED_FILES, area["landed"]))
    stuck = area["files"]["stale"]
    original = Path.unlink

    def unlink(self, missing_ok=False):
        if self == stuck:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    result = _run_job(area["landing"], url, days=1)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "could not be removed" in failure.event_specific_data.error.message
    assert surviving(area["files"]) == {"current", "stale", "operator_note", "elsewhere"}


def test_retention_schedule_ticks_nightly_in_the_district_time_zone() -> None:
    by_name = {s.name: s for s in build_iready_schedules("America/Chicago")}
    schedule = by_name["iready_landing_retention"]
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 4 * * *", "America/Chicago")
    assert schedule.job_name == "iready_landing_retention"
    with dg.instance_for_test() as instance:
        request = evaluate_schedule(
            schedule, instance=instance, scheduled_execution_time=dt.datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
        )
    assert isinstance(request, dg.RunRequest) and request.run_key == "landing-retention-20261202"
    assert request.tags["aptool/trigger"] == "landing_retention"
    deployed = {s.name: s for s in definitions.defs.schedules}["iready_landing_retention"]
    assert deployed.default_status == dg.DefaultScheduleStatus.RUNNING
    assert deployed.execution_timezone == PlatformResource.from_env().timezone


def test_after_pruning_the_published_partition_still_reloads_from_the_landing_area(iready_env) -> None:
    write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27", n_students=30)
    assert iready_env.load().success
    write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27", n_students=12, seed=4)
    assert iready_env.load().success  # the vendor's nightly rewrite: a second landed version
    landed = sorted(iready_env.landing.rglob("*.csv"))
    assert len(landed) == 2
    long_ago = (dt.datetime.now(UTC) - dt.timedelta(days=90)).timestamp()
    for path in landed:
        os.utime(path, (long_ago, long_ago))

    result = iready_landing_retention_job.execute_in_process(
        instance=iready_env.instance, resources=iready_env.resources
    )
    assert result.success
    assert _output_metadata(result)["landed_files_pruned"] == 1
    (kept,) = iready_env.landing.rglob("*.csv")
    current = current_selection(iready_env.warehouse.read_table(LANDED_FILES))
    assert current.get_column("local_path").to_list() == [str(kept)]

    reload = dg.materialize(
        assets=[*definitions.ASSETS, *definitions.ASSET_CHECKS],
        selection=dg.AssetSelection.assets(DIAGNOSTIC_RESULTS_KEY),
        partition_key=year_subject_key(YEAR, "ela"),
        resources=iready_env.resources,
        instance=iready_env.instance,
    )
    assert reload.success
    assert iready_env.published().height == diagnostics(YEAR, "ela", n_students=12, seed=4).height
