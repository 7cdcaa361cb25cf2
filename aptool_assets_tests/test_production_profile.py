"""deploy/dagster.yaml, the production instance profile, on the machine's real PostgreSQL.

The profile is loaded the way dagster-daemon and dagster-webserver load it ($DAGSTER_HOME and the
DAGSTER_PG_* variables), the Aeries path is materialized with that instance into a PostgreSQL
warehouse, and runs go through its queue: launched by the queue daemon's own code from the real
workspace.yaml, one Aeries run at a time.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dagster as dg
import psycopg
import pytest
import yaml

# Private, no public equivalent: `dagster job launch`'s run creation (no public API makes a run of a remote job),
from dagster._cli.job import _create_run

# the in-process workspace built from workspace.yaml (public is only the webserver/daemon CLIs loading it),
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

# and the queue daemon's own loop (public is only the `dagster-daemon run` process, which never stops by itself).
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from aptool_assets import definitions
from aptool_assets.metrics.assets import STUDENT_ATTENDANCE_SUMMARY_KEY
from aptool_assets.resilience.policy import AERIES_POLICY
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.aeries.assets import (
    ABSENCE_CODES_KEY,
    ATTENDANCE_DAYS_KEY,
    CALENDAR_KEY,
    ENROLLMENT_KEY,
    HISTORY_KEY,
    SCHOOLS_KEY,
    STUDENTS_KEY,
)
from aptool_assets.sources.aeries.client import AeriesResource
from aptool_assets.sources.aeries.schedules import RANGE_END, RANGE_START
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets_tests.conftest import schema_reset, throwaway_database, with_default_resources
from aptool_demo.district import build_district
from aptool_demo.simulator import build_sim_district, start_simulator

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "deploy" / "dagster.yaml"
WORKSPACE = REPO / "workspace.yaml"
YEAR = 2025
FIRST, THROUGH = dt.date(2025, 10, 1), dt.date(2025, 10, 17)
PUBLISHED = {
    "schools",
    "absence_codes",
    "students",
    "school_calendar",
    "enrollment",
    "attendance_days",
    "attendance_history_summary",
    "student_attendance_summary",
}


@pytest.fixture
def dagster_db(postgres_url) -> Iterator[str]:
    """A second throwaway database, for Dagster's own storage (postgres_url is the warehouse)."""
    with throwaway_database("aptool_dagster") as url:
        yield url


@pytest.fixture
def dagster_home(tmp_path, monkeypatch, dagster_db) -> Path:
    """$DAGSTER_HOME holding a copy of deploy/dagster.yaml; the connection only in DAGSTER_PG_*."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROFILE, home / "dagster.yaml")
    url = urlsplit(dagster_db)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", unquote(url.username or "postgres"))
    # Under trust auth any password is accepted: a recognisable one shows where it ends up.
    password = unquote(url.password or "") or os.environ.get("PGPASSWORD") or f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", password)
    monkeypatch.setenv("DAGSTER_PG_HOST", url.hostname or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_DB", url.path.lstrip("/"))
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    return home


@pytest.fixture
def warehouse_db(postgres_url) -> Iterator[str]:
    schema_reset(postgres_url)
    yield postgres_url
    schema_reset(postgres_url)


@pytest.fixture
def simulator():
    with start_simulator(build_sim_district(build_district(YEAR), through=THROUGH)) as running:
        yield running


def test_profile_gives_postgres_storage_a_tag_limited_queue_and_run_retries(dagster_home):
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.run_storage.postgres_url.endswith(f"/{os.environ['DAGSTER_PG_DB']}")

        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 8
        limits = {(limit["key"], limit["value"]): limit["limit"] for limit in queue.tag_concurrency_limits}
        assert limits == {
            ("aptool/source", "aeries"): 1,
            ("aptool/source", "iready"): 1,
            ("aptool/source", "webhooks"): 1,
        }

        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds > 0
        assert instance.get_settings("telemetry") == {"enabled": False}

        # What code servers and run workers receive (the instance ref) names the variables, never their values.
        ref = instance.get_ref()
        for data in (ref.storage_data, ref.run_storage_data, ref.event_storage_data, ref.schedule_storage_data):
            db = yaml.safe_load(data.config_yaml)["postgres_db"]
            assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"} and db["hostname"] == {"env": "DAGSTER_PG_HOST"}
            assert db["scheme"] == "postgresql+psycopg2"
        if os.environ["DAGSTER_PG_PASSWORD"].startswith("pw-"):  # the recognisable stand-in
            assert os.environ["DAGSTER_PG_PASSWORD"] not in dg.serialize_value(ref)


def test_assets_materialize_with_the_profile_and_the_history_lands_in_postgres(
    dagster_home, dagster_db, warehouse_db, simulator, tmp_path
):
    resources = with_default_resources(
        aeries=AeriesResource(
            base_url=simulator.base_url, cert=simulator.cert, resilience=AERIES_POLICY.but(retry_base_delay_s=0.01)
        ),
        warehouse=WarehouseResource(database_url=warehouse_db),
        platform=PlatformResource(
            school_year=YEAR, as_of_date=THROUGH.isoformat(), landing_dir=str(tmp_path / "landing")
        ),
    )

    with dg.DagsterInstance.get() as instance:

        def materialize(*keys, partition_key=None, tags=None) -> dg.ExecuteInJobResult:
            result = dg.materialize(
                assets=[*definitions.ASSETS, *definitions.ASSET_CHECKS],
                selection=dg.AssetSelection.assets(*keys),
                partition_key=partition_key,
                tags=tags,
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
            failed = {e.check_name: e.description for e in result.get_asset_check_evaluations() if not e.passed}
            assert result.success, failed
            return result

        materialize(SCHOOLS_KEY, STUDENTS_KEY, partition_key=str(YEAR))
        materialize(ABSENCE_CODES_KEY, CALENDAR_KEY, ENROLLMENT_KEY, HISTORY_KEY, partition_key=str(YEAR))
        materialize(ATTENDANCE_DAYS_KEY, tags={RANGE_START: FIRST.isoformat(), RANGE_END: THROUGH.isoformat()})
        summary = materialize(STUDENT_ATTENDANCE_SUMMARY_KEY, partition_key=str(YEAR))

        runs = instance.get_runs()
        assert len(runs) == 4 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        for key in (
            SCHOOLS_KEY,
            ABSENCE_CODES_KEY,
            STUDENTS_KEY,
            CALENDAR_KEY,
            ENROLLMENT_KEY,
            HISTORY_KEY,
            ATTENDANCE_DAYS_KEY,
            STUDENT_ATTENDANCE_SUMMARY_KEY,
        ):
            assert instance.get_latest_materialization_event(key) is not None, key.to_user_string()
        days = {(FIRST + dt.timedelta(days=n)).isoformat() for n in range((THROUGH - FIRST).days + 1)}
        assert days <= instance.get_materialized_partitions(ATTENDANCE_DAYS_KEY)
        assert str(YEAR) in instance.get_materialized_partitions(STUDENT_ATTENDANCE_SUMMARY_KEY)
        checks = {e.check_name for e in summary.get_asset_check_evaluations()}
        assert {"summary_rates_valid", "summary_reconciles_with_aeries"} <= checks

    # The same history, read straight from Dagster's own database.
    with psycopg.connect(dagster_db) as con:
        run_ids = {r[0] for r in con.execute("SELECT run_id FROM runs WHERE status = 'SUCCESS'")}
        assert run_ids == {r.run_id for r in runs}
        materialized = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            )
        }
        assert STUDENT_ATTENDANCE_SUMMARY_KEY.to_string() in materialized and len(materialized) == 8
        evaluated = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT check_name FROM asset_check_executions WHERE execution_status = 'SUCCEEDED'"
            )
        }
        assert {"attendance_key_unique", "attendance_students_known", "summary_rates_valid"} <= evaluated

    # …and the published tables in the warehouse database.
    with psycopg.connect(warehouse_db) as con:
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'aptool'")
        }
        assert tables >= PUBLISHED
        assert con.execute("SELECT count(*) FROM aptool.student_attendance_summary").fetchone()[0] > 0
        last_day = con.execute("SELECT max(calendar_date) FROM aptool.attendance_days").fetchone()[0]
        assert FIRST <= last_day <= THROUGH


def test_runs_queue_and_the_daemon_launches_one_aeries_run_at_a_time(
    dagster_home, warehouse_db, simulator, tmp_path, monkeypatch
):
    # The code location and its run workers read their configuration from the environment (contract §2).
    for name, value in {
        "AERIES_BASE_URL": simulator.base_url,
        "AERIES_CERT": simulator.cert,
        "APTOOL_DATABASE_URL": warehouse_db,
        "APTOOL_SCHOOL_YEAR": str(YEAR),
        "APTOOL_AS_OF_DATE": THROUGH.isoformat(),
        "APTOOL_LANDING_DIR": str(tmp_path / "landing"),
    }.items():
        monkeypatch.setenv(name, value)

    # The real workspace.yaml: the code location runs in its own code server process, as in production.
    with (
        dg.DagsterInstance.get() as instance,
        WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(WORKSPACE)])) as workspace_context,
    ):
        workspace = workspace_context.create_request_context()
        location = workspace.get_code_location("aptool_assets")
        try:
            (repo,) = location.get_repositories().values()
            job = repo.get_full_job("aeries_reference_sync")

            def submit() -> dg.DagsterRun:
                # What `dagster job launch` does: create the run, hand it to the instance's coordinator.
                run = _create_run(
                    instance=instance,
                    code_location=location,
                    remote_repo=repo,
                    remote_job=job,
                    run_config={},
                    tags={"dagster/partition": str(YEAR)},  # the roster of the current school year
                    op_selection=None,
                    run_id=None,
                )
                return instance.submit_run(run.run_id, workspace)

            first, second = submit(), submit()
            assert first.status == second.status == dg.DagsterRunStatus.QUEUED  # nothing starts without the daemon
            assert first.tags["aptool/source"] == "aeries"

            # One pass of the daemon's queue loop: the Aeries limit lets exactly one of the two through.
            with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
                list(daemon.run_iteration(workspace_context))
            statuses = {r.run_id: instance.get_run_by_id(r.run_id).status for r in (first, second)}
            launched = [rid for rid, status in statuses.items() if status != dg.DagsterRunStatus.QUEUED]
            assert len(launched) == 1, statuses
            waiting = next(rid for rid in statuses if rid not in launched)

            run = wait_for_run(
                instance,
                launched[0],
                while_true=lambda: (
                    instance.get_run_by_id(waiting).status == dg.DagsterRunStatus.QUEUED  # held back meanwhile
                ),
            )
            assert run.status == dg.DagsterRunStatus.SUCCESS, failure_messages(instance, run.run_id)
            assert instance.get_latest_materialization_event(STUDENTS_KEY).run_id == run.run_id
            # A queued run can still be withdrawn before it starts.
            assert instance.run_coordinator.cancel_run(waiting)
            assert instance.get_run_by_id(waiting).status == dg.DagsterRunStatus.CANCELED
        finally:
            drain_code_server(instance, location)

    with psycopg.connect(warehouse_db) as con:
        assert con.execute("SELECT count(*) FROM aptool.students").fetchone()[0] > 0


def wait_for_run(instance, run_id: str, while_true=lambda: True, timeout_s: float = 120) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout_s
    while not (run := instance.get_run_by_id(run_id)).is_finished:
        assert time.monotonic() < deadline, f"run {run_id} still {run.status.value} after {timeout_s} s"
        assert while_true()
        time.sleep(0.5)
    return run


def failure_messages(instance, run_id: str) -> list[str]:
    return [e.message for e in instance.all_logs(run_id) if e.is_dagster_event and e.dagster_event.is_failure]


def drain_code_server(instance, location, timeout_s: float = 60) -> None:
    """Stop what the test launched and wait until the code server has reaped its run workers.

    The code server checks on finished run workers through the instance; if the test's Dagster
    database were dropped first, that check would fail and leave the server running.
    """
    deadline = time.monotonic() + timeout_s
    for run_id in location.get_current_runs():
        if not instance.get_run_by_id(run_id).is_finished:
            instance.run_launcher.terminate(run_id)
    while location.get_current_runs() and time.monotonic() < deadline:
        time.sleep(0.2)
