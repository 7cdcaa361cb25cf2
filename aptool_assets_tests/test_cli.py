"""The `aptool` command as an operator runs it: a real subprocess, real servers, exit codes."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import psycopg
import pytest

from aptool_assets.storage.warehouse import open_warehouse
from aptool_assets_tests.iready_helpers import write_file

APTOOL = [sys.executable, "-m", "aptool_assets.cli"]
CONFIG_VARS = ("IREADY_", "APTOOL_", "AERIES_", "DAGSTER_HOME")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_VARS)}
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*APTOOL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_run_without_configuration_fails_with_one_clear_line(tmp_path):
    proc = run(["run", "--only", "iready"], tmp_path, clean_env())
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "IREADY_SFTP_HOST" in lines[0]
    assert "Traceback" not in proc.stderr


def test_run_rejects_a_malformed_setting(tmp_path):
    proc = run(["run"], tmp_path, clean_env(APTOOL_AS_OF_DATE="11/29/2026"))
    assert proc.returncode == 1
    assert "APTOOL_AS_OF_DATE" in proc.stderr and "YYYY-MM-DD" in proc.stderr


def test_backfill_refuses_a_malformed_range_before_anything_runs(tmp_path):
    proc = run(["backfill", "--years", "2025-2021"], tmp_path, clean_env())
    assert proc.returncode == 2  # argparse: a usage error
    assert "not a list of school years" in proc.stderr and "2021-2025" in proc.stderr


def test_backfill_refuses_years_without_a_partition_in_one_line(tmp_path):
    proc = run(["backfill", "--years", "2018-2021", "--only", "aeries"], tmp_path, clean_env())
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "[2018, 2019]" in lines[0] and "2020" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_backfill_without_configuration_fails_with_one_clear_line(tmp_path):
    proc = run(["backfill", "--years", "2023-2024", "--only", "aeries"], tmp_path, clean_env())
    assert proc.returncode == 1
    assert "AERIES_BASE_URL" in proc.stderr and "Traceback" not in proc.stderr


def test_run_only_iready_loads_every_year_on_the_server(sftp_server, sftp_test_dir, tmp_path):
    write_file(
        sftp_test_dir, "Current_Year", "i-ready_inform_results_math_CONFIDENTIAL.csv", 2026, "math", layout="2026-27"
    )
    write_file(sftp_test_dir, "2025", "diagnostic_results_math_CONFIDENTIAL.csv", 2025, "math")
    env = clean_env(
        **{**sftp_server.env(), "IREADY_SFTP_REMOTE_DIR": sftp_server.remote_path(sftp_test_dir)},
        APTOOL_DATABASE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}",
        APTOOL_LANDING_DIR=str(tmp_path / "landing"),
    )
    proc = run(["run", "--only", "iready", "--year", "2026"], tmp_path, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ok] i-Ready 2026 math" in proc.stdout and "[ok] i-Ready 2025 math" in proc.stdout
    # Each step reports rows loaded and rejected as it finishes; the closing table repeats them.
    assert re.search(r"\[ok\] i-Ready 2026 math: \d+ rows loaded, \d+ rejected \(\d+\.\d s\)", proc.stdout), proc.stdout
    table = summary_rows(proc.stdout)
    assert table["i-Ready 2026 math"][0] == "ok" and int(table["i-Ready 2026 math"][1]) > 0
    assert table["total"][0] == "ok"
    wh = open_warehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    years = wh.query("SELECT DISTINCT academic_year FROM aptool.iready_diagnostic_results ORDER BY 1")
    assert years.get_column("academic_year").to_list() == [2025, 2026]


@pytest.fixture(scope="module")
def aeries_simulator():
    import datetime as dt

    from aptool_demo.district import build_district
    from aptool_demo.simulator import build_sim_district, start_simulator

    with start_simulator(build_sim_district(build_district(2025), through=dt.date(2025, 10, 17))) as sim:
        yield sim


def aeries_env(sim, tmp_path, cert: str | None = None) -> dict[str, str]:
    return clean_env(
        AERIES_BASE_URL=sim.base_url,
        AERIES_CERT=cert or sim.cert,
        APTOOL_SCHOOL_YEAR="2025",
        APTOOL_AS_OF_DATE="2025-10-17",
        APTOOL_DATABASE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}",
    )


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The closing table of `aptool run`: step → [status, rows, rejected, seconds]."""
    lines = stdout.split("\nSummary\n", 1)[1].splitlines()
    assert re.match(r"\s+step\s+status\s+rows\s+rejected\s+seconds$", lines[0]), lines[0]
    rows = {}
    for line in lines[1:]:
        m = re.match(r"\s+(.+?)\s+(ok|FAILED|skipped)\s+(\S+)\s+(\S+)\s+(\S+)$", line)
        if m:
            rows[m.group(1)] = list(m.groups()[1:])
    return rows


def test_run_only_aeries_pulls_and_computes_the_summary(aeries_simulator, tmp_path):
    proc = run(["run", "--only", "aeries"], tmp_path, aeries_env(aeries_simulator, tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ok] attendance 2025-07-01..2025-10-17" in proc.stdout
    assert "[ok] attendance summary" in proc.stdout
    # Per table rows of a multi-asset step, and the step's time.
    assert re.search(
        r"\[ok\] schools, students: schools \d+, students \d+ rows, "
        r"\d+ requests \(\d+\.\d s\)",
        proc.stdout,
    ), proc.stdout
    wh = open_warehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    summary = wh.query("SELECT count(*) AS n, max(as_of_date) AS d FROM aptool.student_attendance_summary")
    assert summary.item(0, "n") > 0 and str(summary.item(0, "d")) == "2025-10-17"

    table = summary_rows(proc.stdout)
    assert list(table) == [
        "schools, students",
        "absence codes, calendar, enrollment, programs, Aeries totals",
        "attendance 2025-07-01..2025-10-17",
        "attendance summary",
        "academic risk",
        "growth and projection",
        "intervention ranking",
        "dashboard preview",
        "total",
    ]
    assert all(status == "ok" for status, *_ in table.values()), table
    assert table["attendance summary"][1] == str(summary.item(0, "n"))  # the rows it published
    attendance_rows = wh.query("SELECT count(*) AS n FROM aptool.attendance_days").item()
    assert table["attendance 2025-07-01..2025-10-17"][1] == str(attendance_rows)
    assert float(table["total"][3]) >= max(float(r[3]) for k, r in table.items() if k != "total")

    # The Dashboard preview in CDE's layout, from the warehouse the run published.
    env = aeries_env(aeries_simulator, tmp_path)
    out = tmp_path / "preview.csv"
    exported = run(["export", "dashboard-preview", "--out", str(out)], tmp_path, env)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    preview = pl.read_csv(out, infer_schema=False)
    assert preview.columns[:3] == ["cds", "rtype", "studentgroup"] and set(preview.get_column("rtype")) == {"S", "D"}
    assert f"rows for 2025-2026 written to {out}" in exported.stderr
    stdout = run(["export", "dashboard-preview"], tmp_path, env)
    assert stdout.returncode == 0 and stdout.stdout == out.read_text()
    missing = run(["export", "dashboard-preview", "--year", "2019"], tmp_path, env)
    assert missing.returncode == 1 and "no chronic absenteeism indicator for 2019-2020" in missing.stderr


def test_run_with_a_wrong_certificate_fails_in_one_line_without_the_secret(aeries_simulator, tmp_path):
    wrong = "0" * 32
    proc = run(["run", "--only", "aeries"], tmp_path, aeries_env(aeries_simulator, tmp_path, cert=wrong))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "401" in lines[0], proc.stderr
    assert lines[0].startswith("aptool: error: schools, students: ") and "Fix: check AERIES_CERT" in lines[0]
    assert wrong not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    # The table says what ran, what failed and what was left alone.
    table = summary_rows(proc.stdout)
    assert table["schools, students"][0] == "FAILED"
    assert [table[k][0] for k in ("attendance summary", "academic risk", "intervention ranking")] == ["skipped"] * 3
    assert table["total"][0] == "FAILED"


def test_run_debug_shows_the_full_error_of_a_failed_step(aeries_simulator, tmp_path):
    wrong = "1" * 32
    proc = run(["run", "--only", "aeries", "--debug"], tmp_path, aeries_env(aeries_simulator, tmp_path, cert=wrong))
    assert proc.returncode == 1
    assert "full error" in proc.stderr and "AeriesAuthError" in proc.stderr
    assert re.search(r'File ".*client\.py", line \d+', proc.stderr), proc.stderr[-2000:]  # the stack
    assert proc.stderr.strip().splitlines()[-1].startswith("aptool: error: ")
    assert wrong not in proc.stdout + proc.stderr


def test_failure_fixes_and_summary_table():
    from aptool_assets.runner import DEFAULT_FIX, RunSummary, StepOutcome, fix_for

    assert "AERIES_CERT" in fix_for("aptool__schools failed: AeriesAuthError: GET /api/v5/schools: HTTP 401")
    assert "IREADY_SFTP_KNOWN_HOSTS" in fix_for("SFTPHostKeyError: host key for sftp.example.com is not in ...")
    assert "IREADY_SFTP_PASSWORD" in fix_for("SFTPAuthenticationError: Authentication failed for user x")
    assert "quarantine" in fix_for("iready/raw_diagnostic_files check file_accepted failed: stale file")
    assert "APTOOL_DATABASE_URL" in fix_for("IOException: Could not set lock on file wh.duckdb")
    assert fix_for("ZeroDivisionError: division by zero") == DEFAULT_FIX

    summary = RunSummary(
        2025,
        [
            StepOutcome(
                "iready_diagnostic_results",
                "2025 math",
                True,
                "ok",
                label="i-Ready 2025 math",
                seconds=1.25,
                rows=240,
                rejected=2,
            ),
            StepOutcome("attendance_days", "", False, "boom", label="attendance", seconds=0.5),
            StepOutcome(
                "student_academic_risk", "", False, "an earlier step failed", label="academic risk", skipped=True
            ),
        ],
    )
    assert [s.step for s in summary.failures] == ["attendance_days"]  # skipped is not a failure
    lines = summary.table().splitlines()
    assert re.match(r"\s+step\s+status\s+rows\s+rejected\s+seconds$", lines[0])
    assert re.match(r"\s+i-Ready 2025 math\s+ok\s+240\s+2\s+1\.2$", lines[1]), lines[1]
    assert re.match(r"\s+attendance\s+FAILED\s+–\s+–\s+0\.5$", lines[2]), lines[2]
    assert re.match(r"\s+academic risk\s+skipped\s+–\s+–\s+–$", lines[3]), lines[3]
    assert re.match(r"\s+total\s+FAILED\s+240\s+2\s+1\.8$", lines[4]), lines[4]


@pytest.mark.slow
@pytest.mark.parametrize("id_field", ["student_id", "student_number"])
def test_demo_runs_end_to_end_with_no_configuration(tmp_path, id_field):
    """The demo as is, and a second district that rosters i-Ready by StudentNumber (APTOOL_IREADY_ID_FIELD)."""
    home = tmp_path / "demo"
    args = ["demo", "--home", str(home), "--year", "2026", "--iready-id-field", id_field]
    proc = run(args, tmp_path, clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "academic risk 2026:" in proc.stdout
    assert f"keyed by {id_field}" in proc.stdout
    # The district's Dashboard preview: ALL and the groups, suppressed cells as *.
    preview = proc.stdout.split("Dashboard preview 2026-2027: chronic absenteeism, district", 1)[1]
    assert re.search(r"^\s+ALL\s+\d+\s+\d+\s+\d+\.\d%", preview, re.M), preview
    assert re.search(r"^\s+[A-Z]{2,3}\s+\d+\s+\*\s+\*", preview, re.M), preview
    wh = open_warehouse(f"duckdb:///{home / 'warehouse.duckdb'}")
    loaded = wh.query("SELECT count(*) AS n FROM aptool.iready_diagnostic_results").item()
    mapped = wh.query("SELECT count(student_id) AS n FROM aptool.iready_diagnostic_results").item()
    rejected = wh.query("SELECT count(*) AS n FROM aptool.iready_rejected_rows").item()
    cells = wh.query("SELECT count(*) AS n FROM aptool.iready_cell_problems").item()
    risk = wh.query("SELECT count(*) AS n FROM aptool.student_academic_risk WHERE school_year = 2026").item()
    with_results = wh.query(
        "SELECT count(*) AS n FROM aptool.student_academic_risk WHERE school_year = 2026 AND overall_risk <> 'UNKNOWN'"
    ).item()
    attendance = wh.query("SELECT count(*) AS n FROM aptool.attendance_days").item()
    summary = wh.query("SELECT count(*) AS n FROM aptool.student_attendance_summary WHERE school_year = 2026").item()
    assert loaded > 0 and rejected == 4 and risk > 0 and attendance > 0 and summary > 0
    # Every row maps to its Aeries student whichever ID the files carry; the repeated diagnostic with a
    # Percentile of 0 in each current-year file is one row with that cell reported.
    assert mapped == loaded and with_results > 0 and cells == 2
    unknown = wh.query("SELECT count(*) AS n FROM aptool.attendance_days WHERE absence_category = 'unknown_code'")
    assert unknown.item() == 0  # the district-only code is found in the district table
    # No student names reach the terminal: the demo's synthetic names are the canary.
    from aptool_demo.district import FIRST_NAMES, LAST_NAMES

    output = proc.stdout + proc.stderr
    assert not [n for n in FIRST_NAMES + LAST_NAMES if f" {n} " in output or f" {n}," in output]


def _dead_letter_inbox(path: Path, *event_ids: str) -> None:
    import datetime as dt

    from aptool_assets.storage.inbox import SqliteInbox

    with SqliteInbox(path) as inbox:
        inbox.setup()
        when = dt.datetime(2026, 11, 29, 16, tzinfo=dt.UTC)
        for event_id in event_ids:
            payload = {"eventId": event_id, "eventType": "grade.changed", "timestamp": when.isoformat(), "data": {}}
            inbox.store_dead_letter(event_id, "grade.changed", when, payload, b"{}", "unsupported event type")


def test_dead_letters_list_show_and_replay(tmp_path):
    inbox_path = tmp_path / "inbox.sqlite"
    _dead_letter_inbox(inbox_path, "evt-1", "evt-2", "evt-3")
    env = clean_env(APTOOL_INBOX_PATH=str(inbox_path))

    listed = run(["dead-letters", "list"], tmp_path, env)
    assert listed.returncode == 0 and "evt-1" in listed.stdout and "unsupported event type" in listed.stdout
    assert listed.stderr.splitlines()[0] == f"aptool: inbox sqlite {inbox_path}"  # which store it reads
    shown = run(["dead-letters", "show", "evt-1"], tmp_path, env)
    assert shown.returncode == 0 and "grade.changed" in shown.stdout
    assert json.loads(shown.stdout)["event_id"] == "evt-1"  # stdout stays machine-readable
    missing = run(["dead-letters", "show", "nope"], tmp_path, env)
    assert missing.returncode == 1 and "nope" in missing.stderr

    bare = run(["dead-letters", "replay"], tmp_path, env)
    assert bare.returncode == 1 and "--all" in bare.stderr
    both = run(["dead-letters", "replay", "evt-1", "--all"], tmp_path, env)
    assert both.returncode == 1
    dry = run(["dead-letters", "replay", "evt-1", "evt-2", "unknown", "--dry-run"], tmp_path, env)
    assert dry.returncode == 0 and "would requeue 2 event(s)" in dry.stdout and "evt-1, evt-2" in dry.stdout
    assert "nothing changed" in dry.stdout
    assert "evt-1" in run(["dead-letters", "list"], tmp_path, env).stdout  # still dead
    replayed = run(["dead-letters", "replay", "evt-1"], tmp_path, env)
    assert replayed.returncode == 0 and "requeued 1 event(s)" in replayed.stdout
    again = run(["dead-letters", "replay", "evt-1"], tmp_path, env)
    assert again.returncode == 0 and "requeued 0 event(s)" in again.stdout  # idempotent
    dry_all = run(["dead-letters", "replay", "--all", "--dry-run"], tmp_path, env)
    assert "would requeue 2 event(s) for the next apply run: evt-2, evt-3" in dry_all.stdout
    everything = run(["dead-letters", "replay", "--all"], tmp_path, env)
    assert (
        everything.returncode == 0 and "requeued 2 event(s) for the next apply run: evt-2, evt-3" in everything.stdout
    )
    assert "no dead letters" in run(["dead-letters", "list"], tmp_path, env).stdout


def test_dead_letters_refuse_to_create_a_missing_store(tmp_path):
    home = tmp_path / "wrong-home"
    for env in (clean_env(DAGSTER_HOME=str(home)), clean_env(APTOOL_INBOX_PATH=str(home / "inbox.sqlite"))):
        for args in (["list"], ["show", "x"], ["replay", "--all"], ["replay", "x", "--dry-run"]):
            proc = run(["dead-letters", *args], tmp_path, env)
            assert proc.returncode == 1, (args, proc.stdout)
            assert f"aptool: inbox sqlite {home / 'inbox.sqlite'}" in proc.stderr
            assert "no webhook inbox" in proc.stderr and "nothing created" in proc.stderr
    assert not home.exists()

    empty = tmp_path / "empty.sqlite"  # a file, but not an inbox: no tables are added to it
    sqlite3.connect(empty).close()
    proc = run(["dead-letters", "list"], tmp_path, clean_env(APTOOL_INBOX_PATH=str(empty)))
    assert proc.returncode == 1 and "no webhook inbox" in proc.stderr
    assert sqlite3.connect(empty).execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def test_dead_letters_on_postgresql_name_the_database_without_the_password(postgres_url, tmp_path):
    from aptool_assets.storage.inbox import open_inbox
    from aptool_assets_tests.conftest import schema_reset

    schema_reset(postgres_url)
    with_password = postgres_url.replace("://postgres@", "://postgres:hunter2-secret@")
    env = clean_env(APTOOL_DATABASE_URL=with_password)
    proc = run(["dead-letters", "list"], tmp_path, env)
    assert proc.returncode == 1 and "no webhook inbox" in proc.stderr
    assert "postgres:***@" in proc.stderr and "hunter2" not in proc.stdout + proc.stderr
    with psycopg.connect(postgres_url) as con:
        assert con.execute("SELECT to_regnamespace('aptool')").fetchone()[0] is None  # nothing created
    with open_inbox(postgres_url) as inbox:
        inbox.setup()
    proc = run(["dead-letters", "list"], tmp_path, env)
    assert proc.returncode == 0 and "no dead letters" in proc.stdout
    schema_reset(postgres_url)


def test_breakers_and_failed_operations_from_the_command_line(tmp_path):
    from aptool_assets.resilience.breaker import AERIES_BREAKER, CircuitBreaker
    from aptool_assets.storage.breakers import SqliteBreakerStore

    path = tmp_path / "breakers.sqlite"
    store = SqliteBreakerStore(path)
    CircuitBreaker(AERIES_BREAKER, store).open_for(1800, "HTTP 503 on all 5 attempts of GET /api/v5/schools")
    store.add_failed_operation(
        "aeries",
        "GET /api/v5/schools/101/students",
        "AeriesResponseError",
        "invalid JSON",
        {"endpoint": "/api/v5/schools/101/students"},
    )
    store.close()
    env = clean_env(APTOOL_BREAKER_PATH=str(path))

    listed = run(["breakers"], tmp_path, env)
    assert listed.returncode == 0 and "aeries circuit breaker open" in listed.stdout
    assert "iready circuit breaker closed" in listed.stdout
    assert run(["breakers", "reset"], tmp_path, env).returncode == 1  # names the service to close
    reset = run(["breakers", "reset", "aeries"], tmp_path, env)
    assert reset.returncode == 0 and "aeries circuit breaker closed" in reset.stdout
    assert "aeries circuit breaker closed" in run(["breakers", "list"], tmp_path, env).stdout

    failed = run(["failed-operations"], tmp_path, env)
    assert failed.returncode == 0 and "GET /api/v5/schools/101/students" in failed.stdout
    resolved = run(["failed-operations", "resolve"], tmp_path, env)
    assert resolved.returncode == 0 and "marked 1 failed operation(s) resolved" in resolved.stdout
    assert "no failed operations pending" in run(["failed-operations", "list"], tmp_path, env).stdout
    assert "resolved" in run(["failed-operations", "list", "--all"], tmp_path, env).stdout
