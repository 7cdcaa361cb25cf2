"""End to end (issue #12 §6): a real PostgreSQL login role whose password is ``p#ss?w%rd with space``;
``aptool run`` as a subprocess with that role's URL in every form libpq takes and with malformed ones;
``aptool webhooks serve``, ``dead-letters`` and ``breakers`` likewise; the Dagster event log (everything
under DAGSTER_HOME) of the runs, a failed materialization included; the failure alert built from it and
posted to a local HTTP server. The password, in any spelling, appears in none of them."""

from __future__ import annotations

import contextlib
import queue
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from aptool_assets.alerts.reports import failure_alert
from aptool_assets.alerts.slack import AlertResource
from aptool_assets.storage.inbox import open_inbox
from aptool_assets_tests.conftest import postgres_admin_url
from aptool_assets_tests.iready_helpers import write_file
from aptool_assets_tests.test_cli import APTOOL, aeries_env, aeries_simulator, clean_env, run  # noqa: F401 - a fixture
from aptool_assets_tests.test_redaction import ENC, PW, alert_server, spellings  # noqa: F401 - a fixture

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
SECRET = "0123456789abcdef" * 3  # the webhook secret: never printed either


@pytest.fixture(scope="module")
def role_db() -> Iterator[tuple[str, str]]:
    """A login role whose password is ``PW`` and a throwaway database it owns; both dropped afterwards."""
    admin = postgres_admin_url()
    role = db = f"aptool_redact_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(PW)))
        con.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(role)))
    try:
        yield role, db
    finally:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            con.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def server() -> tuple[str, int]:
    """Host and port of the session's PostgreSQL (the machine's, or the private one started for the session)."""
    params = conninfo_to_dict(postgres_admin_url())
    return params.get("host") or "127.0.0.1", int(params.get("port") or 5432)


def good_url(form: str, role: str, db: str) -> str:
    host, port = server()
    return {
        "userinfo": f"postgresql://{role}:{ENC}@{host}:{port}/{db}",
        "query": f"postgres://{role}@{host}:{port}/{db}?password={ENC}",
        "query after another": f"postgresql://{host}:{port}/{db}?user={role}&password={ENC}&connect_timeout=10",
        "keyword": f"host={host} port={port} dbname={db} user={role} password='{PW}'",
    }[form]


def malformed_url(form: str, role: str, db: str) -> str:
    host, port = server()
    return {
        "raw password": f"postgresql://{role}:{PW}@{host}:{port}/{db}",
        "raw in the query": f"postgresql://{role}@{host}:{port}/{db}?password={PW}",
        "keyword, unquoted": f"host={host} port={port} dbname={db} user={role} password={PW}",
    }[form]


def assert_nowhere(text: str, *extra: str) -> None:
    for spelling in spellings(PW) | set(extra):
        assert spelling not in text, f"{spelling!r} leaked: ...{text[max(0, text.find(spelling) - 300) :][:600]}"


def dagster_home_bytes(home: Path) -> bytes:
    """Everything Dagster stored: the run and event-log databases (and their WAL files), compute logs."""
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def assert_dagster_home_clean(home: Path, expected: bytes) -> None:
    stored = dagster_home_bytes(home)
    assert expected in stored, f"{expected!r} not found: the scan would not see the event log"
    for spelling in spellings(PW):
        assert spelling.encode() not in stored, f"{spelling!r} stored under {home}"


def dagster_home(tmp_path: Path) -> str:
    """A DAGSTER_HOME of the test's own (telemetry off: its banner is no part of the command's output)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return str(home)


def iready_env(sftp_server, sftp_test_dir: Path, tmp_path: Path, url: str) -> dict[str, str]:
    write_file(sftp_test_dir, "2025", "diagnostic_results_math_CONFIDENTIAL.csv", 2025, "math")
    return clean_env(
        **{**sftp_server.env(), "IREADY_SFTP_REMOTE_DIR": sftp_server.remote_path(sftp_test_dir)},
        APTOOL_DATABASE_URL=url,
        APTOOL_LANDING_DIR=str(tmp_path / "landing"),
        DAGSTER_HOME=dagster_home(tmp_path),
    )


@pytest.mark.sftp
@pytest.mark.parametrize(
    ("form", "debug"), [("userinfo", True), ("query", False), ("query after another", False), ("keyword", True)]
)
def test_aptool_run_with_each_url_form_works_and_never_shows_the_password(
    form, debug, role_db, sftp_server, sftp_test_dir, tmp_path
):
    role, db = role_db
    env = iready_env(sftp_server, sftp_test_dir, tmp_path, good_url(form, role, db))
    proc = run([*(["--debug"] if debug else []), "run", "--only", "iready", "--year", "2025"], tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sftp_password = [env["IREADY_SFTP_PASSWORD"]] if "IREADY_SFTP_PASSWORD" in env else []
    assert_nowhere(proc.stdout + proc.stderr, *sftp_password)
    if debug:  # Dagster's own log was on the terminal too
        assert "STEP_SUCCESS" in proc.stderr + proc.stdout
    assert_dagster_home_clean(tmp_path / "home", b"dagster/row_count")  # materializations were stored
    with psycopg.connect(good_url("userinfo", role, db)) as con:  # the role connected and published
        owner, rows = con.execute(
            "SELECT tableowner, (SELECT count(*) FROM aptool.iready_diagnostic_results) "
            "FROM pg_tables WHERE schemaname = 'aptool' AND tablename = 'iready_diagnostic_results'"
        ).fetchone()
    assert owner == role and rows > 0


def test_a_failed_materialization_leaves_no_password_in_the_terminal_event_log_or_alert(
    role_db, aeries_simulator, alert_server, tmp_path
):
    """The step fails on the malformed URL (at once: a configuration error is not retried); the one line,
    the event log and the failure alert built from it carry libpq's complaint, not the password."""
    hook, bodies = alert_server
    env = {**aeries_env(aeries_simulator, tmp_path), "DAGSTER_HOME": dagster_home(tmp_path)}
    env["APTOOL_DATABASE_URL"] = malformed_url("raw password", *role_db)
    started = time.monotonic()
    proc = run(["run", "--only", "aeries"], tmp_path, env)
    assert time.monotonic() - started < 240  # no step retries (each would wait 60 s and more)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert "APTOOL_DATABASE_URL is not a valid PostgreSQL connection string" in lines[0]
    assert "[FAILED] schools, students" in proc.stdout
    assert_nowhere(proc.stdout + proc.stderr)

    home = tmp_path / "home"
    assert_dagster_home_clean(home, b"InvalidDatabaseURL")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        (failed,) = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.FAILURE]
        failures = instance.get_records_for_run(failed.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
        assert failures
        for record in failures:
            error = record.event_log_entry.dagster_event.event_specific_data.error
            assert "APTOOL_DATABASE_URL" in error.to_string()
            assert_nowhere(error.to_string())
        assert AlertResource(webhook_url=hook).send(failure_alert(instance, failed))
    finally:
        instance.dispose()
    posted = bodies[0].decode()
    assert "Run failed" in posted and "APTOOL_DATABASE_URL is not a valid" in posted  # the reason is quoted
    assert_nowhere(posted)


def test_debug_shows_the_full_error_scrubbed(role_db, aeries_simulator, tmp_path):
    env = {**aeries_env(aeries_simulator, tmp_path), "APTOOL_DATABASE_URL": malformed_url("raw password", *role_db)}
    proc = run(["run", "--only", "aeries", "--debug"], tmp_path, env)
    assert proc.returncode == 1
    assert "full error" in proc.stderr and 'File "' in proc.stderr and "InvalidDatabaseURL" in proc.stderr
    assert "STEP_FAILURE" in proc.stdout + proc.stderr  # Dagster's log, with the step's error, was shown
    assert_nowhere(proc.stdout + proc.stderr)


@pytest.mark.sftp
@pytest.mark.parametrize("form", ["raw password", "raw in the query", "keyword, unquoted"])
def test_aptool_run_with_a_malformed_url_fails_in_one_clean_line(form, role_db, sftp_server, sftp_test_dir, tmp_path):
    env = iready_env(sftp_server, sftp_test_dir, tmp_path, malformed_url(form, *role_db))
    proc = run(["run", "--only", "iready", "--year", "2025"], tmp_path, env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aptool: error: APTOOL_DATABASE_URL is not a valid"), proc.stderr
    assert_nowhere(proc.stdout + proc.stderr)


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("command", [["webhooks", "serve"], ["dead-letters", "list"], ["breakers"]])
def test_the_other_commands_refuse_a_malformed_url_in_one_clean_line(command, debug, role_db, tmp_path):
    env = clean_env(APTOOL_DATABASE_URL=malformed_url("raw password", *role_db), APTOOL_WEBHOOK_SECRET=SECRET)
    port = ["--port", str(free_port())] if "serve" in command else []
    proc = run([*(["--debug"] if debug else []), *command, *port], tmp_path, env, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("aptool: error: APTOOL_DATABASE_URL is not a valid")
    assert_nowhere(proc.stdout + proc.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("form", ["query after another", "keyword"])
def test_the_receiver_names_its_inbox_without_the_password(form, role_db, tmp_path):
    role, db = role_db
    env = clean_env(APTOOL_DATABASE_URL=good_url(form, role, db), APTOOL_WEBHOOK_SECRET=SECRET)
    proc = subprocess.Popen(
        [*APTOOL, "webhooks", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("Application startup complete" in line for line in seen):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=0.2))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    output = "".join(seen)
    (startup,) = [line for line in seen if "webhook receiver on" in line]
    assert f"inbox: postgres {form_shown(form, role, db)} (aptool.webhook_events)" in startup
    assert_nowhere(output, SECRET)


def form_shown(form: str, role: str, db: str) -> str:
    host, port = server()
    return {
        "query after another": f"postgresql://{host}:{port}/{db}?user={role}&password=***&connect_timeout=10",
        "keyword": f"host={host} port={port} dbname={db} user={role} password=***",
    }[form]


def test_dead_letters_with_a_good_url_never_shows_the_password(role_db, tmp_path):
    url = good_url("userinfo", *role_db)
    with contextlib.closing(open_inbox(url)) as inbox:  # the inbox the receiver made (dead-letters never creates one)
        inbox.setup()
    env = clean_env(APTOOL_DATABASE_URL=url)
    proc = run(["--debug", "dead-letters", "list"], tmp_path, env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert_nowhere(proc.stdout + proc.stderr)
