"""Which backend a database URL means, decided in one place.

The warehouse, the webhook inbox and the circuit-breaker store each live in PostgreSQL or in an
embedded local file, and all three follow the platform database, ``APTOOL_DATABASE_URL``:

* ``postgresql://…`` (or ``postgres://…``): everything in that PostgreSQL database;
* ``duckdb:///path/file.duckdb``: the warehouse in that DuckDB file, the inbox and the breakers in
  SQLite files (:func:`default_inbox_path`, :func:`default_breaker_path`);
* unset (or empty): the embedded default, DuckDB at :func:`default_database_url` plus the SQLite files.

Any other scheme is refused with :class:`UnsupportedDatabaseURL`. The openers
(``open_warehouse``, ``open_inbox``, ``open_breaker_store``) and the Dagster executor choice all ask
:func:`database_target` / :func:`uses_postgres`, so the three stores never disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from aptool_assets.settings import aptool_home

DATABASE_URL_ENV = "APTOOL_DATABASE_URL"
INBOX_PATH_ENV = "APTOOL_INBOX_PATH"
BREAKER_PATH_ENV = "APTOOL_BREAKER_PATH"
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
DUCKDB_SCHEME = "duckdb"

Kind = Literal["postgres", "duckdb", "embedded"]


class UnsupportedDatabaseURL(ValueError):
    """The database URL has a scheme no backend implements."""

    def __init__(self, scheme: str):
        super().__init__(
            f"unsupported database URL scheme {scheme!r}: "
            f"{DATABASE_URL_ENV} must start with postgresql:// or duckdb:///"
        )
        self.scheme = scheme


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].lower()


@dataclass(frozen=True)
class DatabaseTarget:
    """Where the platform's data lives: ``kind`` and, unless embedded, the URL it came from."""

    kind: Kind
    url: str | None = None

    @property
    def postgres_url(self) -> str | None:
        """The PostgreSQL URL, or None when the platform runs embedded (DuckDB or nothing set)."""
        return self.url if self.kind == "postgres" else None

    @property
    def duckdb_path(self) -> str:
        """The DuckDB warehouse file: the URL's path, or the default file when nothing is set."""
        if self.kind == "postgres":
            raise ValueError("a PostgreSQL database has no DuckDB file")
        url = self.url if self.kind == "duckdb" else default_database_url()
        assert url is not None
        # duckdb:///abs/path.duckdb → /abs/path.duckdb ; duckdb://rel/path.duckdb → rel/path.duckdb
        return url[len("duckdb://") :]


def configured_database_url(database_url: str | None = None) -> str | None:
    """``database_url``, else ``APTOOL_DATABASE_URL`` (only when ``database_url`` is None); an empty
    value counts as unset."""
    return (database_url if database_url is not None else os.environ.get(DATABASE_URL_ENV)) or None


def database_target(database_url: str | None = None) -> DatabaseTarget:
    """The backend ``database_url`` means (``None``: ``APTOOL_DATABASE_URL``; empty: embedded).

    Raises :class:`UnsupportedDatabaseURL` for a scheme other than postgresql/postgres/duckdb.
    """
    url = configured_database_url(database_url)
    if url is None:
        return DatabaseTarget("embedded")
    scheme = _scheme(url)
    if scheme in POSTGRES_SCHEMES:
        return DatabaseTarget("postgres", url)
    if scheme == DUCKDB_SCHEME:
        return DatabaseTarget("duckdb", url)
    raise UnsupportedDatabaseURL(scheme)


def uses_postgres(database_url: str | None = None) -> bool:
    """Whether the platform database is PostgreSQL (never raises: an unsupported scheme is ``False``,
    and fails later, where a store is opened)."""
    url = configured_database_url(database_url)
    return url is not None and _scheme(url) in POSTGRES_SCHEMES


def redact_url(url: str) -> str:
    """The URL without its password, safe for logs and metadata."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def default_database_url() -> str:
    """The embedded warehouse: ``duckdb:///$DAGSTER_HOME/warehouse.duckdb`` (``.aptool/`` without DAGSTER_HOME)."""
    return f"duckdb:///{aptool_home() / 'warehouse.duckdb'}"


def default_inbox_path() -> Path:
    """``APTOOL_INBOX_PATH``, else ``$DAGSTER_HOME/inbox.sqlite`` (``.aptool/inbox.sqlite``)."""
    override = os.environ.get(INBOX_PATH_ENV)
    return Path(override) if override else aptool_home() / "inbox.sqlite"


def default_breaker_path() -> Path:
    """``APTOOL_BREAKER_PATH``, else ``$DAGSTER_HOME/breakers.sqlite`` (``.aptool/breakers.sqlite``)."""
    override = os.environ.get(BREAKER_PATH_ENV)
    return Path(override) if override else aptool_home() / "breakers.sqlite"
