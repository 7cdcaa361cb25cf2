"""Shared fixtures: the warehouse on both backends, PostgreSQL (the machine's, else a private one:
private_postgres), the real sshd (sftp_fixtures); closed sensor and schedule evaluations."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
import pytest

from aptool_assets.storage.warehouse import Warehouse, open_warehouse
from aptool_assets_tests import private_postgres

pytest_plugins = ["aptool_assets_tests.sftp_fixtures"]


def postgres_admin_url() -> str:
    """The admin URL of the session's PostgreSQL: the machine's at ``APTOOL_TEST_POSTGRES_URL`` when one answers
    there, else a private server started for the session (private_postgres). Every test that needs PostgreSQL
    goes through this (or the fixtures below), never through the variable."""
    try:
        return private_postgres.admin_url()
    except RuntimeError as exc:
        reason = str(exc)
    pytest.fail(reason, pytrace=False)


def pytest_collection_finish(session: pytest.Session) -> None:
    """When a selected test needs PostgreSQL, settle which server before the first test runs, and say so in
    one line when it is a private one (``make test-fast`` never gets here: it deselects them)."""
    if session.config.option.collectonly or not any(i.get_closest_marker("postgres") for i in session.items):
        return
    with contextlib.suppress(RuntimeError):  # each test that needs it fails with the reason
        private_postgres.admin_url()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = private_postgres.session_note() or private_postgres.session_error()
    if reporter is not None and line:
        reporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    stopped = private_postgres.stop_session_server()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and stopped:
        reporter.write_line("")
        reporter.write_line(stopped)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the session's PostgreSQL, dropped at the end of the session."""
    postgres_admin_url()
    with throwaway_database("aptool_test") as url:
        yield url


def create_database(prefix: str) -> str:
    """A new empty database ``<prefix>_<random>`` on the session's PostgreSQL; its URL."""
    admin = postgres_admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return f"{admin.rsplit('/', 1)[0]}/{name}"


def drop_database(url: str) -> None:
    """Drop the database of ``url`` (made by :func:`create_database`), closing its sessions."""
    with psycopg.connect(postgres_admin_url(), autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


@contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """A database of its own for a test or a module, dropped afterwards."""
    url = create_database(prefix)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(autouse=True)
def _own_breaker_store(tmp_path_factory, monkeypatch):
    """Circuit-breaker state is shared across processes by design; each test gets its own SQLite store
    (outside tmp_path, which tests use as a landing directory)."""
    monkeypatch.setenv("APTOOL_BREAKER_PATH", str(tmp_path_factory.mktemp("breakers") / "breakers.sqlite"))


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request, tmp_path) -> Iterator[str]:
    """The same test runs against the embedded DuckDB file and the real PostgreSQL."""
    if request.param == "duckdb":
        yield f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
        return
    base_url = request.getfixturevalue("postgres_url")
    schema_reset(base_url)
    yield base_url
    schema_reset(base_url)


def schema_reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("DROP SCHEMA IF EXISTS aptool CASCADE")


@pytest.fixture
def warehouse(warehouse_url) -> Warehouse:
    return open_warehouse(warehouse_url)


def pytest_collection_modifyitems(items):
    """Mark tests by the real services they use, so `make test-fast` can leave them out."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "sftp_server" in fixtures or "sftp_test_dir" in fixtures or "iready_env" in fixtures:
            item.add_marker(pytest.mark.sftp)
        if "postgres_url" in fixtures:
            item.add_marker(pytest.mark.postgres)


def evaluate_schedule(schedule: dg.ScheduleDefinition, **context_args):
    """``schedule`` evaluated once on ``dg.build_schedule_context(**context_args)``, the context closed afterwards.

    A schedule context keeps only the instance's ref; when the schedule or its resources need the instance,
    the context makes a DagsterInstance of its own from the ref and enters it on the context's exit stack,
    which only ``with`` closes. Entering an instance points Dagster's process-wide defs-state ContextVar at
    that instance's storage (the test's instance's storage is what it restores on exit). Left open, a context
    with resources is in a reference cycle with that instance, so only the garbage collector finalizes it,
    after the test's instance has exited: the restore then brings back the storage of a closed instance, and
    the next Definitions load fails with "Attempted to resolve undefined DagsterInstance weakref".
    """
    with dg.build_schedule_context(**context_args) as context:
        return schedule(context)


def evaluate_sensor(sensor: dg.SensorDefinition, **context_args):
    """``sensor`` evaluated once on ``dg.build_sensor_context(**context_args)``, the context closed afterwards:
    its resources (and, built from an ``instance_ref``, its own DagsterInstance; see :func:`evaluate_schedule`)
    are torn down before the test goes on."""
    with dg.build_sensor_context(**context_args) as context:
        return sensor(context)


def with_default_resources(**given):
    """Every resource the definitions need: the ones a test configures, the rest unconfigured."""
    from aptool_assets.events.resources import WebhookInboxResource
    from aptool_assets.resources import PlatformResource
    from aptool_assets.sources.aeries.client import AeriesResource
    from aptool_assets.sources.iready.resources import IReadySFTPResource

    defaults = {
        "iready_sftp": IReadySFTPResource(),
        "aeries": AeriesResource(),
        "platform": PlatformResource(),
        "inbox": WebhookInboxResource(),
    }
    return {**defaults, **given}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path, monkeypatch):
    """The AP Tool database URL a deployment would configure; the webhook inbox follows it
    (PostgreSQL, or the embedded SQLite inbox beside a DuckDB warehouse)."""
    monkeypatch.delenv("APTOOL_DATABASE_URL", raising=False)
    if request.param == "sqlite":
        monkeypatch.setenv("APTOOL_INBOX_PATH", str(tmp_path / "inbox.sqlite"))
        yield f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
        return
    url = request.getfixturevalue("postgres_url")
    schema_reset(url)
    yield url
    schema_reset(url)


@pytest.fixture
def inbox(store_url):
    from aptool_assets.storage.inbox import open_inbox

    box = open_inbox(store_url)
    box.setup()
    yield box
    box.close()
